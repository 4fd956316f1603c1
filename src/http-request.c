/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>

#include "http-internal.h"
#include "http-refusal.h"
#include "http-target.h"
#include "log.h"
#include "parse-util.h"

/* --- suspension bookkeeping --- */

void http_request_suspend(HttpRequest *req) {
        assert(req);

        MHD_suspend_connection(req->connection);
        list_append(&req->server->suspended, &req->suspended);
}

void http_request_resume(HttpRequest *req) {
        assert(req);

        HttpServer *s = req->server;

        if (!list_linked(&req->suspended))
                return;
        list_remove(&req->suspended);
        MHD_resume_connection(req->connection);
        /* When stopping, MHD_stop_daemon() processes the resumption itself. */
        if (!s->stopping)
                http_server_schedule_run(s);
}

/* --- request accessors --- */

HttpServer *http_request_server(HttpRequest *req) {
        assert(req);

        return req->server;
}

const char *http_request_path(const HttpRequest *req) {
        assert(req);

        return req->path;
}

HttpMethod http_request_method(const HttpRequest *req) {
        assert(req);

        return req->method;
}

const char *http_request_route_name(const HttpRequest *req) {
        assert(req);

        return req->match.route ? req->match.route->name : "unmatched";
}

const RouteParam *http_request_param(const HttpRequest *req, size_t i) {
        assert(req);

        return i < req->match.n_params ? &req->match.params[i] : NULL;
}

