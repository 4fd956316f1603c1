/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <strings.h>

#include "event-api.h"
#include "event-auth.h"
#include "event-format.h"
#include "event-order.h"
#include "event-store.h"
#include "log.h"
#include "parse-util.h"

bool event_api_authorized(const char *authorization, const char *api_token) {
        assert(api_token);              /* authorization: NULL without the header */

        if (isempty(api_token))
                return true;
        if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
                return false;
        return streq_constant_time(authorization + 7, api_token);
}

bool idempotency_key_valid(const char *key) {
        size_t n;

        if (!key)
                return true;            /* none: an ordinary publish */
        n = strlen(key);
        if (n < 1 || n > IDEMPOTENCY_KEY_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (key[i] < 0x20 || key[i] > 0x7e)
                        return false;
        return true;
}

bool events_content_type_json(const char *content_type) {
        size_t n = strlen("application/json");

        if (!content_type || strncasecmp(content_type, "application/json", n) != 0)
                return false;
        return content_type[n] == '\0' || content_type[n] == ';' || content_type[n] == ' ';
}

/* Copies the {topic} parameter; answers 400 and returns false when invalid. */
static bool topic_param(HttpRequest *req, char topic[TOPIC_NAME_MAX + 1]) {
        const RouteParam *p = http_request_param(req, 0);

        if (!p || !topic_name_valid(p->value, p->length)) {
                http_respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_topic",
                                   "topic names are 1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'");
                return false;
        }
        memcpy(topic, p->value, p->length);
        topic[p->length] = '\0';
        return true;
}

/* --- publish --- */

typedef struct PublishRequest {
        HttpRequest *req;
        PublishTicket *ticket;
} PublishRequest;

static void on_published(const PublishResult *r, void *userdata) {
        PublishRequest *p = userdata;
        char *body;
        int n;

        p->ticket = NULL;
        if (r->conflict) {
                http_respond_error(p->req, MHD_HTTP_UNPROCESSABLE_CONTENT, "idempotency_key_reused",
                                   "this Idempotency-Key was used within IDEMPOTENCY_TTL for another event "
                                   "(another topic or body); nothing was stored");
                return;
        }
        if (r->error) {
                /* Never a 201 for an event that may not be stored, and
                 * never a plain "not stored" for one that may be. */
                http_respond_error(p->req, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "%s%s", r->error,
                                   r->outcome_unknown
                                   ? "; the event may have been stored (the database got it and did "
                                     "not answer): read the topic's history before publishing it again"
                                   : "");
                return;
        }
        /* Formatted directly (topic and ts need no escaping): the event is
         * committed, and a failing JSON library must not turn that into a
         * 500 that invites a duplicate. */
        n = asprintf(&body, "{\"id\":%" PRIu64 ",\"topic\":\"%s\",\"ts\":\"%s\"}\n", r->id,
                     r->topic, r->ts);
        if (n < 0) {
                http_respond_json(p->req, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
                return;
        }
        http_respond_json_text(p->req, MHD_HTTP_CREATED, body, (size_t) n);
        /* Stripe's name for "this is the first answer, again". */
        if (r->repeated)
                http_request_add_response_header(p->req, "Idempotent-Replayed", "true");
}

static void on_publish_request_end(HttpRequest *req, void *userdata) {
        PublishRequest *p = userdata;

        if (p->ticket)
                publisher_cancel(p->ticket);
        free(p);
}

/* --- authorization --- */

/* Gathers the facts of event-auth.h for this request and answers 401 or
 * 403 when the verdict is not "allow". The token is never logged. */
static bool authorize(HttpRequest *req, const EventAuth *auth, JwtAction action, const char *topic) {
        const char *what = action == JWT_PUBLISH ? "publish to" : "read";
        _cleanup_(json_decrefp) json_t *claims = NULL;
        _cleanup_free_ char *token = NULL;
        AuthFacts facts = {
                .jwt_on = jwt_keys_any(auth->jwt_keys),
                .anonymous_subscribe = auth->anonymous_subscribe,
                .api_token_set = !isempty(auth->api_token),
        };
        const char *found;
        size_t size = 0;

        found = auth_token_from(http_request_header(req, MHD_HTTP_HEADER_AUTHORIZATION),
                                http_request_header(req, MHD_HTTP_HEADER_COOKIE),
                                http_request_query(req, "access_token"), &size);
        if (found && size <= JWT_TOKEN_MAX) {
                token = strndup(found, size);
                if (!token) {
                        http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                        return false;
                }
        }
        facts.has_token = found != NULL;
        facts.api_token_matches = token && facts.api_token_set && streq_constant_time(token, auth->api_token);
        if (facts.jwt_on && facts.has_token && !facts.api_token_matches) {
                facts.jwt = token ? jwt_verify(auth->jwt_keys, token, now_usec(CLOCK_REALTIME), &claims)
                        : JWT_MALFORMED;
                facts.granted = facts.jwt == JWT_VALID && jwt_claims_allow(claims, action, topic);
        }
        switch (auth_decide(action, &facts)) {
        case AUTH_ALLOW:
                return true;
        case AUTH_FORBIDDEN:
                http_respond_error(req, MHD_HTTP_FORBIDDEN, "forbidden",
                                   "the token does not allow to %s topic %s (its \"baton\" claim)", what, topic);
                return false;
        case AUTH_UNAUTHORIZED:
                break;
        }
        /* Without JWT, API_TOKEN is all there is: any failure is the
         * "unauthorized" it always was. With JWT, a token that is sent
         * gets the reason it failed (RFC 6750's invalid_token). */
        if (facts.jwt_on && facts.has_token) {
                http_respond_error(req, MHD_HTTP_UNAUTHORIZED, "invalid_token", "%s", jwt_status_text(facts.jwt));
                http_request_add_response_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                                 "Bearer realm=\"baton\", error=\"invalid_token\"");
                return false;
        }
        if (facts.jwt_on)
                http_respond_error(req, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                                   "to %s this topic, send a token: Authorization: Bearer <token>, the "
                                   "cookie baton_token, or ?access_token=", what);
        else
                http_respond_error(req, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                                   "publishing needs Authorization: Bearer <token>");
        http_request_add_response_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"baton\"");
        return false;
}

