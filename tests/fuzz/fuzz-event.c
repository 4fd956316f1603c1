/* SPDX-License-Identifier: MIT */
/* Event validation and formatting (src/event-format.c, src/event-api.c):
 *
 * - a published body either fails with a message for the client, or becomes
 *   a payload that is the body less its whitespace outside strings, the
 *   same JSON value (numbers too large for jansson accepted as text), its
 *   own stored form, within the limit, with no line break or NUL (it
 *   becomes one SSE data: line);
 * - a valid topic and that payload make an envelope that is JSON with the
 *   same fields, that the bus-message check accepts with the same id, and
 *   whose SSE frame reads back as exactly that envelope;
 * - topic names follow their grammar; bus messages (untrusted bytes) are
 *   checked without crashing; the Authorization check takes exactly
 *   "Bearer <token>".
 *
 * Input: TOPIC LF BODY; without a LF, all of it is the body of topic "t".
 * The whole input is also checked as a bus message of that topic, and the
 * first line as an Authorization and a Content-Type header. */

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <strings.h>

#include "event-format.h"
#include "event-api.h"
#include "fuzz-util.h"

#define MAX_BYTES 1024
#define TS "2026-11-21T10:00:00.123456Z"

static bool topic_reference(const char *s, size_t n) {
        if (n < 1 || n > TOPIC_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", s[i]) ||
                    s[i] == '\0')
                        return false;
        return true;
}

static json_t *load(const char *s, size_t n) {
        json_error_t e;
        return json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
}

static void check_envelope(const char *topic, const char *payload, size_t size, json_t *value) {
        static const uint64_t ids[] = { 1, 42, INT64_MAX };

        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                _cleanup_free_ char *envelope = NULL;
                _cleanup_(json_decrefp) json_t *j = NULL;
                char id_text[24];
                size_t n;
                uint64_t id;
                SseParse p;
                Frame *f;

                fuzz_check(event_envelope(ids[i], topic, TS, payload, size, &envelope, &n) == 0, "envelope");
                fuzz_check(strlen(envelope) == n, "envelope size %zu, strlen %zu", n, strlen(envelope));
                j = load(envelope, n);
                fuzz_check(j && json_is_object(j), "the envelope is not a JSON object: %s", envelope);
                fuzz_check(json_object_size(j) == 4, "envelope fields");
                fuzz_check(json_integer_value(json_object_get(j, "id")) == (json_int_t) ids[i], "id");
                fuzz_check(streq(strempty(json_string_value(json_object_get(j, "topic"))), topic), "topic");
                fuzz_check(streq(strempty(json_string_value(json_object_get(j, "ts"))), TS), "ts");
                fuzz_check(json_equal(json_object_get(j, "data"), value), "data differs in %s", envelope);

                fuzz_check(event_envelope_parse(envelope, n, topic, &id) == 0 && id == ids[i],
                           "the bus check refuses our own envelope: %s", envelope);

                f = event_frame(ids[i], envelope);
                fuzz_check(f, "frame");
                fuzz_check(sse_parse(f->data, f->size, &p) == 0, "out of memory");
                snprintf(id_text, sizeof(id_text), "%" PRIu64, ids[i]);
                fuzz_check(p.n_events == 1 && !p.trailing && p.n_unknown == 0 && p.n_comments == 0,
                           "the frame is not one event");
                fuzz_check(streq(p.events[0].data, envelope), "the frame carries '%s'", p.events[0].data);
                fuzz_check(p.events[0].last_id && streq(p.events[0].last_id, id_text), "frame id");
                fuzz_check(p.events[0].type && streq(p.events[0].type, "message"), "frame type");
                sse_parse_done(&p);
                frame_unref(f);
        }
}

/* jansson refuses numbers it cannot hold; batond stores them as text. */
static bool refused_for_a_number_only(const char *body, size_t size) {
        json_error_t e;
        json_t *j = json_loadb(body, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);

        if (j) {
                json_decref(j);
                return false;
        }
        return strstr(e.text, "too big") || strstr(e.text, "overflow");
}

/* The payload is the body less whitespace outside strings, nothing else. */
static void check_only_whitespace_dropped(const char *body, size_t size, const char *payload, size_t n) {
        size_t w = 0;

        for (size_t i = 0; i < size; i++) {
                if (w < n && body[i] == payload[w]) {
                        w++;
                        continue;
                }
                fuzz_check(strchr(" \t\r\n", body[i]) && body[i] != '\0',
                           "byte %zu (0x%02x) of the body is neither kept nor whitespace", i,
                           (unsigned char) body[i]);
        }
        fuzz_check(w == n, "the payload has bytes the body has not");
}