const char *http_request_query(const HttpRequest *req, const char *key) {
        assert(req && key);

        return MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_request_header(const HttpRequest *req, const char *name) {
        assert(req && name);

        return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char *http_request_body(const HttpRequest *req, size_t *ret_size) {
        assert(req && ret_size);

        *ret_size = req->body_size;
        return req->body ? req->body : "";
}

/* An id from the client (nginx: proxy_set_header X-Request-ID $request_id)
 * ties its log line to ours; it goes into the journal, so only plain ones. */
static bool request_id_usable(const char *id) {
        size_t n = strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:");
        return n > 0 && n <= HTTP_REQUEST_ID_MAX && id[n] == '\0';
}

/* Looked up only when needed (an answer built for this request, a log
 * record): most requests never need it. MHD keeps the headers until after
 * the completion callback, where the access log asks. */
const char *http_request_id(const HttpRequest *req, char buf[HTTP_REQUEST_ID_MAX + 1]) {
        assert(req && buf);

        const char *client = req->connection
                ? MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "X-Request-ID")
                : NULL;

        if (client && request_id_usable(client))
                return client;
        snprintf(buf, HTTP_REQUEST_ID_MAX + 1, "%s-%06" PRIx64, req->server->request_id_prefix, req->seq);
        return buf;
}

/* --- the request state machine, driven by MHD --- */

static uint64_t request_body_limit(const HttpRequest *req) {
        const HttpLimits *l = &req->server->limits;

        if (req->match.route && (req->match.route->flags & ROUTE_EVENT_BODY))
                return l->max_event_bytes;
        return l->max_body_bytes;
}

/* The metrics socket serves only health and metrics; the public ones
 * serve them too unless PUBLIC_HEALTH=false. Elsewhere they do not exist. */
static bool route_hidden(const HttpListener *l, const Route *route) {
        bool ops = route->flags & ROUTE_OPS;

        if (l->metrics || l->internal)
                return !ops;
        return ops && !l->server->public_ops;
}

/* Past MAX_CONNECTIONS on this socket: the connection came out of the
 * shedding reserve (HTTP_SHED_RESERVE). */
static bool listener_over_limit(const HttpListener *l) {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(l->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);

        return info && info->num_connections > l->server->limits.max_connections;
}

/* Overload gets a fast, honest answer: the client (or nginx, with
 * proxy_next_upstream http_503) can go elsewhere or retry, rather than
 * time out on a connection nobody reads. Probes are exempt, so that
 * systemd and the balancer still see a live, ready instance. */
static void respond_overloaded(HttpRequest *req) {
        HttpServer *s = req->server;

        s->counters.requests_shed++;
        req->shed = true;
        http_respond_retry_later(req, "overloaded",
                                 "the service is at its connection limit (%" PRIu64 "); retry shortly",
                                 s->limits.max_connections);
}

/* Counts a body to be buffered against MAX_BUFFERED_BODY_BYTES, for its
 * Content-Length, or for its route's limit when it comes chunked (it may
 * grow to that). false when it does not fit. */
static bool request_reserve_body(HttpRequest *req, const char *content_length) {
        HttpServer *s = req->server;
        uint64_t want;

        if (!content_length || parse_uint64(content_length, &want) < 0)
                want = request_body_limit(req);
        if (s->body_bytes_reserved + want > s->limits.max_buffered_body_bytes)
                return false;
        s->body_bytes_reserved += want;
        req->body_reserved = want;
        return true;
}

static void request_release_body(HttpRequest *req) {
        HttpServer *s = req->server;

        assert(s->body_bytes_reserved >= req->body_reserved);
        s->body_bytes_reserved -= req->body_reserved;
        req->body_reserved = 0;
        req->body = mfree(req->body);
        req->body_size = req->body_allocated = 0;
}

static void respond_bodies_full(HttpRequest *req) {
        HttpServer *s = req->server;

        http_respond_retry_later(req, "overloaded",
                                 "request bodies being received are at their limit (MAX_BUFFERED_BODY_BYTES, "
                                 "%" PRIu64 " bytes); retry shortly", s->limits.max_buffered_body_bytes);
        req->stop_body = true;
}

unsigned http_request_cors_methods(const HttpRequest *req) {
        assert(req);

        if (req->match.route)
                return req->match.route->flags & ROUTE_CORS ? req->match.route->methods : 0;
        return req->match.cors_methods;
}

/* A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method)
 * on a path of ROUTE_CORS routes, from an origin CORS_ORIGINS allows: 204,
 * with the headers request_set_response() adds. It needs nothing of the
 * database, so it is answered at once, ready or not. false for any other
 * request, which then gets the 405 of a method the path does not take. */
static bool request_answer_preflight(HttpRequest *req) {
        CorsAnswer a;

        if (req->method != HTTP_OPTIONS || !req->server->cors)
                return false;
        cors_decide(req->server->cors, req->method, http_request_header(req, "Origin"),
                    http_request_header(req, "Access-Control-Request-Method"), req->match.cors_methods, &a);
        if (!a.preflight)
                return false;
        http_respond_empty(req, MHD_HTTP_NO_CONTENT);
        return true;
}

static void respond_method_not_allowed(HttpRequest *req) {
        char allow[64];

        router_format_allow(req->match.allowed, allow, sizeof(allow));
        http_respond_error(req, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", "%s takes %s",
                           req->path, allow);
        http_request_add_response_header(req, MHD_HTTP_HEADER_ALLOW, allow);
}

/* Decides what we can from the request line and headers. Errors that mean
 * we will not read the body (413, 431) are queued at once, which makes MHD
 * close the connection afterwards; the rest wait for the final call so the
 * connection stays usable. */
static enum MHD_Result request_begin(HttpRequest *req, const char *version) {
        HttpServer *s = req->server;
        const union MHD_ConnectionInfo *info;
        const char *content_length, *transfer_encoding;
        uint64_t length;
        bool has_body;
        char why[256];
        int r;

        info = MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
        if (info && info->header_size > s->limits.max_header_bytes) {
                http_respond_error(req, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "header_too_large",
                                   "request headers are %zu bytes, the limit is %" PRIu64,
                                   info->header_size, s->limits.max_header_bytes);
                return MHD_YES;
        }
        r = router_match(s->routes, s->n_routes, req->path, req->method, &req->match);
        if (r == 0 && route_hidden(req->listener, req->match.route)) {
                req->match.route = NULL;
                r = -ENOENT;
        }
        content_length = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        transfer_encoding = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND,
                                                        MHD_HTTP_HEADER_TRANSFER_ENCODING);
        if (http_request_misframed(req, version, content_length, transfer_encoding, why, sizeof(why))) {
                http_respond_error(req, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", why);
                return MHD_YES;
        }
        has_body = transfer_encoding || (content_length && parse_uint64(content_length, &length) == 0 &&
                                         length > 0);
        if (content_length && parse_uint64(content_length, &length) == 0 &&
            length > request_body_limit(req)) {
                http_respond_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                                   "request body is %" PRIu64 " bytes, the limit is %" PRIu64,
                                   length, request_body_limit(req));
                return MHD_YES;
        }

        req->over_limit = listener_over_limit(req->listener);
        if (r == -ENOENT)
                http_respond_error(req, MHD_HTTP_NOT_FOUND, "not_found", "no such resource: %s",
                                   req->path);
        else if (r == -EMETHOD) {
                if (!request_answer_preflight(req))
                        respond_method_not_allowed(req);
        } else if (!(req->match.route->flags & ROUTE_OPS) && req->over_limit)
                respond_overloaded(req);
        else {
                /* Checked now even before ready (token, topic, type need no
                 * database): refused at its headers, its body is not read. */
                if (req->match.route->admit) {
                        req->match.route->admit(req, s->handler_userdata);
                        req->stop_body = http_request_has_response(req) && has_body;
                }
                if (!http_request_has_response(req) && (req->match.route->flags & ROUTE_NEEDS_READY) &&
                    !s->ready)
                        req->held = true;       /* request_hold_over() */
        }
        if (!http_request_has_response(req) && has_body && req->match.route &&
            (req->match.route->flags & ROUTE_ACCEPTS_BODY) &&
            !request_reserve_body(req, content_length))
                respond_bodies_full(req);
        return MHD_YES;
}

