/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>

#include "lifecycle-drain.h"
#include "loop-util.h"
#include "log.h"
#include "lifecycle-notify.h"
#include "parse-util.h"

/* How often progress is reported and systemd's stop timeout extended. */
#define DRAIN_TICK_USEC (1 * USEC_PER_SEC)
/* Each extension covers a few missed ticks, no more: if batond hangs,
 * systemd's own timeout takes over soon after. */
#define DRAIN_EXTEND_USEC (5 * USEC_PER_SEC)
/* Once no request or stream is left, idle keep-alive connections get this
 * long to close by themselves. Closing them ourselves races with a client
 * that is just sending a request on one (it would get no answer); clients
 * that are active receive "Connection: close" within this time and hang
 * up, so only connections idle for the whole grace are closed by us. */
#define DRAIN_IDLE_GRACE_USEC (1 * USEC_PER_SEC)
/* ... and after SIGINT, which says "go now": a restart of the single
 * instance (whose unit stops it with SIGINT) waits for this before its
 * successor starts and takes the connections queued meanwhile. */
#define DRAIN_FAST_IDLE_GRACE_USEC (250 * USEC_PER_MSEC)
/* On a forced end, time for the streams' final events to be written. */
#define DRAIN_FLUSH_USEC (100 * USEC_PER_MSEC)

struct Drain {
        sd_event *event;
        HttpServer *http;
        StreamHub *streams;
        usec_t shutdown_timeout_usec;
        usec_t drain_timeout_usec;

        bool active;
        bool finished;
        bool streams_ended;
        DrainMode mode;
        usec_t started;
        usec_t idle_since;              /* no request or stream left since; 0: busy */
        sd_event_source *tick;
        sd_event_source *finish_source;
        bool forced;

        DrainDoneCallback cb;
        void *userdata;
};

static int on_finish(sd_event_source *source, uint64_t usec, void *userdata) {
        Drain *d = userdata;

        d->cb(d, d->forced, d->userdata);
        return 0;
}

static void end_streams(Drain *d, const char *reason);

/* Reports from the loop, never from inside an MHD callback: the callback
 * stops the HTTP server, which must not happen under MHD. A forced finish
 * first tells streams to reconnect and waits a moment, so that those
 * final events get a chance to leave before the connections close. */
static void finish(Drain *d, bool forced) {
        usec_t delay = 0;

        if (d->finished)
                return;
        d->finished = true;
        d->forced = forced;
        (void) sd_event_source_set_enabled(d->tick, SD_EVENT_OFF);
        if (forced && stream_hub_count(d->streams) > 0) {
                end_streams(d, "shutting down now");
                delay = DRAIN_FLUSH_USEC;
        }
        if (sd_event_add_time_relative(d->event, &d->finish_source, CLOCK_MONOTONIC, delay,
                                       USEC_PER_MSEC, on_finish, d) < 0)
                d->cb(d, forced, d->userdata);  /* no memory left: finish inline */
}

static void end_streams(Drain *d, const char *reason) {
        size_t n = stream_hub_count(d->streams);

        if (d->streams_ended)
                return;
        d->streams_ended = true;
        if (n > 0)
                log_info("Telling %zu stream(s) to reconnect: %s.", n, reason);
        stream_hub_end_all(d->streams, reason);
}

static usec_t idle_grace(const Drain *d) {
        return d->mode == DRAIN_FAST ? DRAIN_FAST_IDLE_GRACE_USEC : DRAIN_IDLE_GRACE_USEC;
}

