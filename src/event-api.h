/* SPDX-License-Identifier: MIT */
#pragma once

/* The event API's HTTP handlers: publish, history, stream. They validate
 * what the client sent and hand the work to the publisher (writes), the
 * read connection (history) or the fanout (streams). */

#include "auth-jwt.h"
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

/* Who may do what (event-auth.h): the configuration's part. */
typedef struct EventAuth {
        const char *api_token;          /* "": none */
        const JwtKeys *jwt_keys;        /* NULL or without keys: no JWT */
        bool anonymous_subscribe;
} EventAuth;

/* POST /api/v1/topics/{topic}/events, at its headers: refuses a bad topic
 * (400), a missing or invalid token (401), a token that does not cover the
 * topic (403) and a body that is not JSON (415) before the body is read. */
void event_api_admit_publish(const EventAuth *auth, HttpRequest *req);

/* ... and with its body, once admitted. max_event_bytes bounds the event
 * as stored. */
void event_api_handle_publish(Publisher *publisher, uint64_t max_event_bytes, HttpRequest *req);

/* GET /api/v1/topics/{topic}/events?after=ID&limit=N */
void event_api_handle_history(const EventAuth *auth, Db *read_db, usec_t query_timeout_usec, HttpRequest *req);

/* GET /api/v1/topics/{topic}/stream (Last-Event-ID or ?lastEventId=) */
void event_api_handle_stream(const EventAuth *auth, Fanout *fanout, HttpRequest *req);

/* "Bearer TOKEN" against the configured token, in constant time. */
bool event_api_authorized(const char *authorization, const char *api_token);

/* An Idempotency-Key header: absent (NULL), or 1 to IDEMPOTENCY_KEY_MAX
 * printable ASCII characters (space included). Pure. */
bool idempotency_key_valid(const char *key);

/* application/json, with parameters or not, any case. */
bool events_content_type_json(const char *content_type);
