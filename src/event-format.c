/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "event-format.h"

bool topic_name_valid(const char *s, size_t length) {
        assert(s);

        if (length < 1 || length > TOPIC_NAME_MAX)
                return false;
        for (size_t i = 0; i < length; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-'))
                        return false;
        }
        return true;
}

int event_envelope(uint64_t id, const char *topic, const char *ts, const char *payload,
                   size_t payload_size, char **ret, size_t *ret_size) {
        char head[64 + TOPIC_NAME_MAX + 64];
        int n;
        char *s;

        assert(topic && ts && ret && ret_size);

        n = snprintf(head, sizeof(head), "{\"id\":%" PRIu64 ",\"topic\":\"%s\",\"ts\":\"%s\",\"data\":",
                     id, topic, ts);
        if (n < 0 || (size_t) n >= sizeof(head))
                return -EINVAL;
        s = malloc((size_t) n + payload_size + 2);
        if (!s)
                return -ENOMEM;
        memcpy(s, head, (size_t) n);
        memcpy(s + n, payload, payload_size);
        s[(size_t) n + payload_size] = '}';
        s[(size_t) n + payload_size + 1] = '\0';
        *ret = s;
        *ret_size = (size_t) n + payload_size + 1;
        return 0;
}

static bool json_whitespace(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* RFC 8259 section 6: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool json_number_valid(const char *s, size_t n) {
        size_t i = 0, digits;

        if (i < n && s[i] == '-')
                i++;
        if (i < n && s[i] == '0')
                i++;
        else {
                for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
                        digits++;
                if (digits == 0)
                        return false;
        }
        if (i < n && s[i] == '.') {
                for (i++, digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
                        digits++;
                if (digits == 0)
                        return false;
        }
        if (i < n && (s[i] == 'e' || s[i] == 'E')) {
                i++;
                if (i < n && (s[i] == '+' || s[i] == '-'))
                        i++;
                for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
                        digits++;
                if (digits == 0)
                        return false;
        }
        return i == n;
}

/* The bytes a number token spans: what jansson's lexer would take too. */
static size_t number_token_length(const char *s, size_t n) {
        size_t i = 0;

        while (i < n && strchr("0123456789+-.eE", s[i]) && s[i] != '\0')
                i++;
        return i;
}

/* Splits a body into 'compact' (the body without whitespace outside
 * strings: what is stored) and 'check' (the body with each number written
 * as 0 and padded with blanks to its length: what jansson validates, so
 * that its line and column are the client's). Numbers are checked here
 * against the grammar, and never need to fit an int64 or a double. */
static int payload_split(const char *body, size_t size, char *compact, size_t *ret_compact_size,
                         char *check, size_t *ret_bad_number) {
        bool in_string = false;
        size_t w = 0;

        for (size_t i = 0; i < size; i++) {
                char c = body[i];

                check[i] = c;
                if (in_string) {
                        compact[w++] = c;
                        if (c == '\\' && i + 1 < size) {
                                i++;
                                check[i] = compact[w++] = body[i];
                        } else if (c == '"')
                                in_string = false;
                } else if (json_whitespace(c))
                        continue;
                else if (c == '-' || (c >= '0' && c <= '9')) {
                        size_t n = number_token_length(body + i, size - i);
                        if (!json_number_valid(body + i, n)) {
                                *ret_bad_number = i;
                                return -EINVAL;
                        }
                        memcpy(compact + w, body + i, n);
                        w += n;
                        check[i] = '0';
                        memset(check + i + 1, ' ', n - 1);
                        i += n - 1;
                } else {
                        compact[w++] = c;
                        in_string = c == '"';
                }
        }
        compact[w] = '\0';
        *ret_compact_size = w;
        return 0;
}

int event_payload_compact(const char *body, size_t size, uint64_t max_bytes, char **ret,
                          size_t *ret_size, char *error, size_t error_size) {
        _cleanup_(json_decrefp) json_t *j = NULL;
        _cleanup_free_ char *compact = NULL, *check = NULL;
        const char *nul;
        size_t n, bad;
        json_error_t e;

        assert(body && ret && ret_size && error);

        if (size == 0) {
                snprintf(error, error_size, "the body is empty");
                return -EINVAL;
        }
        /* jansson would take a NUL for the end of the text, and the rest
         * would be stored unchecked. */
        nul = memchr(body, '\0', size);
        if (nul) {
                snprintf(error, error_size, "invalid JSON: a NUL byte at byte %zu", (size_t) (nul - body));
                return -EINVAL;
        }
        compact = malloc(size + 1);
        check = malloc(size);
        if (!compact || !check)
                return -ENOMEM;
        if (payload_split(body, size, compact, &n, check, &bad) < 0) {
                snprintf(error, error_size, "invalid JSON: invalid number at byte %zu", bad);
                return -EINVAL;
        }
        /* Parsed to be validated, never re-serialised: the payload is the
         * client's text, so 0.1 stays 0.1 and 1e2 stays 1e2. */
        j = json_loadb(check, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
        if (!j) {
                snprintf(error, error_size, "invalid JSON: %s at line %d, column %d (byte %d)", e.text,
                         e.line, e.column, e.position);
                return -EINVAL;
        }
        if (n > max_bytes) {
                snprintf(error, error_size,
                         "the event is %zu bytes without whitespace, the limit is %" PRIu64, n, max_bytes);
                return -EFBIG;
        }
        *ret = TAKE_PTR(compact);
        *ret_size = n;
        return 0;
}

Frame *event_frame(uint64_t id, const char *envelope) {
        char id_text[24];

        assert(envelope);

        snprintf(id_text, sizeof(id_text), "%" PRIu64, id);
        return sse_frame_event(id_text, "message", envelope);
}

size_t event_hint(uint64_t id, const char *topic, char buf[static EVENT_HINT_MAX]) {
        assert(topic);

        int n = snprintf(buf, EVENT_HINT_MAX, "{\"id\":%" PRIu64 ",\"topic\":\"%s\",\"hint\":true}", id, topic);

        assert(n > 0 && n < EVENT_HINT_MAX);
        return (size_t) n;
}

int event_hint_parse(const char *data, size_t size, const char *topic, uint64_t *ret_id) {
        char text[EVENT_HINT_MAX], expect[EVENT_HINT_MAX];
        uint64_t id;

        assert(data && topic && ret_id);

        if (size >= EVENT_HINT_MAX)
                return -EBADMSG;
        memcpy(text, data, size);
        text[size] = '\0';
        if (sscanf(text, "{\"id\":%" SCNu64 ",", &id) != 1 || id == 0)
                return -EBADMSG;
        /* Exactly what event_hint() writes, nothing more or less. */
        if (event_hint(id, topic, expect) != size || memcmp(expect, data, size) != 0)
                return -EBADMSG;
        *ret_id = id;
        return 0;
}

int event_envelope_parse(const char *data, size_t size, const char *topic, uint64_t *ret_id) {
        assert(data && topic && ret_id);

        static const char id_prefix[] = "{\"id\":";
        char expect[32 + TOPIC_NAME_MAX];
        const char *p = data, *end = data + size;
        uint64_t id = 0;
        size_t n;

        if (size < sizeof(id_prefix) || memcmp(p, id_prefix, sizeof(id_prefix) - 1) != 0)
                return -EBADMSG;
        p += sizeof(id_prefix) - 1;
        for (n = 0; p < end && *p >= '0' && *p <= '9'; p++, n++) {
                if (n >= 19)
                        return -EBADMSG;        /* beyond what an id can be */
                id = id * 10 + (uint64_t) (*p - '0');
        }
        if (n == 0 || id == 0)
                return -EBADMSG;
        n = (size_t) snprintf(expect, sizeof(expect), ",\"topic\":\"%s\",\"ts\":\"", topic);
        if ((size_t) (end - p) < n || memcmp(p, expect, n) != 0)
                return -EBADMSG;
        /* The rest is the payload we stored: it must at least close the
         * envelope and hold no NUL (it becomes an SSE line). */
        if (end[-1] != '}' || memchr(data, '\0', size))
                return -EBADMSG;
        *ret_id = id;
        return 0;
}
