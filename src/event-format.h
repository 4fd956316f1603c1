/* SPDX-License-Identifier: MIT */
#pragma once

/* How an event looks on the wire. One envelope serves the history API, the
 * SSE data line and the NATS message, so an event replayed from PostgreSQL
 * is byte for byte the event delivered live:
 *
 *   {"id":42,"topic":"orders","ts":"2026-11-21T10:00:00.123456Z","data":<payload>}
 *
 * <payload> is the published JSON as sent, without its whitespace. Pure functions
 * (fuzzed: tests/fuzz/fuzz-event.c). */

#include "sse-frame.h"
#include "util.h"

#define TOPIC_NAME_MAX 128

/* 1 to 128 of [A-Za-z0-9_-]: a topic can never reach another NATS subject
 * (no '.', '*', '>') or need escaping in JSON, SQL literals or logs. */
bool topic_name_valid(const char *s, size_t length);

/* Writes the envelope into a new string (*ret_size without the NUL). */
int event_envelope(uint64_t id, const char *topic, const char *ts, const char *payload,
                   size_t payload_size, char **ret, size_t *ret_size);

/* A published body as it is stored and delivered: any JSON value (duplicate
 * keys, invalid UTF-8 and \u0000 refused, numbers of any size and
 * precision accepted), kept byte for byte as sent except for the
 * whitespace outside strings, which is dropped; at most max_bytes of that.
 * 0 and that text (NUL-ended; *ret_size without the NUL); -EINVAL when the
 * body is empty or not JSON, -EFBIG when it is over the limit, both with
 * the sentence for the client in 'error'; -ENOMEM. */
int event_payload_compact(const char *body, size_t size, uint64_t max_bytes, char **ret,
                          size_t *ret_size, char *error, size_t error_size);

/* The SSE frame of an envelope: "id: ID\nevent: message\ndata: ENVELOPE\n\n".
 * "message" is the type EventSource delivers to onmessage. */
Frame *event_frame(uint64_t id, const char *envelope);

/* Checks that a message received on the bus is an envelope of 'topic' and
 * returns its id. -EBADMSG for anything else: the bus is not trusted to
 * carry only what batond sent. */
int event_envelope_parse(const char *data, size_t size, const char *topic, uint64_t *ret_id);

/* What goes on the bus instead of an event too large for it (over the
 * server's max_payload): {"id":42,"topic":"orders","hint":true}. Receivers
 * read the event from PostgreSQL. Not an envelope (no "ts"), so an
 * instance that predates hints ignores it and catches up at its next
 * resync. Returns the length written (always fits EVENT_HINT_MAX). */
#define EVENT_HINT_MAX (64 + TOPIC_NAME_MAX)
size_t event_hint(uint64_t id, const char *topic, char buf[static EVENT_HINT_MAX]);
/* 0 and the id when data is a hint for 'topic'; -EBADMSG otherwise. */
int event_hint_parse(const char *data, size_t size, const char *topic, uint64_t *ret_id);