static enum MHD_Result request_take_body(HttpRequest *req, const char *data, size_t size) {
        req->body_received += size;
        if (req->body_received > request_body_limit(req)) {
                /* Only a chunked body without Content-Length gets here. MHD
                 * cannot send a response in the middle of a body, so the
                 * connection is closed instead. */
                log_debug("Request body for %s exceeds %" PRIu64 " bytes, closing connection.",
                          req->path, request_body_limit(req));
                return MHD_NO;
        }
        if (http_request_has_response(req) || !req->match.route ||
            !(req->match.route->flags & ROUTE_ACCEPTS_BODY))
                return MHD_YES;         /* discarded: the answer does not depend on it */

        if (req->body_size + size + 1 > req->body_allocated) {
                size_t want = (req->body_size + size + 1) * 2;
                char *p;
                if (want > request_body_limit(req) + 1)
                        want = request_body_limit(req) + 1;
                p = realloc(req->body, want);
                if (!p)
                        return MHD_NO;
                req->body = p;
                req->body_allocated = want;
        }
        memcpy(req->body + req->body_size, data, size);
        req->body_size += size;
        req->body[req->body_size] = '\0';
        return MHD_YES;
}

/* A request that needs readiness and came before it waits for it, up to
 * HTTP_HOLD_UNTIL_READY_USEC, suspended (http_server_set_ready() and the
 * hold timer resume it). Then, or when the server stops, it goes on: to
 * its handler if ready, to 503 not_ready if not. false while it waits. */
static bool request_hold_over(HttpRequest *req) {
        HttpServer *s = req->server;

        if (!s->ready && !s->stopping && now_usec(CLOCK_MONOTONIC) - req->started_usec < s->hold_until_ready_usec) {
                http_request_suspend(req);
                http_server_arm_hold_timer(s);
                return false;
        }
        req->held = false;
        if (!s->ready)
                http_respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready",
                                   "the service is starting; retry shortly");
        return true;
}

enum MHD_Result http_on_access(void *cls, struct MHD_Connection *connection, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
        HttpRequest *req = *con_cls;

        assert(connection && url && method && version);

        if (!req)
                return MHD_NO;          /* allocation failed in http_on_uri() */

        if (!req->headers_seen) {
                req->headers_seen = true;
                list_remove(&req->unseen);
                req->path = http_target_path(url);
                req->method = http_method_from_string(method);
                request_begin(req, version);
                /* Queueing on the first call costs keep-alive in MHD 0.9.75;
                 * do it only for answers that mean "stop sending" (a shed
                 * connection should close, to free its slot). */
                if (http_request_has_response(req) &&
                    (req->status == MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE ||
                     req->status == MHD_HTTP_CONTENT_TOO_LARGE || req->status == MHD_HTTP_BAD_REQUEST ||
                     req->shed || req->stop_body))
                        return http_request_queue_response(req);
                return MHD_YES;
        }

        if (*upload_data_size > 0) {
                enum MHD_Result ret = request_take_body(req, upload_data, *upload_data_size);
                *upload_data_size = 0;
                return ret;
        }

        if (req->failed)
                return MHD_NO;
        if (req->queued)
                return MHD_YES;
        if (req->held && !request_hold_over(req))
                return MHD_YES;
        if (!http_request_has_response(req) && !req->dispatched) {
                req->dispatched = true;
                read_deadline_stop(req->read_deadline);
                req->match.route->handler(req, req->server->handler_userdata);
                /* Handlers take what they need of the body during the call. */
                request_release_body(req);
        }
        if (req->failed)
                return MHD_NO;
        if (http_request_has_response(req))
                return http_request_queue_response(req);

        /* The handler answers later: park the connection until it does. */
        http_request_suspend(req);
        return MHD_YES;
}

