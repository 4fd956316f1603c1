/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "lifecycle-notify.h"
#include "lifecycle-status.h"
#include "lifecycle.h"
#include "log.h"
#include "parse-util.h"

static const char *const state_names[_LIFECYCLE_STATE_MAX] = {
        [LIFECYCLE_STARTING] = "starting",
        [LIFECYCLE_READY] = "ready",
        [LIFECYCLE_DEGRADED] = "degraded",
        [LIFECYCLE_RELOADING] = "reloading",
        [LIFECYCLE_DRAINING] = "draining",
        [LIFECYCLE_FAILED] = "failed",
};

const char *lifecycle_state_name(LifecycleState state) {
        assert(state >= 0 && state < _LIFECYCLE_STATE_MAX);

        return state_names[state];
}

static bool running(LifecycleState s) {
        return s == LIFECYCLE_READY || s == LIFECYCLE_DEGRADED;
}

static HealthPhase phase_of(LifecycleState s) {
        switch (s) {
        case LIFECYCLE_STARTING:
        case LIFECYCLE_FAILED:
                return HEALTH_STARTING;
        case LIFECYCLE_DRAINING:
                return HEALTH_STOPPING;
        default:
                return HEALTH_RUNNING;
        }
}

static bool transition_valid(LifecycleState from, LifecycleState to) {
        if (from == to)
                return true;
        switch (to) {
        case LIFECYCLE_READY:
        case LIFECYCLE_DEGRADED:
                return from == LIFECYCLE_STARTING || running(from) || from == LIFECYCLE_RELOADING;
        case LIFECYCLE_RELOADING:
                return running(from);   /* before READY=1 a reload announces nothing */
        case LIFECYCLE_DRAINING:
                return from != LIFECYCLE_FAILED;
        case LIFECYCLE_FAILED:
                return from == LIFECYCLE_STARTING;
        default:
                return false;           /* nothing goes back to starting */
        }
}

LifecycleEffects lifecycle_effects(LifecycleState from, LifecycleState to) {
        LifecycleEffects e = { .valid = transition_valid(from, to), .phase = phase_of(to) };

        if (!e.valid) {
                e.phase = phase_of(from);
                return e;
        }
        if (from == to)
                return e;
        /* READY=1 once started, and again after a reload (systemd waits for
         * it after RELOADING=1); not between ready and degraded, which
         * systemd does not track. */
        e.notify_ready = running(to) && (from == LIFECYCLE_STARTING || from == LIFECYCLE_RELOADING);
        e.notify_reloading = to == LIFECYCLE_RELOADING;
        e.notify_stopping = to == LIFECYCLE_DRAINING;
        e.http_ready = running(to) && from == LIFECYCLE_STARTING;
        e.http_drain = to == LIFECYCLE_DRAINING;
        return e;
}

struct Lifecycle {
        HttpServer *http;
        Health *health;
        char *listen;
        char *color;
        char *status_path;              /* NULL: no status file */
        char *status_tmp_path;
        bool status_file_failed;        /* said once */

        LifecycleState state;
        char detail[256];
        LifecycleCounts counts;         /* the last given, not_ready_reason copied */
        char not_ready_reason[256];
        char status[256];               /* last STATUS= sent */
};

int lifecycle_new(HttpServer *http, Health *health, const char *listen, const char *color,
                  const char *status_dir, Lifecycle **ret) {
        _cleanup_(lifecycle_freep) Lifecycle *l = NULL;

        assert(http && health && ret);

        l = calloc(1, sizeof(Lifecycle));
        if (!l)
                return -ENOMEM;
        l->http = http;
        l->health = health;
        l->state = LIFECYCLE_STARTING;
        l->listen = strdup(strempty(listen));
        l->color = strdup(strempty(color));
        if (!l->listen || !l->color)
                return -ENOMEM;
        if (!isempty(status_dir) &&
            (asprintf(&l->status_path, "%s/status", status_dir) < 0 ||
             asprintf(&l->status_tmp_path, "%s/.status.tmp", status_dir) < 0))
                return -ENOMEM;
        *ret = TAKE_PTR(l);
        return 0;
}

Lifecycle *lifecycle_free(Lifecycle *l) {
        if (!l)
                return NULL;
        /* Gone with the process: nobody must read a stale one as current. */
        if (l->status_path && unlink(l->status_path) < 0 && errno != ENOENT)
                log_debug_errno(errno, "Failed to remove %s, ignoring: %m", l->status_path);
        free(l->listen);
        free(l->color);
        free(l->status_path);
        free(l->status_tmp_path);
        return mfree(l);
}

LifecycleState lifecycle_state(const Lifecycle *l) {
        assert(l);

        return l->state;
}

bool lifecycle_running(const Lifecycle *l) {
        assert(l);

        return running(l->state);
}

/* --- STATUS= --- */

