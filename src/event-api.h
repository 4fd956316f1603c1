/* SPDX-License-Identifier: MIT */
#pragma once

/* The event API's HTTP handlers: publish, history, stream. They validate
 * what the client sent and hand the work to the publisher (writes), the
 * read connection (history) or the fanout (streams). */

#include "db.h"
#include "event-fanout.h"
#include "http-response.h"
#include "event-publisher.h"

#define HISTORY_LIMIT_DEFAULT 100
#define HISTORY_LIMIT_MAX 1000
/* Payload bytes per history page (at least one event is returned). */
#define HISTORY_BYTES_MAX 1048576
/* History requests being served at once, from the query to the last byte
 * sent: each may hold a page twice (the database's rows, the JSON). More
 * get 503 overloaded with Retry-After, so that slow readers of big pages
 * cannot pile up memory. */
#define HISTORY_CONCURRENT_MAX 32

/* POST /api/v1/topics/{topic}/events, at its headers: refuses a missing or
 * wrong token (401), a bad topic (400) and a body that is not JSON (415)
 * before the body is read. api_token "" means open publishing. */
void event_api_admit_publish(const char *api_token, HttpRequest *req);

/* ... and with its body, once admitted. max_event_bytes bounds the event
 * as stored. */
void event_api_handle_publish(Publisher *publisher, uint64_t max_event_bytes, HttpRequest *req);

/* GET /api/v1/topics/{topic}/events?after=ID&limit=N */
void event_api_handle_history(Db *read_db, usec_t query_timeout_usec, HttpRequest *req);

/* GET /api/v1/topics/{topic}/stream (Last-Event-ID or ?lastEventId=) */
void event_api_handle_stream(Fanout *fanout, HttpRequest *req);

/* "Bearer TOKEN" against the configured token, in constant time. */
bool event_api_authorized(const char *authorization, const char *api_token);

/* An Idempotency-Key header: absent (NULL), or 1 to IDEMPOTENCY_KEY_MAX
 * printable ASCII characters (space included). Pure. */
bool idempotency_key_valid(const char *key);

/* application/json, with parameters or not, any case. */
bool events_content_type_json(const char *content_type);
