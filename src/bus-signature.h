/* SPDX-License-Identifier: MIT */
#pragma once

/* Signatures of bus messages: HMAC-SHA256 (OpenSSL's libcrypto) over the
 * topic and the message, with NATS__SIGNING_KEY, shared by every instance.
 *
 * Anyone allowed to publish on <prefix>.events.* could otherwise inject an
 * event that every subscriber receives, or shadow a real one (the real
 * event with that id would be dropped as a duplicate). A receiver delivers
 * what the bus carries only when its signature verifies; any other message
 * is at most a hint that the topic has new ids, which it reads back from
 * PostgreSQL (see event-order.h: the store, not the hint, says what
 * exists). Thread-safe: messages are verified on nats.c's threads. */

#include <stdbool.h>
#include <stddef.h>

/* The NATS header that carries the signature, and its value's form:
 * "v1=" and 64 lowercase hex digits. */
#define BUS_SIGNATURE_HEADER "Baton-Signature"
#define BUS_SIGNATURE_MAX (3 + 64 + 1)

/* Writes the signature of (topic, data) into out. 0, or -EIO when
 * libcrypto fails. */
int bus_signature(const char *key, size_t key_size, const char *topic, const char *data, size_t size,
                  char out[static BUS_SIGNATURE_MAX]);

/* True when 'signature' (NULL when absent) is the signature of (topic,
 * data) under key; compared in constant time. */
bool bus_signature_valid(const char *key, size_t key_size, const char *topic, const char *data, size_t size,
                         const char *signature);
