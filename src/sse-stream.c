/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>

#include "list.h"
#include "log.h"
#include "loop-util.h"
#include "parse-util.h"
#include "ring.h"
#include "sse-frame.h"
#include "sse-stream.h"

/* The frames queued for one client: a small ring of references, so that an
 * event sent to ten thousand streams exists once in memory. */
typedef struct FrameQueue {
        Frame **items;
        size_t head;
        size_t count;
        size_t capacity;
        size_t offset;                  /* bytes of items[head] already sent */
        size_t bytes;                   /* unsent bytes in the queue */
        size_t *backlog;                /* the hub's: every queued frame counted once */
} FrameQueue;

struct Stream {
        StreamHub *hub;
        HttpRequest *req;               /* NULL once the request ended */
        FrameQueue queue;
        bool finishing;                 /* end after the queue drains */
        bool response_alive;            /* MHD still holds our reader */
        usec_t last_write;
        usec_t over_since;              /* queued past buffer_max_bytes since then; 0: not */
        usec_t cut_at;                  /* cut as too slow then; 0: not */

        StreamCloseCallback close_cb;
        void *close_userdata;
        StreamDrainCallback drain_cb;
        void *drain_userdata;
        size_t drain_below;             /* call drain_cb once queued bytes are at most this */

        ListNode in_hub;                /* in the hub's, while its request lasts */
};

struct StreamHub {
        sd_event *event;
        StreamSettings settings;
        ListNode streams;
        size_t n_streams;
        sd_event_source *heartbeat_timer;
        sd_event_source *slow_timer;    /* once a second: who stayed behind too long */
        Frame *heartbeat;
        uint64_t cut;
        uint64_t told_to_reconnect;     /* streams ended with "reconnect" (cut ones too) */
        char *refuse_reason;            /* set once draining: new streams end at once */
        /* Bytes of the frames queued on any stream, each counted once
         * however many streams hold it: at most settings.backlog_max_bytes
         * (on_slow_check() sees to it). */
        size_t backlog_bytes;
};

/* --- the frame queue --- */

static int queue_push(FrameQueue *q, Frame *f) {
        if (q->count == q->capacity &&
            ring_grow((void **) &q->items, sizeof(*q->items), &q->head, q->count, &q->capacity, 4) < 0)
                return -ENOMEM;
        q->items[(q->head + q->count) % q->capacity] = frame_ref(f);
        q->count++;
        q->bytes += f->size;
        if (f->n_queued++ == 0)
                *q->backlog += f->size;
        return 0;
}

/* The queue lets go of f (sent, dropped, or the stream is gone). */
static void queue_release(FrameQueue *q, Frame *f) {
        assert(f->n_queued > 0);
        if (--f->n_queued == 0) {
                assert(*q->backlog >= f->size);
                *q->backlog -= f->size;
        }
        frame_unref(f);
}

/* Copies up to max queued bytes to buf, releasing frames fully sent. */
static size_t queue_take(FrameQueue *q, char *buf, size_t max) {
        size_t n = 0;

        while (q->count > 0 && n < max) {
                Frame *f = q->items[q->head];
                size_t chunk = f->size - q->offset;
                if (chunk > max - n)
                        chunk = max - n;
                memcpy(buf + n, f->data + q->offset, chunk);
                n += chunk;
                q->offset += chunk;
                q->bytes -= chunk;
                if (q->offset == f->size) {
                        queue_release(q, f);
                        q->head = (q->head + 1) % q->capacity;
                        q->count--;
                        q->offset = 0;
                }
        }
        return n;
}

/* Drops every frame not started yet: the one on its way stays whole, so
 * that the stream's framing does. */
static void queue_drop_unsent(FrameQueue *q) {
        size_t keep = q->count > 0 && q->offset > 0 ? 1 : 0;

        while (q->count > keep) {
                size_t last = (q->head + q->count - 1) % q->capacity;
                q->bytes -= q->items[last]->size;
                queue_release(q, q->items[last]);
                q->count--;
        }
}

static void queue_done(FrameQueue *q) {
        for (size_t i = 0; i < q->count; i++)
                queue_release(q, q->items[(q->head + i) % q->capacity]);
        free(q->items);
        *q = (FrameQueue) { .backlog = q->backlog };
}

/* --- streams --- */

/* A stream is freed when both its request ended and MHD released the
 * response: whichever comes last. */
