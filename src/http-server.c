/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "http-internal.h"
#include "log.h"
#include "loop-util.h"

/* --- event loop integration --- */

/* How late MHD's timeouts may fire. They are connection timeouts, in
 * seconds, so being late by this much does not matter; what matters is
 * that re-arming after every pass leaves the loop's timerfd alone while
 * the deadline stays within this window: with an exact deadline, sd-event
 * re-armed it on every pass, and under load timerfd_settime() took a
 * fifth of batond's CPU. */
#define HTTP_TIMER_ACCURACY_USEC (100 * USEC_PER_MSEC)

static void listener_rearm_timer(HttpListener *l) {
        MHD_UNSIGNED_LONG_LONG timeout_ms;
        int r;

        if (MHD_get_timeout(l->daemon, &timeout_ms) != MHD_YES)
                r = sd_event_source_set_enabled(l->timer_source, SD_EVENT_OFF);
        else if (timeout_ms == 0) {
                /* MHD has work left now (pipelined requests, a resumed
                 * connection): a later turn runs it, not a timer. */
                r = sd_event_source_set_enabled(l->timer_source, SD_EVENT_OFF);
                if (r >= 0)
                        r = sd_event_source_set_enabled(l->server->again_source, SD_EVENT_ONESHOT);
        } else
                r = event_timer_arm(l->timer_source, (usec_t) timeout_ms * USEC_PER_MSEC);
        if (r < 0)
                log_error_errno(r, "Failed to re-arm HTTP timer for %s: %m", l->address);
}

static void listener_run(HttpListener *l) {
        if (MHD_run(l->daemon) != MHD_YES)
                log_debug("MHD_run() failed for %s.", l->address);
        /* Always re-arm: MHD's epoll is edge-triggered, and work it could not
         * finish in this pass is only signalled through the timeout. */
        listener_rearm_timer(l);
}

static int on_listener_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        listener_run(userdata);
        return 0;
}

static int on_listener_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        listener_run(userdata);
        return 0;
}

static int on_run(sd_event_source *source, void *userdata) {
        HttpServer *s = userdata;

        for (size_t i = 0; i < s->n_listeners; i++)
                listener_run(&s->listeners[i]);
        if (s->internal.daemon)
                listener_run(&s->internal);
        return 0;
}

void http_server_schedule_run(HttpServer *s) {
        assert(s);

        int r = sd_event_source_set_enabled(s->run_source, SD_EVENT_ONESHOT);
        /* -ESTALE: the loop has finished (shutdown resumes the last
         * suspended streams after it); nothing is left to run. */
        if (r < 0 && r != -ESTALE)
                log_error_errno(r, "Failed to schedule HTTP processing: %m");
}

/* Starts l's daemon on listen_fd, or with no listening socket at all when
 * listen_fd is -1 (connections come only from http_server_add_connection()),
 * and puts it on the loop. */
