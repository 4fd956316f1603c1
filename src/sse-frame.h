/* SPDX-License-Identifier: MIT */
#pragma once

/* Server-Sent Events framing (text/event-stream), appended to a growable
 * buffer. Pure: no I/O (unit-tested and fuzzed). */

#include "util.h"

typedef struct SseBuffer {
        char *data;
        size_t start;                   /* bytes before this were sent */
        size_t end;
        size_t allocated;
} SseBuffer;

/* "id: ID\nevent: EVENT\ndata: line\n...\n\n". id and event may be NULL.
 * Data is split into one data: line per line (\n, \r\n or \r), as the SSE
 * grammar requires; id and event must not contain line breaks (-EINVAL). */
int sse_append_event(SseBuffer *b, const char *id, const char *event, const char *data);

/* ": text\n\n", a comment clients ignore: heartbeats. */
int sse_append_comment(SseBuffer *b, const char *text);

/* "retry: MS\n\n": how long clients wait before reconnecting. */
int sse_append_retry(SseBuffer *b, uint64_t retry_ms);

size_t sse_buffer_pending(const SseBuffer *b);
/* Copies up to max pending bytes to dst and consumes them. */
size_t sse_buffer_take(SseBuffer *b, char *dst, size_t max);
void sse_buffer_done(SseBuffer *b);

/* An immutable, reference-counted chunk of stream bytes (one event, a
 * heartbeat): built once, queued on any number of streams without copying. */
typedef struct Frame {
        unsigned n_ref;
        unsigned n_queued;              /* stream queues holding it (sse-stream.c's count) */
        size_t size;
        char data[];
} Frame;

Frame *frame_new(const char *data, size_t size);
Frame *frame_ref(Frame *f);
Frame *frame_unref(Frame *f);

/* The frame of one event: "id: ID\nevent: EVENT\ndata: ...\n\n". */
Frame *sse_frame_event(const char *id, const char *event, const char *data);
/* ": TEXT\n\n" */
Frame *sse_frame_comment(const char *text);