static void stream_maybe_free(Stream *s) {
        if (s->req || s->response_alive)
                return;
        queue_done(&s->queue);
        free(s);
}

static void hub_unlink(StreamHub *hub, Stream *s) {
        list_remove(&s->in_hub);
        assert(hub->n_streams > 0);
        hub->n_streams--;
}

static ssize_t on_read(void *cls, uint64_t pos, char *buf, size_t max) {
        Stream *s = cls;
        size_t n;

        if (!s->req)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        if (s->queue.count > 0) {
                n = queue_take(&s->queue, buf, max);
                if (s->queue.bytes <= s->hub->settings.buffer_max_bytes)
                        s->over_since = 0;
                /* Whoever feeds this stream in pages (a replay) wants to know
                 * when it has room again: early enough to fetch the next
                 * page while the rest of this one is written. */
                if (s->queue.bytes <= s->drain_below && s->drain_cb && !s->finishing)
                        s->drain_cb(s, s->drain_userdata);
                return (ssize_t) n;
        }
        if (s->finishing)
                return MHD_CONTENT_READER_END_OF_STREAM;
        return http_stream_wait(s->req);
}

static void on_response_free(void *cls) {
        Stream *s = cls;

        s->response_alive = false;
        stream_maybe_free(s);
}

static void on_request_end(HttpRequest *req, void *userdata) {
        Stream *s = userdata;
        StreamCloseCallback cb = s->close_cb;

        hub_unlink(s->hub, s);
        s->req = NULL;
        s->close_cb = NULL;
        s->drain_cb = NULL;
        if (cb)
                cb(s, s->close_userdata);
        stream_maybe_free(s);
}

static void stream_wake(Stream *s) {
        if (s->req)
                http_stream_wake(s->req);
}

/* The client does not keep up: what it has not been sent goes (it resumes
 * from its last id), it gets "reconnect", and its connection is shut if it
 * does not take even that in time (on_slow_check()). */
static void stream_cut(Stream *s, const char *reason) {
        queue_drop_unsent(&s->queue);
        s->cut_at = now_usec(CLOCK_MONOTONIC);
        s->hub->cut++;
        stream_end_with_reconnect(s, reason);
}

static bool stream_too_slow(const Stream *s, usec_t now) {
        return s->over_since > 0 && now - s->over_since >= s->hub->settings.slow_timeout_usec;
}

int stream_send_frame(Stream *s, Frame *f) {
        const StreamSettings *st;
        usec_t now;
        int r;

        assert(s && f);

        if (!s->req || s->finishing)
                return -EPIPE;
        st = &s->hub->settings;
        now = now_usec(CLOCK_MONOTONIC);
        if (s->queue.bytes + f->size > st->buffer_hard_max_bytes || s->queue.count >= STREAM_FRAMES_MAX) {
                stream_cut(s, "too slow: its backlog reached the limit");
                return -ENOBUFS;
        }
        if (s->queue.bytes > st->buffer_max_bytes && s->over_since == 0)
                s->over_since = now;
        if (stream_too_slow(s, now)) {
                stream_cut(s, "too slow: behind for longer than STREAM_SLOW_TIMEOUT");
                return -ENOBUFS;
        }
        r = queue_push(&s->queue, f);
        if (r < 0)
                return r;
        if (s->queue.bytes > st->buffer_max_bytes && s->over_since == 0)
                s->over_since = now;
        s->last_write = now;
        stream_wake(s);
        return 0;
}

int stream_send_event(Stream *s, const char *id, const char *event, const char *data) {
        assert(s && data);

        Frame *f = sse_frame_event(id, event, data);
        int r;

        if (!f)
                return -ENOMEM;
        r = stream_send_frame(s, f);
        frame_unref(f);
        return r;
}

size_t stream_queued_bytes(const Stream *s) {
        assert(s);

        return s->queue.bytes;
}

void stream_set_drain_callback(Stream *s, size_t below_bytes, StreamDrainCallback cb, void *userdata) {
        assert(s);

        s->drain_below = below_bytes;
        s->drain_cb = cb;
        s->drain_userdata = userdata;
}

void stream_finish(Stream *s) {
        assert(s);

        if (!s->req)
                return;
        s->finishing = true;
        stream_wake(s);
}

