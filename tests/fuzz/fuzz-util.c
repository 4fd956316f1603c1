/* SPDX-License-Identifier: MIT */
#include <stdarg.h>

#include "fuzz-util.h"

/* From the sanitizer runtime, when one is linked (<sanitizer/common_interface_defs.h>). */
extern void __sanitizer_report_error_summary(const char *summary) __attribute__((weak));

void fuzz_fail(const char *file, int line, const char *cond, const char *format, ...) {
        char message[2048];
        int n;
        va_list ap;

        n = snprintf(message, sizeof(message), "invariant failed at %s:%d: %s: ", file, line, cond);
        va_start(ap, format);
        if (n >= 0 && (size_t) n < sizeof(message))
                (void) vsnprintf(message + n, sizeof(message) - (size_t) n, format, ap);
        va_end(ap);
        fprintf(stderr, "%s\n", message);
        if (__sanitizer_report_error_summary)
                __sanitizer_report_error_summary(message);
        abort();
}

typedef struct Buf {
        char *data;
        size_t size, allocated;
} Buf;

static int buf_append(Buf *b, const char *s, size_t n) {
        if (b->size + n + 1 > b->allocated) {
                size_t want = (b->size + n + 1) * 2;
                char *p = realloc(b->data, want);
                if (!p)
                        return -ENOMEM;
                b->data = p;
                b->allocated = want;
        }
        memcpy(b->data + b->size, s, n);
        b->size += n;
        b->data[b->size] = '\0';
        return 0;
}

static char *buf_steal(Buf *b) {
        char *s = b->data ? b->data : strdup("");
        *b = (Buf) { 0 };
        return s;
}

static char *strndup_or_null(const char *s, size_t n, bool present) {
        return present ? strndup(s, n) : NULL;
}

typedef struct State {
        Buf data;
        Buf type;
        bool has_type;
        Buf last_id;
        bool has_id;
        bool pending;           /* a field of the current event was seen */
} State;

/* "If the data buffer is an empty string, set the data buffer and the event
 * type buffer to the empty string and return." Otherwise remove one
 * trailing LF and dispatch. */
static int dispatch(State *st, SseParse *p) {
        SseEvent *e;

        st->pending = false;
        if (st->data.size == 0) {
                st->has_type = false;
                st->type.size = 0;
                return 0;
        }
        e = realloc(p->events, (p->n_events + 1) * sizeof(SseEvent));
        if (!e)
                return -ENOMEM;
        p->events = e;
        e = &p->events[p->n_events++];
        if (st->data.data[st->data.size - 1] == '\n')
                st->data.data[--st->data.size] = '\0';
        e->data = buf_steal(&st->data);
        e->type = strndup_or_null(st->type.data ? st->type.data : "", st->type.size, st->has_type);
        e->last_id = strndup_or_null(st->last_id.data ? st->last_id.data : "", st->last_id.size,
                                     st->has_id);
        st->has_type = false;
        st->type.size = 0;
        return 0;
}

static int process_field(State *st, SseParse *p, const char *name, size_t name_len,
                         const char *value, size_t value_len) {
        st->pending = true;
        if (name_len == 5 && memcmp(name, "event", 5) == 0) {
                st->type.size = 0;
                st->has_type = true;
                return buf_append(&st->type, value, value_len);
        }
        if (name_len == 4 && memcmp(name, "data", 4) == 0) {
                int r = buf_append(&st->data, value, value_len);
                return r < 0 ? r : buf_append(&st->data, "\n", 1);
        }
        if (name_len == 2 && memcmp(name, "id", 2) == 0) {
                if (memchr(value, '\0', value_len))
                        return 0;
                st->last_id.size = 0;
                st->has_id = true;
                return buf_append(&st->last_id, value, value_len);
        }
        if (name_len == 5 && memcmp(name, "retry", 5) == 0) {
                uint64_t v = 0;
                if (value_len == 0)
                        return 0;
                for (size_t i = 0; i < value_len; i++) {
                        if (value[i] < '0' || value[i] > '9')
                                return 0;
                        v = v * 10 + (uint64_t) (value[i] - '0');
                }
                p->n_retry++;
                p->retry_ms = v;
                return 0;
        }
        p->n_unknown++;
        return 0;
}

int sse_parse(const char *stream, size_t size, SseParse *ret) {
        const char *s = stream, *end = stream + size;
        State st = { 0 };
        SseParse p = { 0 };
        int r = 0;

        /* One leading BOM is not part of the stream. */
        if (size >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
                s += 3;
        while (s < end && r >= 0) {
                const char *eol = s;
                while (eol < end && *eol != '\n' && *eol != '\r')
                        eol++;
                if (eol == end)
                        break;          /* an unterminated line is not processed */
                size_t len = (size_t) (eol - s);
                if (len == 0)
                        r = dispatch(&st, &p);
                else if (s[0] == ':')
                        p.n_comments++;
                else {
                        const char *colon = memchr(s, ':', len);
                        if (colon) {
                                const char *v = colon + 1;
                                if (v < eol && *v == ' ')
                                        v++;
                                r = process_field(&st, &p, s, (size_t) (colon - s), v, (size_t) (eol - v));
                        } else
                                r = process_field(&st, &p, s, len, "", 0);
                }
                s = eol + ((eol[0] == '\r' && eol + 1 < end && eol[1] == '\n') ? 2 : 1);
        }
        p.trailing = s < end || st.pending;
        free(st.data.data);
        free(st.type.data);
        free(st.last_id.data);
        if (r < 0) {
                sse_parse_done(&p);
                return r;
        }
        *ret = p;
        return 0;
}

void sse_parse_done(SseParse *p) {
        for (size_t i = 0; i < p->n_events; i++) {
                free(p->events[i].type);
                free(p->events[i].data);
                free(p->events[i].last_id);
        }
        free(p->events);
        *p = (SseParse) { 0 };
}
