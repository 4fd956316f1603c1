/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "loop-util.h"
#include "log.h"
#include "lifecycle-notify.h"
#include "parse-util.h"
#include "lifecycle-watchdog.h"

static const char probe_request[] =
        "GET /_/health/live HTTP/1.1\r\nHost: batond-watchdog\r\nConnection: close\r\n\r\n";

struct Watchdog {
        sd_event *event;
        HttpServer *http;
        usec_t interval_usec;           /* a third of WATCHDOG_USEC */
        sd_event_source *timer;

        int probe_fd;                   /* our end of the socketpair, -1 when idle */
        sd_event_source *probe_source;
        char reply[64];
        size_t reply_len;
        unsigned failures;
};

static void probe_close(Watchdog *w) {
        w->probe_source = sd_event_source_disable_unref(w->probe_source);
        if (w->probe_fd >= 0)
                close(w->probe_fd);
        w->probe_fd = -1;
}

static void probe_result(Watchdog *w, bool ok, const char *why) {
        probe_close(w);
        if (ok) {
                if (w->failures > 0)
                        log_info("Watchdog self-probe succeeds again.");
                w->failures = 0;
                notify_watchdog();
                return;
        }
        /* No ping: if this persists past WatchdogSec, systemd acts. */
        w->failures++;
        log_warning("Watchdog self-probe failed (%u in a row): %s; not pinging.", w->failures, why);
}

static int on_probe_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Watchdog *w = userdata;
        ssize_t n;

        n = read(fd, w->reply + w->reply_len, sizeof(w->reply) - 1 - w->reply_len);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                probe_result(w, false, strerror(errno));
                return 0;
        }
        w->reply_len += (size_t) n;
        w->reply[w->reply_len] = '\0';
        /* The status line is all we need. */
        if (strchr(w->reply, '\n') || n == 0 || w->reply_len == sizeof(w->reply) - 1) {
                bool ok = strncmp(w->reply, "HTTP/1.1 200 ", 13) == 0;
                probe_result(w, ok, ok ? NULL : n == 0 && w->reply_len == 0
                             ? "connection closed without a reply" : "unexpected reply");
        }
        return 0;
}

static void probe_start(Watchdog *w) {
        int fds[2], r;

        /* The previous probe never answered in a whole interval: it fails,
         * and a new one goes at once. Waiting for the next turn instead
         * would lose two pings for one late probe, and pings a third of
         * WATCHDOG_USEC apart would then leave a gap of the whole interval:
         * systemd would kill a batond that answers again. */
        if (w->probe_fd >= 0)
                probe_result(w, false, "no reply within the watchdog interval");
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) {
                probe_result(w, false, strerror(errno));
                return;
        }
        w->probe_fd = fds[0];
        w->reply_len = 0;
        /* A socketpair buffer takes the small request at once. */
        if (write(fds[0], probe_request, sizeof(probe_request) - 1) != (ssize_t) sizeof(probe_request) - 1) {
                close(fds[1]);
                probe_result(w, false, "cannot write the probe request");
                return;
        }
        r = sd_event_add_io(w->event, &w->probe_source, fds[0], EPOLLIN, on_probe_io, w);
        if (r >= 0)
                r = sd_event_source_set_priority(w->probe_source, SD_EVENT_PRIORITY_IMPORTANT);
        if (r < 0) {
                close(fds[1]);
                probe_result(w, false, strerror(-r));
                return;
        }
        r = http_server_add_connection(w->http, fds[1]);
        if (r < 0)
                probe_result(w, false, "the HTTP server did not take the connection");
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Watchdog *w = userdata;

        probe_start(w);
        if (event_timer_arm(source, w->interval_usec) < 0)
                log_error("Failed to re-arm the watchdog timer.");
        return 0;
}

int watchdog_new(sd_event *event, HttpServer *http, Watchdog **ret) {
        Watchdog *w = calloc(1, sizeof(Watchdog));

        assert(event && http && ret);

        if (!w)
                return -ENOMEM;
        w->event = sd_event_ref(event);
        w->http = http;
        w->probe_fd = -1;
        *ret = w;
        return 0;
}

Watchdog *watchdog_free(Watchdog *w) {
        if (!w)
                return NULL;
        probe_close(w);
        sd_event_source_disable_unref(w->timer);
        sd_event_unref(w->event);
        return mfree(w);
}

int watchdog_start(Watchdog *w) {
        usec_t usec = notify_watchdog_usec();
        char buf[FORMAT_DURATION_MAX];
        int r;

        assert(w);

        if (usec == 0 || w->timer)
                return 0;
        /* A third, not systemd's suggested half: one probe that fails (or
         * is late) still leaves a ping within the interval, and a working
         * one pings well within half an interval of the last. */
        w->interval_usec = usec / 3;
        notify_watchdog();
        r = sd_event_add_time_relative(w->event, &w->timer, CLOCK_MONOTONIC, w->interval_usec,
                                       10 * USEC_PER_MSEC, on_timer, w);
        if (r < 0)
                return r;
        /* A flood keeps the loop busy with ordinary work; a probe that
         * waited behind all of it would measure the queue, not whether
         * requests are served. */
        r = sd_event_source_set_priority(w->timer, SD_EVENT_PRIORITY_IMPORTANT);
        if (r < 0)
                return r;
        log_info("Watchdog enabled: self-probe and ping every %s.",
                 format_duration(buf, sizeof(buf), w->interval_usec));
        return 0;
}