void stream_end_with_reconnect(Stream *s, const char *reason) {
        _cleanup_free_ char *data = NULL;
        Frame *f;
        json_t *j;

        assert(s && reason);

        if (!s->req || s->finishing)
                return;
        s->hub->told_to_reconnect++;
        j = json_pack("{s:s}", "reason", reason);
        data = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        f = sse_frame_event(NULL, "reconnect", data ? data : "{}");
        /* Past the buffer limit on purpose: this is the stream's last word. */
        if (!f || queue_push(&s->queue, f) < 0)
                log_debug("Failed to queue the reconnect event; ending the stream without it.");
        frame_unref(f);
        stream_finish(s);
}

static int by_backlog_descending(const void *a, const void *b) {
        size_t x = (*(Stream *const *) a)->queue.bytes, y = (*(Stream *const *) b)->queue.bytes;

        return x < y ? 1 : x > y ? -1 : 0;
}

/* Over the backlog bound for all streams together: the streams furthest
 * behind (they pin the oldest frames) are cut until it holds again. Rare,
 * so the sort is fine. */
static void enforce_backlog(StreamHub *hub) {
        _cleanup_free_ Stream **behind = NULL;
        size_t n = 0, cut = 0;

        if (hub->backlog_bytes <= hub->settings.backlog_max_bytes)
                return;
        behind = calloc(hub->n_streams, sizeof(Stream *));
        if (!behind)
                return;         /* next second */
        LIST_FOREACH(s, &hub->streams, Stream, in_hub)
                if (!s->finishing && s->queue.bytes > 0)
                        behind[n++] = s;
        qsort(behind, n, sizeof(Stream *), by_backlog_descending);
        for (size_t i = 0; i < n && hub->backlog_bytes > hub->settings.backlog_max_bytes; i++, cut++)
                stream_cut(behind[i], "too slow: the streams' backlog reached MAX_STREAM_BACKLOG_BYTES");
        log_warning("The streams' backlog went past MAX_STREAM_BACKLOG_BYTES (%zu bytes); cut the %zu "
                    "furthest behind.", hub->settings.backlog_max_bytes, cut);
}

/* Streams that stayed behind too long without being sent anything new,
 * cut ones that do not read even their "reconnect", and the backlog of
 * all of them together. */
static int on_slow_check(sd_event_source *source, uint64_t usec, void *userdata) {
        StreamHub *hub = userdata;
        usec_t now;

        enforce_backlog(hub);
        /* After: a stream it just cut has its cut_at from now on. */
        now = now_usec(CLOCK_MONOTONIC);
        LIST_FOREACH(s, &hub->streams, Stream, in_hub) {
                if (!s->finishing && stream_too_slow(s, now))
                        stream_cut(s, "too slow: behind for longer than STREAM_SLOW_TIMEOUT");
                else if (s->cut_at > 0 && s->req && now >= s->cut_at &&
                         now - s->cut_at >= hub->settings.slow_timeout_usec) {
                        s->cut_at = 0;
                        http_stream_abort(s->req);
                }
        }
        if (event_timer_arm(source, USEC_PER_SEC) < 0)
                log_error("Failed to re-arm the slow stream check.");
        return 0;
}

/* Heartbeats for streams that were quiet for a whole interval. */
static int on_heartbeat(sd_event_source *source, uint64_t usec, void *userdata) {
        StreamHub *hub = userdata;
        usec_t now = now_usec(CLOCK_MONOTONIC), interval = hub->settings.heartbeat_interval_usec;

        LIST_FOREACH(s, &hub->streams, Stream, in_hub) {
                if (s->finishing || now - s->last_write < interval)
                        continue;
                if (queue_push(&s->queue, hub->heartbeat) >= 0) {
                        s->last_write = now;
                        stream_wake(s);
                }
        }
        if (event_timer_arm(source, interval) < 0)
                log_error("Failed to re-arm the stream heartbeat timer.");
        return 0;
}

int stream_last_event_id(const HttpRequest *req, bool *ret_present, uint64_t *ret_id) {
        assert(req && ret_present && ret_id);

        const char *s = http_request_header(req, "Last-Event-ID");
        uint64_t id = 0;

        if (!s)
                s = http_request_query(req, "lastEventId");
        if (s && (parse_uint64(s, &id) < 0 || id > INT64_MAX))
                return -EINVAL;
        *ret_present = s != NULL;
        *ret_id = id;
        return 0;
}

