/* SPDX-License-Identifier: MIT */
/* SSE framing (src/sse-frame.c): whatever the data, the framed bytes read back,
 * through an independent parser of the text/event-stream grammar, as
 * exactly one event carrying exactly that data (line breaks in it become
 * LF, which is all the grammar can carry), that id and that type; no CR or
 * LF anywhere can add a field or end the event early.
 *
 * Input: DATA [NUL ID [NUL EVENT]]. Without an ID part the event is framed
 * as batond frames its events (id "42", type "message"). */

#include <inttypes.h>

#include "fuzz-util.h"
#include "sse-frame.h"

/* The data the grammar delivers: CRLF, CR and LF all become LF. */
static char *normalize_breaks(const char *s) {
        char *out = malloc(strlen(s) + 1), *w = out;

        if (!out)
                return NULL;
        for (; *s; s++) {
                if (*s == '\r') {
                        *w++ = '\n';
                        if (s[1] == '\n')
                                s++;
                } else
                        *w++ = *s;
        }
        *w = '\0';
        return out;
}

static bool has_break(const char *s) {
        return s && strpbrk(s, "\r\n");
}

static void check_event(const SseEvent *e, const char *id, const char *type, const char *data) {
        _cleanup_free_ char *expect = normalize_breaks(data);

        fuzz_check(expect, "out of memory");
        fuzz_check(streq(e->data, expect), "data came back as '%s'", e->data);
        if (type)
                fuzz_check(e->type && streq(e->type, type), "type came back as '%s'", strempty(e->type));
        else
                fuzz_check(!e->type, "a type appeared: '%s'", e->type);
        if (id)
                fuzz_check(e->last_id && streq(e->last_id, id), "id came back as '%s'", strempty(e->last_id));
        else
                fuzz_check(!e->last_id, "an id appeared: '%s'", e->last_id);
}

/* One event on its own: exactly one event, nothing else. */
static void check_single(const char *id, const char *type, const char *data) {
        SseBuffer b = { 0 };
        SseParse p;
        Frame *f;
        int r = sse_append_event(&b, id, type, data);

        f = sse_frame_event(id, type, data);
        if (has_break(id) || has_break(type)) {
                fuzz_check(r == -EINVAL, "a field with a line break was framed (r=%d)", r);
                fuzz_check(sse_buffer_pending(&b) == 0, "a refused event left %zu bytes", sse_buffer_pending(&b));
                fuzz_check(!f, "a frame was built for a field with a line break");
                sse_buffer_done(&b);
                return;
        }
        fuzz_check(r == 0, "framing failed: %d", r);
        fuzz_check(f && f->size == sse_buffer_pending(&b) && memcmp(f->data, b.data + b.start, f->size) == 0,
                   "sse_frame_event() and sse_append_event() disagree");
        fuzz_check(sse_parse(b.data + b.start, sse_buffer_pending(&b), &p) == 0, "out of memory");
        fuzz_check(p.n_events == 1, "%zu events", p.n_events);
        fuzz_check(!p.trailing, "bytes after the event");
        fuzz_check(p.n_comments == 0 && p.n_retry == 0 && p.n_unknown == 0,
                   "an injected line: %u comment(s), %u retry, %u unknown field(s)",
                   p.n_comments, p.n_retry, p.n_unknown);
        check_event(&p.events[0], id, type, data);
        sse_parse_done(&p);
        frame_unref(f);
        sse_buffer_done(&b);
}

/* A stream as a subscriber gets it: retry, a comment, two events, sent in
 * pieces while more is appended (the buffer compacts and grows). */
static void check_stream(const char *id, const char *type, const char *data, size_t chunk) {
        SseBuffer b = { 0 };
        char *out = NULL;
        size_t out_size = 0, out_allocated = 0;
        bool comment = !has_break(data);
        bool first = !has_break(id) && !has_break(type);
        SseParse p;

        fuzz_check(sse_append_retry(&b, 2000) == 0, "retry");
        fuzz_check((sse_append_comment(&b, data) == 0) == comment, "comment framing");
        for (unsigned step = 0; step < 3; step++) {
                if (step == 1)
                        fuzz_check((sse_append_event(&b, id, type, data) == 0) == first, "event framing");
                if (step == 2)
                        fuzz_check(sse_append_event(&b, NULL, NULL, data) == 0, "event framing");
                /* Take a piece, as a stream reader does with a small buffer. */
                size_t want = sse_buffer_pending(&b) < chunk ? sse_buffer_pending(&b) : chunk;
                if (out_size + want > out_allocated) {
                        out_allocated = (out_size + want) * 2 + 16;
                        out = realloc(out, out_allocated);
                        fuzz_check(out, "out of memory");
                }
                out_size += sse_buffer_take(&b, out + out_size, want);
        }
        size_t rest = sse_buffer_pending(&b);
        out = realloc(out, out_size + rest + 1);
        fuzz_check(out, "out of memory");
        out_size += sse_buffer_take(&b, out + out_size, rest);
        fuzz_check(sse_buffer_pending(&b) == 0, "bytes left after taking all");

        fuzz_check(sse_parse(out, out_size, &p) == 0, "out of memory");
        fuzz_check(p.n_retry == 1 && p.retry_ms == 2000, "retry lost");
        fuzz_check(p.n_comments == (comment ? 1u : 0u), "%u comments", p.n_comments);
        fuzz_check(p.n_unknown == 0 && !p.trailing, "injected or unterminated lines");
        fuzz_check(p.n_events == (first ? 2u : 1u), "%zu events", p.n_events);
        if (first)
                check_event(&p.events[0], id, type, data);
        /* The second event has no id of its own: the last one stays. */
        check_event(&p.events[p.n_events - 1], first ? id : NULL, NULL, data);
        sse_parse_done(&p);
        sse_buffer_done(&b);
        free(out);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
        _cleanup_free_ char *copy = malloc(size + 2);
        const char *data, *id = "42", *type = "message";

        if (!copy)
                return 0;
        memcpy(copy, input, size);
        copy[size] = copy[size + 1] = '\0';
        data = copy;
        if (strlen(data) < size) {
                id = data + strlen(data) + 1;
                type = NULL;
                if (id + strlen(id) < copy + size)
                        type = id + strlen(id) + 1;
        }
        check_single(id, type, data);
        check_single(NULL, NULL, data);
        check_stream(id, type, data, 1 + size % 61);
        return 0;
}
