/* SPDX-License-Identifier: MIT */
#pragma once

/* Growing a ring buffer (a FIFO in an array that wraps around): the
 * frames queued for a stream, the events ready for a channel's
 * subscribers. Each keeps its own typed array and indices,
 *
 *     T *items; size_t head, count, capacity;
 *
 * element i (from the oldest) is items[(head + i) % capacity], and
 * before it adds one it calls ring_grow() when the ring is full. */

#include <stddef.h>

/* Doubles the ring (to first_capacity when it has none) into a new array
 * that starts at index 0, and frees the old one. *items must point at the
 * array of elem_size-byte elements. -ENOMEM leaves the ring as it was. */
int ring_grow(void **items, size_t elem_size, size_t *head, size_t count, size_t *capacity,
              size_t first_capacity);