/* Called as soon as MHD has the request line: the request exists from here. */
void *http_on_uri(void *cls, const char *uri, struct MHD_Connection *connection) {
        HttpListener *l = cls;
        HttpServer *s = l->server;
        HttpRequest *req = calloc(1, sizeof(HttpRequest));

        assert(connection);

        if (!req)
                return NULL;
        req->server = s;
        req->listener = l;
        req->connection = connection;
        req->path = "";
        /* Seen as sent: MHD splits off the query and decodes the path in
         * place right after this call. */
        req->raw_uri = uri;
        req->raw_uri_length = uri ? strlen(uri) : 0;
        req->target_unsafe = uri && http_target_check(uri, req->raw_uri_length) < 0;
        for (const char *p = uri ? strchr(uri, '%') : NULL; p && !req->target_encoded_nul; p = strchr(p + 1, '%'))
                req->target_encoded_nul = p[1] == '0' && p[2] == '0';
        req->seq = ++s->request_seq;
        req->started_usec = now_usec(CLOCK_MONOTONIC);
        const union MHD_ConnectionInfo *info =
                MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        req->read_deadline = info ? info->socket_context : NULL;
        s->counters.active_requests++;
        list_append(&s->unseen, &req->unseen);
        return req;
}

/* Counts the finished request and hands it to the access log. */
static void request_observe(HttpRequest *req) {
        HttpServer *s = req->server;
        const Route *route = req->match.route;
        /* Until the answer was handed over: MHD reports completion only
         * when it next looks at the connection (for a client that closes,
         * when it sees the close), which would time the client instead. */
        usec_t end = req->answered_usec ? req->answered_usec : now_usec(CLOCK_MONOTONIC);
        usec_t duration = end > req->started_usec ? end - req->started_usec : 0;
        /* Counted and logged as what batond decided: a stream that could
         * not start is a 503, even when it went out as an ended 200 event
         * stream for a browser's sake. */
        unsigned status = req->unavailable_event ? MHD_HTTP_SERVICE_UNAVAILABLE : req->status;

        request_metrics_observe(&s->metrics, route ? (size_t) (route - s->routes) : SIZE_MAX,
                                req->method, status, duration);
        if (!s->log_cb)
                return;
        HttpRequestRecord record = {
                .request = req,
                .route = route ? route->name : METRICS_UNMATCHED,
                .route_flags = route ? route->flags : 0,
                .method = metrics_method_label(metrics_method_index(req->method)),
                .path = req->path,
                .status = status,
                .duration_usec = duration,
                .stream = req->is_stream,
        };
        s->log_cb(&record, s->log_userdata);
}

void http_on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        HttpServer *s = cls;
        HttpRequest *req = *con_cls;

        assert(connection);

        if (!req)
                return;
        *con_cls = NULL;

        /* MHD resumes a connection before it closes it. */
        assert(!list_linked(&req->suspended));
        list_remove(&req->unseen);
        if (req->end_cb)
                req->end_cb(req, req->end_userdata);
        /* A keep-alive connection now waits for its next request. */
        read_deadline_restart(req->read_deadline);
        /* Only requests batond answered: MHD also completes the requests it
         * answered itself (malformed ones), without a path. */
        if (req->headers_seen || req->refused)
                request_observe(req);
        if (req->response)
                MHD_destroy_response(req->response);
        http_shared_response_unref(req->shared);
        if (req->is_stream) {
                assert(s->counters.active_streams > 0);
                s->counters.active_streams--;
        } else {
                assert(s->counters.active_requests > 0);
                s->counters.active_requests--;
        }
        s->counters.requests_total++;
        request_release_body(req);
        free(req);

        if (s->done_cb)
                s->done_cb(s, s->done_userdata);
}