int stream_open(StreamHub *hub, HttpRequest *req, StreamCloseCallback close_cb, void *userdata,
                Stream **ret) {
        char retry[40];
        Frame *hint;
        Stream *s;
        int r;

        assert(hub && req && ret);

        s = calloc(1, sizeof(Stream));
        if (!s)
                return -ENOMEM;
        *s = (Stream) {
                .hub = hub, .req = req, .response_alive = true,
                .close_cb = close_cb, .close_userdata = userdata,
                .last_write = now_usec(CLOCK_MONOTONIC),
                .queue = { .backlog = &hub->backlog_bytes },
        };
        snprintf(retry, sizeof(retry), "retry: %" PRIu64 "\n\n",
                 hub->settings.retry_hint_usec / USEC_PER_MSEC);
        hint = frame_new(retry, strlen(retry));
        r = hint ? queue_push(&s->queue, hint) : -ENOMEM;
        frame_unref(hint);
        if (r < 0) {
                queue_done(&s->queue);
                free(s);
                return r;
        }
        list_append(&hub->streams, &s->in_hub);
        hub->n_streams++;

        http_request_on_end(req, on_request_end, s);
        /* From here MHD owns the reader; on failure it already called
         * on_response_free, and on_request_end follows with the request. */
        http_respond_stream(req, "text/event-stream", on_read, s, on_response_free);
        if (hub->refuse_reason)
                stream_end_with_reconnect(s, hub->refuse_reason);
        *ret = s;
        return 0;
}

int stream_hub_new(sd_event *event, const StreamSettings *settings, StreamHub **ret) {
        StreamHub *hub = calloc(1, sizeof(StreamHub));
        int r;

        assert(event && settings && ret);

        if (!hub)
                return -ENOMEM;
        list_init(&hub->streams);
        hub->event = sd_event_ref(event);
        hub->settings = *settings;
        hub->heartbeat = sse_frame_comment("heartbeat");
        if (!hub->heartbeat) {
                stream_hub_free(hub);
                return -ENOMEM;
        }
        r = sd_event_add_time_relative(event, &hub->heartbeat_timer, CLOCK_MONOTONIC,
                                       settings->heartbeat_interval_usec, USEC_PER_SEC,
                                       on_heartbeat, hub);
        if (r >= 0)
                r = sd_event_add_time_relative(event, &hub->slow_timer, CLOCK_MONOTONIC, USEC_PER_SEC,
                                               100 * USEC_PER_MSEC, on_slow_check, hub);
        if (r < 0) {
                stream_hub_free(hub);
                return r;
        }
        *ret = hub;
        return 0;
}

StreamHub *stream_hub_free(StreamHub *hub) {
        if (!hub)
                return NULL;
        assert(hub->n_streams == 0 && list_empty(&hub->streams));
        sd_event_source_disable_unref(hub->heartbeat_timer);
        sd_event_source_disable_unref(hub->slow_timer);
        sd_event_unref(hub->event);
        frame_unref(hub->heartbeat);
        free(hub->refuse_reason);
        return mfree(hub);
}

void stream_hub_set_settings(StreamHub *hub, const StreamSettings *settings) {
        assert(hub && settings);

        hub->settings = *settings;
}

sd_event *stream_hub_event(StreamHub *hub) {
        assert(hub);

        return hub->event;
}

size_t stream_hub_backlog_bytes(const StreamHub *hub) {
        assert(hub);

        return hub->backlog_bytes;
}

uint64_t stream_hub_told_to_reconnect(const StreamHub *hub) {
        assert(hub);

        return hub->told_to_reconnect;
}

uint64_t stream_hub_cut(const StreamHub *hub) {
        assert(hub);

        return hub->cut;
}

size_t stream_hub_count(const StreamHub *hub) {
        assert(hub);

        return hub->n_streams;
}

void stream_hub_refuse_new(StreamHub *hub, const char *reason) {
        assert(hub && reason);

        if (!hub->refuse_reason)
                hub->refuse_reason = strdup(reason);    /* NULL: streams just run */
}

void stream_hub_end_all(StreamHub *hub, const char *reason) {
        assert(hub && reason);

        LIST_FOREACH_SAFE(s, next, &hub->streams, Stream, in_hub)
                stream_end_with_reconnect(s, reason);
}