static int listener_start_daemon(HttpServer *s, HttpListener *l, int listen_fd, unsigned connection_limit) {
        const union MHD_DaemonInfo *info;
        size_t pool = HTTP_POOL_FOR(s->limits.max_header_bytes);
        unsigned timeout_sec = (unsigned) (s->limits.connection_timeout_usec / USEC_PER_SEC);
        unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_TURBO;
        struct MHD_OptionItem listen_options[] = {
                { listen_fd >= 0 ? MHD_OPTION_LISTEN_SOCKET : MHD_OPTION_END, listen_fd, NULL },
                { MHD_OPTION_END, 0, NULL },
        };
        int r;

        if (listen_fd < 0)
                flags |= MHD_USE_NO_LISTEN_SOCKET;
        l->server = s;
        l->daemon = MHD_start_daemon(
                flags, 0, NULL, NULL, http_on_access, s,
                MHD_OPTION_ARRAY, listen_options,
                MHD_OPTION_CONNECTION_LIMIT, connection_limit,
                MHD_OPTION_CONNECTION_TIMEOUT, timeout_sec,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
                MHD_OPTION_URI_LOG_CALLBACK, http_on_uri, l,
                MHD_OPTION_NOTIFY_COMPLETED, http_on_completed, s,
                MHD_OPTION_NOTIFY_CONNECTION, http_on_connection, s,
                MHD_OPTION_EXTERNAL_LOGGER, http_on_mhd_log, s,
                /* Not strict: MHD would refuse a missing Host and a space in
                 * the target itself, with its own page and, for the Host,
                 * its head twice (http-refusal.h). batond refuses both, as
                 * JSON (http_request_misframed()). */
                MHD_OPTION_STRICT_FOR_CLIENT, (int) 0,
                MHD_OPTION_SIGPIPE_HANDLED_BY_APP, (int) 1,
                MHD_OPTION_END);
        if (!l->daemon)
                return -EIO;

        info = MHD_get_daemon_info(l->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return -EIO;
        r = sd_event_add_io(s->event, &l->io_source, info->epoll_fd, EPOLLIN, on_listener_io, l);
        if (r < 0)
                return r;
        r = sd_event_add_time_relative(s->event, &l->timer_source, CLOCK_MONOTONIC, 0,
                                       HTTP_TIMER_ACCURACY_USEC, on_listener_timer, l);
        if (r < 0)
                return r;
        listener_rearm_timer(l);
        return 0;
}

static int listener_start(HttpServer *s, HttpListener *l, ListenSocket *sock) {
        int r;

        l->port = sock->port;
        l->metrics = sock->metrics;
        l->address = strdup(sock->address);
        if (!l->address)
                return -ENOMEM;
        r = listener_start_daemon(s, l, sock->fd,
                                  (unsigned) (s->limits.max_connections +
                                              HTTP_SHED_RESERVE(s->limits.max_connections)));
        if (l->daemon)
                sock->fd = -1;          /* the daemon owns it now */
        return r;
}

/* The watchdog's own way in (http_server_add_connection()): a daemon with
 * no listening socket, outside MAX_CONNECTIONS, serving the ops routes only.
 * Whoever fills the public sockets cannot starve the self-probe, and the
 * probe still crosses the same HTTP stack and handlers as everyone. */
static int internal_listener_start(HttpServer *s) {
        HttpListener *l = &s->internal;
        int r;

        l->internal = true;
        l->address = strdup("the internal socket");
        if (!l->address)
                return -ENOMEM;
        r = listener_start_daemon(s, l, -1, HTTP_INTERNAL_CONNECTIONS);
        if (r < 0)
                return r;
        /* Ahead of the public sockets' work, like the probe's other steps. */
        r = sd_event_source_set_priority(l->io_source, SD_EVENT_PRIORITY_IMPORTANT);
        if (r >= 0)
                r = sd_event_source_set_priority(l->timer_source, SD_EVENT_PRIORITY_IMPORTANT);
        return r;
}

static void listener_stop(HttpListener *l) {
        sd_event_source_disable_unref(l->io_source);
        sd_event_source_disable_unref(l->timer_source);
        if (l->daemon)
                MHD_stop_daemon(l->daemon);
        free(l->address);
}

static int make_request_id_prefix(char *buf, size_t size) {
        uint8_t bytes[6];

        if (getrandom(bytes, sizeof(bytes), 0) != (ssize_t) sizeof(bytes))
                return -errno;
        snprintf(buf, size, "%02x%02x%02x%02x%02x%02x", bytes[0], bytes[1], bytes[2], bytes[3],
                 bytes[4], bytes[5]);
        return 0;
}

/* Resumes the held requests (all of them, or those whose hold ran out):
 * http_on_access() then serves or refuses them. */
static size_t resume_held(HttpServer *s, bool all) {
        usec_t now = now_usec(CLOCK_MONOTONIC);
        size_t left = 0;

        LIST_FOREACH_SAFE(req, next, &s->suspended, HttpRequest, suspended) {
                if (!req->held)
                        continue;
                if (all || now - req->started_usec >= s->hold_until_ready_usec)
                        http_request_resume(req);
                else
                        left++;
        }
        return left;
}

static int on_hold_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        HttpServer *s = userdata;

        if (resume_held(s, false) > 0)
                http_server_arm_hold_timer(s);
        return 0;
}

