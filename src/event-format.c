/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>

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

int event_payload_canonical(const char *body, size_t size, uint64_t max_bytes, char **ret,
                            size_t *ret_size, char *error, size_t error_size) {
        _cleanup_(json_decrefp) json_t *j = NULL;
        json_error_t e;
        char *payload;
        size_t n;

        assert(body && ret && ret_size && error);

        if (size == 0) {
                snprintf(error, error_size, "the body is empty");
                return -EINVAL;
        }
        j = json_loadb(body, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
        if (!j) {
                snprintf(error, error_size, "invalid JSON: %s at line %d, column %d (byte %d)", e.text,
                         e.line, e.column, e.position);
                return -EINVAL;
        }
        /* Stored and delivered in one canonical form: compact. The limit
         * applies to that form too: jansson writes 1e15 as 1000000000000000.0. */
        payload = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!payload)
                return -ENOMEM;
        n = strlen(payload);
        if (n > max_bytes) {
                snprintf(error, error_size,
                         "the event is %zu bytes as stored (compact JSON), the limit is %" PRIu64, n,
                         max_bytes);
                free(payload);
                return -EFBIG;
        }
        *ret = payload;
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
