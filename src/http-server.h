/* SPDX-License-Identifier: MIT */
#pragma once

/* The HTTP server: one libmicrohttpd daemon per listening socket, all driven
 * from the sd-event loop (MHD's epoll fd is an io source; its timeout is a
 * timer re-armed after every MHD_run()). Handlers therefore run on the main
 * loop and may touch the manager's state freely; they must never block.
 *
 * A request's life: MHD parses the request line (HttpRequest is created and
 * counted as in flight), then the headers (route lookup, size limits, 503
 * before ready), then the body, and then the route's handler runs. A handler
 * answers at once with http_respond_*(), or later from any loop callback; a
 * request without an answer is suspended in MHD until it gets one. */

#include <systemd/sd-event.h>

#include "http-cors.h"
#include "http-listen.h"
#include "http-request.h"
#include "http-router.h"
#include "metrics.h"
#include "util.h"

typedef struct HttpServer HttpServer;

/* Connections past MAX_CONNECTIONS that are still accepted, each to be told
 * 503 at once (probes are still served on them) instead of waiting unseen
 * in the kernel's backlog: a sixteenth, between 4 and 256. Every answer on
 * such a connection closes it, so that the reserve turns over and a flood
 * keeps getting its 503s; past the reserve MHD stops accepting until a
 * connection closes. */
#define HTTP_SHED_RESERVE(max_connections) \
        ((max_connections) / 16 < 4 ? 4 : (max_connections) / 16 > 256 ? 256 : (max_connections) / 16)

typedef struct HttpLimits {
        uint64_t max_connections;       /* served; HTTP_SHED_RESERVE() more get 503 */
        usec_t connection_timeout_usec;
        uint64_t max_header_bytes;
        uint64_t max_body_bytes;
        uint64_t max_event_bytes;       /* for routes flagged ROUTE_EVENT_BODY */
        uint64_t max_buffered_body_bytes; /* all bodies being read, together */
} HttpLimits;

typedef struct HttpCounters {
        uint64_t active_connections;
        uint64_t active_requests;       /* in flight, streams excluded */
        uint64_t active_streams;
        uint64_t requests_total;        /* completed, for progress checks */
        uint64_t requests_shed;         /* answered 503 at the connection limit */
        uint64_t connections_read_timeout; /* cut: no whole request within CONNECTION_TIMEOUT */
} HttpCounters;

/* Called on the loop after every request ends and every connection closes
 * (the drain logic waits on both). */
typedef void (*HttpRequestDoneCallback)(HttpServer *server, void *userdata);

/* What the access log needs of a finished request. */
typedef struct HttpRequestRecord {
        const HttpRequest *request;     /* for http_request_id(), formatted only when logged */
        const char *route;              /* the route's name, or "unmatched" */
        unsigned route_flags;
        const char *method;
        const char *path;               /* without the query string */
        unsigned status;                /* 0: no answer from batond */
        usec_t duration_usec;           /* until the answer (a stream's start) was queued */
        bool stream;
} HttpRequestRecord;

typedef void (*HttpRequestLogCallback)(const HttpRequestRecord *record, void *userdata);

/* Takes ownership of the sockets in 'sockets' (their fds become -1). Logs
 * its failures (it knows which socket failed). */
int http_server_new(sd_event *event, ListenSet *sockets, const HttpLimits *limits,
                    const Route *routes, size_t n_routes, void *handler_userdata,
                    HttpServer **ret);
HttpServer *http_server_free(HttpServer *server);
DEFINE_POINTER_CLEANUP(HttpServer, http_server_free);

void http_server_set_request_done_callback(HttpServer *server, HttpRequestDoneCallback cb,
                                           void *userdata);
void http_server_set_request_log_callback(HttpServer *server, HttpRequestLogCallback cb,
                                          void *userdata);

/* Routes flagged ROUTE_OPS are also served on the public sockets (true by
 * default); only on the metrics socket otherwise. */
void http_server_set_public_ops(HttpServer *server, bool public_ops);

/* Per-route request counts and durations, kept up to date by the server. */
const RequestMetrics *http_server_request_metrics(const HttpServer *server);

/* The port of the first public socket (0 for unix sockets). */
uint16_t http_server_public_port(const HttpServer *server);

/* Requests for routes flagged ROUTE_NEEDS_READY that come while the
 * server is not ready wait for it, this long at most, and are then
 * answered 503 not_ready (a stream request from a browser: 200 with
 * "unavailable"). A restart or a deploy's start is over well within it:
 * clients see a delay, not an error. Probes are answered at once. */
#define HTTP_HOLD_UNTIL_READY_USEC (5 * USEC_PER_SEC)

/* Readiness for ROUTE_NEEDS_READY routes; becoming ready serves the
 * requests held for it. */
void http_server_set_ready(HttpServer *server, bool ready);
/* Another bound for the hold (0: answer 503 at once), for the fuzzer. */
void http_server_set_hold_until_ready(HttpServer *server, usec_t usec);

/* CORS_ORIGINS (http-cors.h), for the routes flagged ROUTE_CORS: takes
 * the policy, NULL for none (no CORS header, the default). */
void http_server_set_cors(HttpServer *server, CorsPolicy *policy);

/* STREAM_RETRY_HINT, for streams refused with an "unavailable" event. */
void http_server_set_stream_retry_hint(HttpServer *server, usec_t usec);
void http_server_set_body_limits(HttpServer *server, uint64_t max_body_bytes, uint64_t max_event_bytes,
                                 uint64_t max_buffered_body_bytes);

/* Stops accepting connections (connections already waiting in the backlog
 * are still served; then the listening sockets are closed, systemd keeps
 * its copies) and marks every later response "Connection: close", so
 * keep-alive clients move on. Requests in flight continue. */
void http_server_begin_drain(HttpServer *server);
bool http_server_draining(const HttpServer *server);

HttpCounters http_server_counters(const HttpServer *server);

/* Runs MHD soon; needed after resuming connections (it does not wake up by
 * itself in external-loop mode). */
void http_server_schedule_run(HttpServer *server);

/* Feeds an already-connected socket to an internal daemon as if accepted:
 * the watchdog's self-probe enters the request path this way. That daemon
 * serves the ops routes only, takes HTTP_INTERNAL_CONNECTIONS at once and
 * counts in no socket's MAX_CONNECTIONS, so a flood of the public sockets
 * cannot starve it. Takes the fd. */
int http_server_add_connection(HttpServer *server, int fd);
