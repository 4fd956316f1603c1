/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>

#include "loop-util.h"
#include "log.h"
#include "parse-util.h"
#include "sse-ticker.h"

#define DEFAULT_DURATION_SEC 60

typedef struct TestStream {
        Stream *stream;
        sd_event_source *timer;
        uint64_t tick;                  /* last tick sent */
        uint64_t total;
        char color[40];
} TestStream;

static void test_stream_free(TestStream *t) {
        sd_event_source_disable_unref(t->timer);
        free(t);
}

static void on_close(Stream *stream, void *userdata) {
        test_stream_free(userdata);
}

static int on_tick(sd_event_source *source, uint64_t usec, void *userdata) {
        TestStream *t = userdata;
        char id[24], data[128];
        int r;

        t->tick++;
        snprintf(id, sizeof(id), "%" PRIu64, t->tick);
        snprintf(data, sizeof(data), "{\"tick\":%" PRIu64 ",\"of\":%" PRIu64 ",\"color\":\"%s\"}",
                 t->tick, t->total, t->color);
        r = stream_send_event(t->stream, id, "tick", data);
        if (r == -EPIPE || r == -ENOBUFS)
                return 0;       /* the stream is ending; on_close frees us */
        if (r < 0) {
                /* Could not queue the tick: end rather than go silent. */
                stream_end_with_reconnect(t->stream, "internal error");
                return 0;
        }
        if (t->tick >= t->total) {
                if (stream_send_event(t->stream, NULL, "end", "{}") >= 0)
                        stream_finish(t->stream);
                (void) sd_event_source_set_enabled(source, SD_EVENT_OFF);
                return 0;
        }
        if (event_timer_arm(source, USEC_PER_SEC) < 0)
                stream_end_with_reconnect(t->stream, "internal timer failure");
        return 0;
}

/* Parses an optional unsigned query/header value; false when malformed. */
static bool parse_optional(const char *s, uint64_t *ret) {
        return !s || parse_uint64(s, ret) == 0;
}

void sse_ticker_handle(StreamHub *hub, HttpRequest *req, usec_t max_duration_usec,
                        const char *color) {
        uint64_t duration = DEFAULT_DURATION_SEC, last_id;
        uint64_t max_sec = max_duration_usec / USEC_PER_SEC;
        bool has_last;
        TestStream *t;
        int r;

        assert(hub && req);

        if (!parse_optional(http_request_query(req, "duration"), &duration) ||
            duration < 1 || duration > max_sec) {
                http_respond_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                                   "duration must be a whole number of seconds from 1 to %" PRIu64,
                                   max_sec);
                return;
        }
        if (stream_last_event_id(req, &has_last, &last_id) < 0 || last_id >= duration) {
                http_respond_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                                   "Last-Event-ID must be a tick id below the duration");
                return;
        }

        t = calloc(1, sizeof(TestStream));
        if (!t) {
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        t->tick = last_id;
        t->total = duration;
        snprintf(t->color, sizeof(t->color), "%s", strempty(color));
        r = sd_event_add_time_relative(stream_hub_event(hub), &t->timer, CLOCK_MONOTONIC,
                                       USEC_PER_SEC, 10 * USEC_PER_MSEC, on_tick, t);
        if (r < 0) {
                test_stream_free(t);
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                                   "cannot start the stream timer");
                return;
        }
        r = stream_open(hub, req, on_close, t, &t->stream);
        if (r < 0) {
                test_stream_free(t);
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
        }
}
