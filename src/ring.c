/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"

int ring_grow(void **items, size_t elem_size, size_t *head, size_t count, size_t *capacity,
              size_t first_capacity) {
        size_t n = *capacity ? *capacity * 2 : first_capacity;
        unsigned char *old = *items, *grown;

        assert(items && head && capacity && elem_size > 0 && first_capacity > 0);
        assert(count <= *capacity && (*capacity == 0 || *head < *capacity));

        if (n < *capacity || n > SIZE_MAX / elem_size)
                return -ENOMEM;
        grown = calloc(n, elem_size);
        if (!grown)
                return -ENOMEM;
        for (size_t i = 0; i < count; i++)
                memcpy(grown + i * elem_size, old + ((*head + i) % *capacity) * elem_size, elem_size);
        free(old);
        *items = grown;
        *head = 0;
        *capacity = n;
        return 0;
}