void http_on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
        HttpServer *s = cls;

        assert(connection);

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *info =
                        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
                int sndbuf = HTTP_SNDBUF;
                s->counters.active_connections++;
                if (info && setsockopt(info->connect_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) < 0)
                        log_debug_errno(errno, "Failed to limit a connection's send buffer, ignoring: %m");
                *socket_context = info ? read_deadline_new(s->read_deadlines, info->connect_fd) : NULL;
                if (!*socket_context)
                        log_debug("No read deadline for a new connection (out of memory).");
        } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
                read_deadline_free(*socket_context);
                *socket_context = NULL;
                assert(s->counters.active_connections > 0);
                s->counters.active_connections--;
                /* At its connection limit (or after EMFILE) MHD drops the
                 * listening socket from its epoll set and adds it back only
                 * at the start of a later MHD_run(); this close happens at
                 * the end of one. Nothing else would wake us for that run
                 * when no connection is left, and we would never accept
                 * again. One extra run per loop iteration at most. */
                http_server_schedule_run(s);
                /* The drain also waits for keep-alive connections to go. */
                if (s->done_cb)
                        s->done_cb(s, s->done_userdata);
        }
}

/* --- requests libmicrohttpd refuses by itself (http-refusal.h) --- */

/* MHD refuses a malformed Content-Length inside parse_connection_headers(),
 * and logs it through http_on_mhd_log() while it does. Only then does a request
 * have all its headers (REQUEST_HEADER_SIZE answers from HEADERS_RECEIVED
 * on) yet neither a response (HTTP_STATUS answers once one is queued) nor
 * a first call of batond's handler: every other request past its headers
 * has had that call, and MHD's other refusals come with a response queued
 * or before the headers are in. */
static bool request_being_refused(const HttpRequest *req) {
        return MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE) &&
               !MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_HTTP_STATUS);
}

/* batond's own answer goes straight to the socket (nothing of an earlier
 * response is pending in MHD: it parses a request only once the previous
 * answer is out), which is then shut for writing, so that MHD's twice-headed
 * page fails to go out (EPIPE) and MHD closes the connection. A client that
 * left the send buffer full gets what fits, then the close. */
static void request_answer_refusal(HttpRequest *req) {
        HttpServer *s = req->server;
        const union MHD_ConnectionInfo *size =
                MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
        const union MHD_ConnectionInfo *fd =
                MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        char id[HTTP_REQUEST_ID_MAX + 1], date[HTTP_DATE_MAX], text[1024];
        HttpRefusal refusal;
        int n;

        assert(size && fd);

        http_refusal_decide(http_request_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH),
                            http_request_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL,
                            size->header_size, s->limits.max_header_bytes, &refusal);
        req->refused = true;
        req->status = refusal.status;
        req->path = strempty(req->raw_uri);     /* MHD decoded it in place */
        req->method = HTTP_OTHER;               /* MHD does not tell */
        req->answered_usec = now_usec(CLOCK_MONOTONIC);
        n = http_refusal_format(&refusal, http_request_id(req, id), http_date_format(time(NULL), date),
                                text, sizeof(text));
        assert(n > 0);
        if (send(fd->connect_fd, text, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
                log_debug("Could not send the whole answer to a request libmicrohttpd refused.");
        if (shutdown(fd->connect_fd, SHUT_WR) < 0)
                log_debug_errno(errno, "Failed to shut down a refused connection, ignoring: %m");
        log_debug("Answered %u to a request libmicrohttpd refused: %s.", refusal.status, refusal.message);
}

static void answer_refusals(HttpServer *s) {
        LIST_FOREACH_SAFE(req, next, &s->unseen, HttpRequest, unseen) {
                if (!request_being_refused(req))
                        continue;
                list_remove(&req->unseen);
                request_answer_refusal(req);
        }
}

void http_on_mhd_log(void *cls, const char *format, va_list ap) {
        char message[512];
        size_t n;

        (void) vsnprintf(message, sizeof(message), format, ap);
        n = strlen(message);
        while (n > 0 && message[n - 1] == '\n')
                message[--n] = '\0';
        /* MHD reports client mistakes (malformed requests, resets) here:
         * useful when debugging, noise otherwise. */
        log_debug("libmicrohttpd: %s", message);
        answer_refusals(cls);
}