static void format_status(const Lifecycle *l, char *buf, size_t size) {
        const LifecycleCounts *c = &l->counts;
        char d[FORMAT_DURATION_MAX];

        switch (l->state) {
        case LIFECYCLE_STARTING:
                snprintf(buf, size, "Starting: %.230s", l->detail);
                break;
        case LIFECYCLE_FAILED:
                snprintf(buf, size, "Failed: %.230s", l->detail);
                break;
        case LIFECYCLE_RELOADING:
                snprintf(buf, size, "Reloading configuration");
                break;
        case LIFECYCLE_DRAINING:
                format_duration(d, sizeof(d), c->draining_for / USEC_PER_SEC * USEC_PER_SEC);
                snprintf(buf, size, "Draining for %s: %" PRIu64 " request(s), %zu stream(s), %" PRIu64
                         " connection(s) left", d, c->http.active_requests, c->streams,
                         c->http.active_connections);
                break;
        default: {
                RunningStatus rs = {
                        .listen = l->listen,
                        .color = l->color,
                        .ready = l->state == LIFECYCLE_READY,
                        .not_ready_reason = l->not_ready_reason,
                        .counters = c->http,
                };
                status_format_running(&rs, buf, size);
        }
        }
}

/* --- the status file --- */

static int write_status_file(const Lifecycle *l) {
        const LifecycleCounts *c = &l->counts;
        _cleanup_free_ char *text = NULL;
        ssize_t n;
        int fd, r;

        r = asprintf(&text,
                     "PID=%d\n"
                     "STATE=%s\n"
                     "UPDATED_USEC=%" PRIu64 "\n"
                     "REQUESTS=%" PRIu64 "\n"
                     "STREAMS=%zu\n"
                     "CONNECTIONS=%" PRIu64 "\n"
                     "SERVED=%" PRIu64 "\n"
                     "STREAMS_RESUMED=%" PRIu64 "\n"
                     "STREAMS_TOLD_TO_RECONNECT=%" PRIu64 "\n"
                     "EVENTS_REPLAYED=%" PRIu64 "\n"
                     "PUBLISH_FAILURES=%" PRIu64 "\n"
                     "DRAINING_FOR_USEC=%" PRIu64 "\n",
                     (int) getpid(), lifecycle_state_name(l->state), now_usec(CLOCK_REALTIME),
                     c->http.active_requests, c->streams, c->http.active_connections,
                     c->http.requests_total, c->streams_resumed, c->streams_told_to_reconnect,
                     c->events_replayed, c->publish_failures,
                     l->state == LIFECYCLE_DRAINING ? c->draining_for : 0);
        if (r < 0)
                return -ENOMEM;
        /* Written aside and renamed over: a reader sees the old file or the
         * new one, never half of one. */
        fd = open(l->status_tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        n = write(fd, text, strlen(text));
        r = n < 0 ? -errno : (size_t) n != strlen(text) ? -EIO : 0;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(l->status_tmp_path, l->status_path) < 0)
                r = -errno;
        return r;
}

void lifecycle_set_counts(Lifecycle *l, const LifecycleCounts *counts) {
        assert(l && counts);

        l->counts = *counts;
        snprintf(l->not_ready_reason, sizeof(l->not_ready_reason), "%s", strempty(counts->not_ready_reason));
        l->counts.not_ready_reason = NULL;
}

void lifecycle_refresh(Lifecycle *l, const LifecycleCounts *counts) {
        char text[sizeof(l->status)];
        int r;

        assert(l);

        if (counts)
                lifecycle_set_counts(l, counts);
        format_status(l, text, sizeof(text));
        /* Only changes reach systemd: health rounds repeat themselves. */
        if (!streq(text, l->status)) {
                snprintf(l->status, sizeof(l->status), "%s", text);
                notify_status("%s", text);
        }
        if (!l->status_path)
                return;
        r = write_status_file(l);
        if (r < 0 && !l->status_file_failed)
                log_warning_errno(r, "Failed to write the status file %s; baton-deploy sees the counts "
                                  "as unknown: %m", l->status_path);
        l->status_file_failed = r < 0;
}

int lifecycle_set(Lifecycle *l, LifecycleState to, const char *detail) {
        LifecycleState from;
        LifecycleEffects e;

        assert(l && to >= 0 && to < _LIFECYCLE_STATE_MAX);

        from = l->state;
        e = lifecycle_effects(from, to);
        if (!e.valid) {
                log_error("Lifecycle: no transition from %s to %s (bug); staying %s.",
                          lifecycle_state_name(from), lifecycle_state_name(to), lifecycle_state_name(from));
                return -EPERM;
        }
        /* The state first: the effects' callbacks (the health phase's) see
         * where we are going. */
        l->state = to;
        snprintf(l->detail, sizeof(l->detail), "%s", strempty(detail));
        if (e.notify_reloading)
                notify_reloading();
        if (e.notify_stopping)
                notify_stopping();
        if (e.http_drain)
                http_server_begin_drain(l->http);
        if (e.http_ready)
                http_server_set_ready(l->http, true);
        health_set_phase(l->health, e.phase, to == LIFECYCLE_STARTING ? detail : NULL);
        lifecycle_refresh(l, NULL);
        /* Last: by READY=1 the status already says where we serve. */
        if (e.notify_ready)
                notify_ready();
        return 0;
}
