/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#include "sse-frame.h"

static int reserve(SseBuffer *b, size_t extra) {
        /* Reclaim what was sent before growing. */
        if (b->start > 0 && b->end + extra > b->allocated) {
                memmove(b->data, b->data + b->start, b->end - b->start);
                b->end -= b->start;
                b->start = 0;
        }
        if (b->end + extra <= b->allocated)
                return 0;
        size_t want = b->allocated ? b->allocated : 256;
        while (want < b->end + extra) {
                if (want > SIZE_MAX / 2)
                        return -ENOMEM;
                want *= 2;
        }
        char *p = realloc(b->data, want);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->allocated = want;
        return 0;
}

static int append(SseBuffer *b, const char *s, size_t n) {
        int r = reserve(b, n);
        if (r < 0)
                return r;
        memcpy(b->data + b->end, s, n);
        b->end += n;
        return 0;
}

static int append_str(SseBuffer *b, const char *s) {
        return append(b, s, strlen(s));
}

static int append_field(SseBuffer *b, const char *name, const char *value) {
        int r;

        if (strpbrk(value, "\r\n"))
                return -EINVAL;
        r = append_str(b, name);
        if (r >= 0)
                r = append_str(b, value);
        if (r >= 0)
                r = append(b, "\n", 1);
        return r;
}

/* Undoes a failed append: the pending bytes as they were. Not the old end
 * offset: reserve() may have moved the pending bytes to the front since. */
static void rollback(SseBuffer *b, size_t pending_before) {
        b->end = b->start + pending_before;
}

int sse_append_event(SseBuffer *b, const char *id, const char *event, const char *data) {
        assert(b);

        size_t pending_before = b->end - b->start;
        const char *p = strempty(data);
        int r = 0;

        if (id)
                r = append_field(b, "id: ", id);
        if (r >= 0 && event)
                r = append_field(b, "event: ", event);
        /* One data: line per line of data; an empty payload still needs one. */
        while (r >= 0) {
                size_t n = strcspn(p, "\r\n");
                r = append_str(b, "data: ");
                if (r >= 0)
                        r = append(b, p, n);
                if (r >= 0)
                        r = append(b, "\n", 1);
                p += n;
                if (*p == '\0')
                        break;
                p += (p[0] == '\r' && p[1] == '\n') ? 2 : 1;
        }
        if (r >= 0)
                r = append(b, "\n", 1);
        if (r < 0)
                rollback(b, pending_before);    /* never leave half an event behind */
        return r;
}

int sse_append_comment(SseBuffer *b, const char *text) {
        assert(b && text);

        size_t pending_before = b->end - b->start;
        int r = append_field(b, ": ", text);

        if (r >= 0)
                r = append(b, "\n", 1);
        if (r < 0)
                rollback(b, pending_before);
        return r;
}

int sse_append_retry(SseBuffer *b, uint64_t retry_ms) {
        char line[40];

        assert(b);

        snprintf(line, sizeof(line), "retry: %" PRIu64 "\n\n", retry_ms);
        return append_str(b, line);
}

size_t sse_buffer_pending(const SseBuffer *b) {
        assert(b);

        return b->end - b->start;
}

size_t sse_buffer_take(SseBuffer *b, char *dst, size_t max) {
        assert(b && dst);

        size_t n = sse_buffer_pending(b);

        if (n > max)
                n = max;
        memcpy(dst, b->data + b->start, n);
        b->start += n;
        if (b->start == b->end)
                b->start = b->end = 0;
        return n;
}

void sse_buffer_done(SseBuffer *b) {
        free(b->data);
        *b = (SseBuffer) { 0 };
}

Frame *frame_new(const char *data, size_t size) {
        Frame *f = malloc(sizeof(Frame) + size);

        assert(data);

        if (!f)
                return NULL;
        f->n_ref = 1;
        f->n_queued = 0;
        f->size = size;
        memcpy(f->data, data, size);
        return f;
}

Frame *frame_ref(Frame *f) {
        if (f)
                f->n_ref++;
        return f;
}

Frame *frame_unref(Frame *f) {
        if (f && --f->n_ref == 0)
                free(f);
        return NULL;
}

/* Builds a frame from what an SseBuffer assembled. */
static Frame *frame_from_buffer(SseBuffer *b, int r) {
        Frame *f = r < 0 ? NULL : frame_new(b->data + b->start, sse_buffer_pending(b));
        sse_buffer_done(b);
        return f;
}

Frame *sse_frame_event(const char *id, const char *event, const char *data) {
        assert(data);

        SseBuffer b = { 0 };
        return frame_from_buffer(&b, sse_append_event(&b, id, event, data));
}

Frame *sse_frame_comment(const char *text) {
        assert(text);

        SseBuffer b = { 0 };
        return frame_from_buffer(&b, sse_append_comment(&b, text));
}