void drain_check(Drain *d) {
        usec_t now, elapsed;
        HttpCounters c;

        assert(d);

        if (!d->active || d->finished)
                return;
        c = http_server_counters(d->http);
        now = now_usec(CLOCK_MONOTONIC);
        if (c.active_requests == 0 && stream_hub_count(d->streams) == 0) {
                if (d->idle_since == 0) {
                        d->idle_since = now;
                        /* Look again when the grace ends, not at the next
                         * tick: a restart waits for this. */
                        if (d->tick && event_timer_arm(d->tick, idle_grace(d)) < 0)
                                log_error("Failed to re-arm the drain timer.");
                }
                if (c.active_connections == 0 || now - d->idle_since >= idle_grace(d)) {
                        log_info("Drained: no request or stream left; closing %" PRIu64
                                 " idle connection(s).", c.active_connections);
                        finish(d, false);
                }
                return;
        }
        d->idle_since = 0;
        elapsed = now - d->started;
        if (!d->streams_ended && d->drain_timeout_usec > 0 && elapsed >= d->drain_timeout_usec)
                end_streams(d, "drain timeout; reconnect to another instance");
        if (c.active_requests > 0 && elapsed >= d->shutdown_timeout_usec) {
                log_warning("SHUTDOWN_TIMEOUT passed with %" PRIu64 " request(s) in flight; "
                            "exiting without them.", c.active_requests);
                finish(d, true);
        }
}

static int on_tick(sd_event_source *source, uint64_t usec, void *userdata) {
        Drain *d = userdata;

        drain_check(d);
        if (d->finished)
                return 0;
        notify_extend_timeout(DRAIN_EXTEND_USEC);
        /* While only idle connections are left, look again when their grace ends. */
        if (event_timer_arm(source, d->idle_since ? idle_grace(d) / 4 : DRAIN_TICK_USEC) < 0)
                log_error("Failed to re-arm the drain timer.");
        return 0;
}

int drain_new(sd_event *event, HttpServer *http, StreamHub *streams, Drain **ret) {
        Drain *d = calloc(1, sizeof(Drain));

        assert(event && http && streams && ret);

        if (!d)
                return -ENOMEM;
        d->event = sd_event_ref(event);
        d->http = http;
        d->streams = streams;
        *ret = d;
        return 0;
}

Drain *drain_free(Drain *d) {
        if (!d)
                return NULL;
        sd_event_source_disable_unref(d->tick);
        sd_event_source_disable_unref(d->finish_source);
        sd_event_unref(d->event);
        return mfree(d);
}

void drain_set_timeouts(Drain *d, usec_t shutdown_timeout_usec, usec_t drain_timeout_usec) {
        assert(d);

        d->shutdown_timeout_usec = shutdown_timeout_usec;
        d->drain_timeout_usec = drain_timeout_usec;
}

bool drain_active(const Drain *d) {
        assert(d);

        return d->active;
}

void drain_begin(Drain *d, DrainMode mode, DrainDoneCallback cb, void *userdata) {
        assert(d);

        char a[FORMAT_DURATION_MAX], b[FORMAT_DURATION_MAX];
        HttpCounters c = http_server_counters(d->http);

        if (d->active) {
                log_warning("Second stop signal: exiting now with %" PRIu64 " request(s) and %zu "
                            "stream(s) open.", c.active_requests, stream_hub_count(d->streams));
                finish(d, true);
                return;
        }
        d->active = true;
        d->mode = mode;
        d->cb = cb;
        d->userdata = userdata;
        d->started = now_usec(CLOCK_MONOTONIC);

        log_info("Draining (%s): %" PRIu64 " request(s), %zu stream(s) open; requests get %s, "
                 "streams %s.", mode == DRAIN_FAST ? "SIGINT, streams end now" : "SIGTERM",
                 c.active_requests, stream_hub_count(d->streams),
                 format_duration(a, sizeof(a), d->shutdown_timeout_usec),
                 mode == DRAIN_FAST ? "none" : d->drain_timeout_usec == 0 ? "for ever"
                 : format_duration(b, sizeof(b), d->drain_timeout_usec));
        /* No new long-lived work on an instance that is going away. */
        stream_hub_refuse_new(d->streams, "shutting down; reconnect to another instance");
        if (mode == DRAIN_FAST)
                end_streams(d, "shutting down; reconnect to another instance");

        if (sd_event_add_time_relative(d->event, &d->tick, CLOCK_MONOTONIC, DRAIN_TICK_USEC,
                                       10 * USEC_PER_MSEC, on_tick, d) < 0)
                log_error("Failed to start the drain timer; the drain ends on the next request.");
        notify_extend_timeout(DRAIN_EXTEND_USEC);
        drain_check(d);
}

usec_t drain_elapsed(const Drain *d) {
        assert(d);

        return d->active ? now_usec(CLOCK_MONOTONIC) - d->started : 0;
}