void http_server_arm_hold_timer(HttpServer *s) {
        int enabled = SD_EVENT_OFF;

        if (sd_event_source_get_enabled(s->hold_timer, &enabled) >= 0 && enabled != SD_EVENT_OFF)
                return;
        if (event_timer_arm(s->hold_timer, HTTP_HOLD_CHECK_USEC) < 0)
                log_warning("Failed to arm the timer of requests held for readiness; they wait for it.");
}

int http_server_new(sd_event *event, ListenSet *sockets, const HttpLimits *limits,
                    const Route *routes, size_t n_routes, void *handler_userdata,
                    HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        int r;

        assert(event && sockets && limits && routes && ret);

        s = calloc(1, sizeof(HttpServer));
        if (!s)
                return log_oom();
        list_init(&s->suspended);
        s->hold_until_ready_usec = HTTP_HOLD_UNTIL_READY_USEC;
        list_init(&s->unseen);
        s->event = sd_event_ref(event);
        s->limits = *limits;
        s->routes = routes;
        s->n_routes = n_routes;
        s->handler_userdata = handler_userdata;
        s->public_ops = true;

        r = request_metrics_init(&s->metrics, routes, n_routes);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the request metrics: %m");
        r = make_request_id_prefix(s->request_id_prefix, sizeof(s->request_id_prefix));
        if (r < 0)
                return log_error_errno(r, "Failed to make a request id prefix: %m");

        r = event_defer_new(event, &s->run_source, on_run, s);
        if (r < 0)
                return log_error_errno(r, "Failed to set up HTTP processing: %m");
        /* A defer source stays pending from its creation on, so it sorts
         * before every other source of its priority each time it is
         * enabled: one that MHD re-enables after every pass under load
         * would starve the database's and the bus's sources. One step
         * below normal, it runs in every turn that has nothing else. */
        r = event_defer_new(event, &s->again_source, on_run, s);
        if (r >= 0)
                r = sd_event_source_set_priority(s->again_source, SD_EVENT_PRIORITY_NORMAL + 1);
        if (r < 0)
                return log_error_errno(r, "Failed to set up HTTP processing: %m");
        r = read_deadlines_new(event, s->limits.connection_timeout_usec, &s->read_deadlines);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the request read deadlines: %m");
        r = event_timer_new(event, &s->hold_timer, 10 * USEC_PER_MSEC, on_hold_timer, s);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the timer of requests held for readiness: %m");

        s->listeners = calloc(sockets->n_sockets, sizeof(HttpListener));
        if (!s->listeners)
                return log_oom();
        for (size_t i = 0; i < sockets->n_sockets; i++) {
                r = listener_start(s, &s->listeners[i], &sockets->sockets[i]);
                s->n_listeners = i + 1;
                if (r < 0)
                        return log_error_errno(r, "Failed to start HTTP server on %s: %m",
                                               sockets->sockets[i].address);
                log_info("Serving HTTP on %s (%s socket '%s').", sockets->sockets[i].address,
                         sockets->from_systemd ? "systemd" : "own", sockets->sockets[i].name);
        }
        r = internal_listener_start(s);
        if (r < 0)
                return log_error_errno(r, "Failed to start the internal HTTP server: %m");
        *ret = TAKE_PTR(s);
        return 0;
}

HttpServer *http_server_free(HttpServer *s) {
        if (!s)
                return NULL;

        /* MHD aborts the process if a connection is still suspended when it
         * stops: wake everything first; stream readers end once 'stopping'. */
        s->stopping = true;
        s->done_cb = NULL;
        while (!list_empty(&s->suspended))
                http_request_resume(list_first(&s->suspended, HttpRequest, suspended));

        for (size_t i = 0; i < s->n_listeners; i++)
                listener_stop(&s->listeners[i]);
        free(s->listeners);
        listener_stop(&s->internal);
        /* After MHD stopped: it closed every connection, freeing its deadline. */
        read_deadlines_free(s->read_deadlines);
        request_metrics_done(&s->metrics);
        cors_policy_free(s->cors);
        sd_event_source_disable_unref(s->run_source);
        sd_event_source_disable_unref(s->again_source);
        sd_event_source_disable_unref(s->hold_timer);
        sd_event_unref(s->event);
        return mfree(s);
}

void http_server_set_request_done_callback(HttpServer *s, HttpRequestDoneCallback cb, void *userdata) {
        assert(s);

        s->done_cb = cb;
        s->done_userdata = userdata;
}