static void check_body(const char *topic, bool topic_ok, const char *body, size_t size) {
        _cleanup_free_ char *payload = NULL, *again = NULL;
        _cleanup_(json_decrefp) json_t *value = NULL, *reparsed = NULL;
        char error[512] = "";
        size_t n = 0, n2 = 0;
        int r;

        r = event_payload_compact(body, size, MAX_BYTES, &payload, &n, error, sizeof(error));
        value = size > 0 ? load(body, size) : NULL;
        if (r == -EINVAL) {
                /* jansson stops at a NUL; batond refuses the body. */
                fuzz_check(!value || memchr(body, '\0', size), "a JSON body was refused: %s", error);
                fuzz_check(!isempty(error), "no message for the client");
                return;
        }
        fuzz_check(value || refused_for_a_number_only(body, size),
                   "a body that is not JSON was accepted (r=%d)", r);
        if (r == -EFBIG) {
                fuzz_check(strstr(error, "the limit is 1024"), "message: %s", error);
                /* The same body under a larger limit is fine, and larger than this one. */
                fuzz_check(event_payload_compact(body, size, UINT64_MAX, &again, &n2, error,
                                                 sizeof(error)) == 0 && n2 > MAX_BYTES,
                           "refused as too large, but it is %zu bytes", n2);
                return;
        }
        fuzz_check(r == 0, "r=%d", r);
        fuzz_check(n <= MAX_BYTES && strlen(payload) == n, "size %zu", n);
        fuzz_check(!strpbrk(payload, "\r\n"), "a line break in the payload: %s", payload);
        check_only_whitespace_dropped(body, size, payload, n);
        reparsed = load(payload, n);
        fuzz_check(!value || (reparsed && json_equal(value, reparsed)), "the payload is another value: %s",
                   payload);
        /* Stored means a fixed point. */
        fuzz_check(event_payload_compact(payload, n, MAX_BYTES, &again, &n2, error, sizeof(error)) == 0 &&
                   n2 == n && memcmp(again, payload, n) == 0,
                   "the stored form is not stable: '%s' became '%s'", payload, strempty(again));
        if (topic_ok && value)
                check_envelope(topic, payload, n, value);
}

static void check_headers(const char *line) {
        bool want = strncasecmp(line, "Bearer ", 7) == 0 && streq(line + 7, "s3cret-Token");

        fuzz_check(event_api_authorized(line, "s3cret-Token") == want, "Authorization: '%s'", line);
        fuzz_check(event_api_authorized(line, ""), "open publishing refused '%s'", line);
        (void) events_content_type_json(line);
}

static char *copy_bytes(const char *s, size_t n) {
        char *p = malloc(n + 1);

        if (p) {
                memcpy(p, s, n);
                p[n] = '\0';
        }
        return p;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
        const char *data = (const char *) input;
        const char *nl = memchr(data, '\n', size);
        /* Not strndup(): the input has no NUL, and ASan's strict_string_checks
         * (as the test suite runs) reads past it looking for one. */
        _cleanup_free_ char *topic = copy_bytes(nl ? data : "t", nl ? (size_t) (nl - data) : 1);
        const char *body = nl ? nl + 1 : data;
        size_t topic_len = nl ? (size_t) (nl - data) : 1;
        size_t body_size = nl ? size - topic_len - 1 : size;
        bool topic_ok;
        uint64_t id = 0;

        if (!topic)
                return 0;
        topic_ok = topic_name_valid(nl ? data : "t", topic_len);
        fuzz_check(topic_ok == topic_reference(nl ? data : "t", topic_len), "topic '%s'", topic);
        check_body(topic, topic_ok, body, body_size);

        /* A bus message is untrusted: refused or accepted, never a crash;
         * accepted means an envelope of this topic with a real id. */
        if (topic_ok && event_envelope_parse(data, size, topic, &id) == 0) {
                fuzz_check(id > 0, "id 0 accepted");
                fuzz_check(data[size - 1] == '}' && !memchr(data, '\0', size), "not a closed envelope");
        }
        /* A hint is accepted only as event_hint() writes it, and never
         * taken for an envelope too. */
        if (topic_ok && event_hint_parse(data, size, topic, &id) == 0) {
                char again[EVENT_HINT_MAX];
                uint64_t envelope_id;
                fuzz_check(id > 0, "hint with id 0 accepted");
                fuzz_check(event_hint(id, topic, again) == size && memcmp(again, data, size) == 0,
                           "a hint accepted in another form");
                fuzz_check(event_envelope_parse(data, size, topic, &envelope_id) < 0,
                           "a hint taken for an envelope");
        }
        check_headers(topic);
        return 0;
}