/* An unauthorised client's body is never read: 10,000 of them trickling
 * 64 KiB each must not cost 640 MB. */
void event_api_admit_publish(const EventAuth *auth, HttpRequest *req) {
        char topic[TOPIC_NAME_MAX + 1];

        assert(auth && req);

        if (!topic_param(req, topic) || !authorize(req, auth, JWT_PUBLISH, topic))
                return;
        if (!idempotency_key_valid(http_request_header(req, "Idempotency-Key"))) {
                http_respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_idempotency_key",
                                   "Idempotency-Key must be 1 to %d printable ASCII characters",
                                   IDEMPOTENCY_KEY_MAX);
                return;
        }
        if (!events_content_type_json(http_request_header(req, MHD_HTTP_HEADER_CONTENT_TYPE)))
                http_respond_error(req, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                                   "events are JSON: send Content-Type: application/json");
}

void event_api_handle_publish(Publisher *publisher, uint64_t max_event_bytes, HttpRequest *req) {
        char topic[TOPIC_NAME_MAX + 1], error[512];
        PublishRequest *p;
        const char *body;
        char *payload = NULL;
        size_t size, payload_size;
        int r;

        assert(publisher && req);

        /* event_api_admit_publish() let it in. */
        if (!topic_param(req, topic))
                return;
        body = http_request_body(req, &size);
        r = event_payload_compact(body, size, max_event_bytes, &payload, &payload_size, error,
                                  sizeof(error));
        if (r == -EINVAL) {
                http_respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_json", "%s", error);
                return;
        }
        if (r == -EFBIG) {
                http_respond_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large", "%s", error);
                return;
        }
        p = r >= 0 ? calloc(1, sizeof(PublishRequest)) : NULL;
        if (!p) {
                free(payload);
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        p->req = req;
        /* Checked at the headers (event_api_admit_publish()). */
        r = publisher_submit(publisher, topic, http_request_header(req, "Idempotency-Key"), payload,
                             payload_size, on_published, p, &p->ticket);
        if (r == -ENOBUFS) {
                free(payload);
                free(p);
                http_respond_retry_later(req, "overloaded",
                                         "the publish queue is full (MAX_PUBLISH_QUEUE_BYTES): the database "
                                         "is behind; the event was not stored, retry shortly");
                return;
        }
        if (r < 0) {
                free(payload);
                free(p);
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        http_request_on_end(req, on_publish_request_end, p);
}

/* --- history --- */

typedef struct HistoryRequest {
        HttpRequest *req;
        Db *db;
        uint64_t after;
        char topic[TOPIC_NAME_MAX + 1];
} HistoryRequest;

/* {"topic":"t","events":[ENVELOPE,...]}: envelopes are concatenated as
 * they are, the stored payloads never re-parsed. When retention deleted
 * ids after 'after', the body says so first: "reset":{"oldest":N,
 * "requested":K}, as a stream's "event: reset" does. */
static char *history_json(const char *topic, uint64_t after, const DbResult *result, size_t *ret_size) {
        size_t size = 64 + strlen(topic), rows = store_n_events(result);
        uint64_t oldest, last_id, next;
        StoredEvent e;
        char *out, *w;

        for (size_t i = 0; i < rows; i++) {
                store_event(result, i, &e);
                size += 128 + TOPIC_NAME_MAX + e.payload_size;
        }
        size += 80;
        out = malloc(size);
        if (!out)
                return NULL;
        w = out + sprintf(out, "{\"topic\":\"%s\",", topic);
        store_page_bounds(result, &oldest, &last_id);
        if (order_pruned(after, oldest, last_id, &next))
                w += sprintf(w, "\"reset\":{\"oldest\":%" PRIu64 ",\"requested\":%" PRIu64 "},", next, after);
        w += sprintf(w, "\"events\":[");
        for (size_t i = 0; i < rows; i++) {
                _cleanup_free_ char *envelope = NULL;
                size_t n;
                store_event(result, i, &e);
                if (event_envelope(e.id, topic, e.ts, e.payload, e.payload_size, &envelope, &n) < 0) {
                        free(out);
                        return NULL;
                }
                if (i > 0)
                        *w++ = ',';
                memcpy(w, envelope, n);
                w += n;
        }
        w += sprintf(w, "]}\n");
        *ret_size = (size_t) (w - out);
        return out;
}

static void on_history(Db *db, const DbResult *result, void *userdata) {
        HistoryRequest *h = userdata;
        size_t size;
        char *text;

        if (result->error) {
                log_warning("Reading the history of topic %s failed: %s", h->topic, result->error);
                http_respond_error(h->req, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                   "database unavailable (%s)", db_error_code(result->sqlstate));
                return;
        }
        text = history_json(h->topic, h->after, result, &size);
        if (!text)
                http_respond_error(h->req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
        else
                http_respond_json_text(h->req, MHD_HTTP_OK, text, size);
}

/* HistoryRequests alive (HISTORY_CONCURRENT_MAX); the loop's only. */
static unsigned history_in_flight;

static void on_history_request_end(HttpRequest *req, void *userdata) {
        HistoryRequest *h = userdata;

        /* The query may still be running: its answer goes nowhere. */
        db_cancel(h->db, h);
        free(h);
        assert(history_in_flight > 0);
        history_in_flight--;
}

/* Parses an optional unsigned query parameter within [min, max]. */
static bool query_number(HttpRequest *req, const char *name, uint64_t min, uint64_t max,
                         uint64_t *value) {
        const char *s = http_request_query(req, name);

        if (!s)
                return true;
        if (parse_uint64(s, value) < 0 || *value < min || *value > max) {
                http_respond_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                                   "%s must be a whole number from %" PRIu64 " to %" PRIu64,
                                   name, min, max);
                return false;
        }
        return true;
}

void event_api_handle_history(const EventAuth *auth, Db *read_db, usec_t query_timeout_usec, HttpRequest *req) {
        uint64_t after = 0, limit = HISTORY_LIMIT_DEFAULT;
        char topic[TOPIC_NAME_MAX + 1];
        HistoryRequest *h;
        int r;

        assert(auth && read_db && req);

        if (!topic_param(req, topic) || !authorize(req, auth, JWT_SUBSCRIBE, topic))
                return;

        if (history_in_flight >= HISTORY_CONCURRENT_MAX) {
                http_respond_retry_later(req, "overloaded", "%d history requests are being served; retry shortly",
                                         HISTORY_CONCURRENT_MAX);
                return;
        }
        h = calloc(1, sizeof(HistoryRequest));
        if (!h) {
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        memcpy(h->topic, topic, sizeof(topic));
        if (!query_number(req, "after", 0, INT64_MAX, &after) ||
            !query_number(req, "limit", 1, HISTORY_LIMIT_MAX, &limit)) {
                free(h);
                return;
        }
        h->req = req;
        h->db = read_db;
        h->after = after;
        r = store_query_page(read_db, h->topic, after, (size_t) limit, HISTORY_BYTES_MAX, query_timeout_usec,
                             on_history, h);
        if (r < 0) {
                http_respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                   "database unavailable (%s)",
                                   r == -ENOTCONN ? db_error_code(NULL) : strerror(-r));
                free(h);
                return;
        }
        history_in_flight++;
        http_request_on_end(req, on_history_request_end, h);
}

/* --- stream --- */

void event_api_handle_stream(const EventAuth *auth, Fanout *fanout, HttpRequest *req) {
        char topic[TOPIC_NAME_MAX + 1];
        uint64_t after;
        bool has_after;

        assert(auth && fanout && req);

        if (!topic_param(req, topic) || !authorize(req, auth, JWT_SUBSCRIBE, topic))
                return;
        if (stream_last_event_id(req, &has_after, &after) < 0) {
                http_respond_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                                   "Last-Event-ID must be an event id (a whole number)");
                return;
        }
        fanout_subscribe(fanout, req, topic, has_after, after);
}