void http_server_set_request_log_callback(HttpServer *s, HttpRequestLogCallback cb, void *userdata) {
        assert(s);

        s->log_cb = cb;
        s->log_userdata = userdata;
}

void http_server_set_public_ops(HttpServer *s, bool public_ops) {
        assert(s);

        s->public_ops = public_ops;
}

const RequestMetrics *http_server_request_metrics(const HttpServer *s) {
        assert(s);

        return &s->metrics;
}

uint16_t http_server_public_port(const HttpServer *s) {
        assert(s);

        for (size_t i = 0; i < s->n_listeners; i++)
                if (!s->listeners[i].metrics)
                        return s->listeners[i].port;
        return 0;
}

void http_server_set_ready(HttpServer *s, bool ready) {
        assert(s);

        s->ready = ready;
        if (ready)
                (void) resume_held(s, true);
}

void http_server_set_hold_until_ready(HttpServer *s, usec_t usec) {
        assert(s);

        s->hold_until_ready_usec = usec;
}

void http_server_set_cors(HttpServer *s, CorsPolicy *policy) {
        assert(s);

        /* Requests in flight read it only on the loop, as this runs. */
        cors_policy_free(s->cors);
        s->cors = policy;
}

void http_server_set_stream_retry_hint(HttpServer *s, usec_t usec) {
        assert(s);

        s->stream_retry_hint_usec = usec;
}

void http_server_set_body_limits(HttpServer *s, uint64_t max_body_bytes, uint64_t max_event_bytes,
                                 uint64_t max_buffered_body_bytes) {
        assert(s);

        s->limits.max_body_bytes = max_body_bytes;
        s->limits.max_event_bytes = max_event_bytes;
        s->limits.max_buffered_body_bytes = max_buffered_body_bytes;
}

/* Connections the kernel completed before we stopped listening wait in the
 * backlog; closing the socket would reset them (or, with systemd holding
 * it, leave them for an instance that may never start). Serve them. */
static void accept_backlog(HttpListener *l, int fd) {
        struct sockaddr_storage addr;
        socklen_t len;
        int client;
        unsigned n = 0;

        for (;;) {
                len = sizeof(addr);
                client = accept4(fd, (struct sockaddr *) &addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (client < 0)
                        break;
                /* MHD closes the socket itself if it cannot take it. */
                if (MHD_add_connection(l->daemon, client, (struct sockaddr *) &addr, len) == MHD_YES)
                        n++;
        }
        if (n > 0)
                log_debug("Took %u connection(s) from the backlog of %s before closing it.", n, l->address);
}

void http_server_begin_drain(HttpServer *s) {
        assert(s);

        if (s->draining)
                return;
        s->draining = true;
        for (size_t i = 0; i < s->n_listeners; i++) {
                HttpListener *l = &s->listeners[i];
                /* Only once: a second quiesce hands the socket out again. */
                if (l->quiesced)
                        continue;
                MHD_socket fd = MHD_quiesce_daemon(l->daemon);
                l->quiesced = true;
                if (fd != MHD_INVALID_SOCKET) {
                        accept_backlog(l, fd);
                        close(fd);
                }
                log_info("Stopped accepting connections on %s.", l->address);
        }
        http_server_schedule_run(s);
}

bool http_server_draining(const HttpServer *s) {
        assert(s);

        return s->draining;
}

HttpCounters http_server_counters(const HttpServer *s) {
        assert(s);

        HttpCounters c = s->counters;

        c.connections_read_timeout = s->read_deadlines ? read_deadlines_expired(s->read_deadlines) : 0;
        return c;
}

int http_server_add_connection(HttpServer *s, int fd) {
        struct sockaddr_un addr = { .sun_family = AF_UNIX };

        assert(s);
        assert(fd >= 0);

        /* MHD closes fd itself when this fails. */
        if (MHD_add_connection(s->internal.daemon, fd, (const struct sockaddr *) &addr,
                               sizeof(sa_family_t)) != MHD_YES)
                return errno > 0 ? -errno : -EIO;
        /* The request is already in the socket: serve it now, not after
         * whatever else the loop has pending (a flood's connections). */
        listener_run(&s->internal);
        return 0;
}
