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

#include <jansson.h>
#include <microhttpd.h>
#include <systemd/sd-event.h>

#include "http-listen.h"
#include "metrics.h"
#include "http-router.h"
#include "util.h"

typedef struct HttpServer HttpServer;

/* Connections past MAX_CONNECTIONS that are still accepted, each to be told
 * 503 at once (probes are still served on them) instead of waiting unseen
 * in the kernel's backlog: a sixteenth, between 4 and 256. Past that MHD
 * stops accepting until a connection closes. */
#define HTTP_SHED_RESERVE(max_connections) \
        ((max_connections) / 16 < 4 ? 4 : (max_connections) / 16 > 256 ? 256 : (max_connections) / 16)

typedef struct HttpLimits {
        uint64_t max_connections;       /* served; HTTP_SHED_RESERVE() more get 503 */
        usec_t connection_timeout_usec;
        uint64_t max_header_bytes;
        uint64_t max_body_bytes;
        uint64_t max_event_bytes;       /* for routes flagged ROUTE_EVENT_BODY */
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

/* The longest request id batond takes from X-Request-ID (nginx's
 * $request_id is 32); longer or unusual ones are replaced by its own. */
#define HTTP_REQUEST_ID_MAX 64

/* Takes ownership of the sockets in 'sockets' (their fds become -1). */
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

/* Routes flagged ROUTE_NEEDS_READY answer 503 until this is set. */
void http_server_set_ready(HttpServer *server, bool ready);
void http_server_set_body_limits(HttpServer *server, uint64_t max_body_bytes, uint64_t max_event_bytes);

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

/* Feeds an already-connected socket to the first daemon as if accepted:
 * the watchdog's self-probe enters the request path this way. Takes the fd. */
int http_server_add_connection(HttpServer *server, int fd);

/* --- For route handlers --- */

HttpServer *http_request_server(HttpRequest *req);
const char *http_request_path(const HttpRequest *req);
HttpMethod http_request_method(const HttpRequest *req);
const char *http_request_route_name(const HttpRequest *req);
/* The i-th {param} of the route; NULL when absent. */
const RouteParam *http_request_param(const HttpRequest *req, size_t i);
const char *http_request_query(const HttpRequest *req, const char *key);
const char *http_request_header(const HttpRequest *req, const char *name);
const char *http_request_body(const HttpRequest *req, size_t *ret_size);
/* The client's X-Request-ID when it sent a usable one, else batond's own
 * ("<12 hex digits of this process>-<counter>"); in buf. */
const char *http_request_id(const HttpRequest *req, char buf[HTTP_REQUEST_ID_MAX + 1]);

/* Responds with a JSON body (steals 'body', which may be NULL on allocation
 * failure: then a 500 goes out). */
void http_respond_json(HttpRequest *req, unsigned status, json_t *body);

/* A prebuilt response that many requests share (constant bodies, cached
 * health results): serialised once, not per request. Reference counted;
 * new() steals 'body'. */
typedef struct HttpSharedResponse HttpSharedResponse;
int http_shared_response_new(unsigned status, json_t *body, HttpSharedResponse **ret);
HttpSharedResponse *http_shared_response_ref(HttpSharedResponse *r);
HttpSharedResponse *http_shared_response_unref(HttpSharedResponse *r);
DEFINE_POINTER_CLEANUP(HttpSharedResponse, http_shared_response_unref);
void http_respond_shared(HttpRequest *req, HttpSharedResponse *r);

/* Responds with JSON text that is already serialised (takes 'text', which
 * must have been allocated with malloc()). */
void http_respond_json_text(HttpRequest *req, unsigned status, char *text, size_t size);
/* The same with another content type. */
void http_respond_text(HttpRequest *req, unsigned status, const char *content_type, char *text,
                       size_t size);

/* Adds a header to the response just set (before it is queued). */
void http_request_add_response_header(HttpRequest *req, const char *name, const char *value);

/* Responds {"error": code, "message": ...}. */
void http_respond_error(HttpRequest *req, unsigned status, const char *code,
                        const char *format, ...) _printf_(4, 5);

/* MHD's own buffer in a stream response. For chunked HTTP/1.1 streams MHD
 * has the reader write straight into the connection's memory and never
 * uses it; only HTTP/1.0 clients get their data through it. It is
 * allocated (and zeroed) per stream, so it is kept small. */
#define HTTP_STREAM_BLOCK 256

/* The socket send buffer of a stream (the kernel doubles it). */
#define HTTP_STREAM_SNDBUF (64 * 1024)

/* Responds 200 with a body produced by 'reader' as it becomes available
 * (Server-Sent Events). The request then counts as a stream, not a request.
 * 'free_cb' runs when the response is destroyed. */
void http_respond_stream(HttpRequest *req, const char *content_type,
                         MHD_ContentReaderCallback reader, void *cls,
                         MHD_ContentReaderFreeCallback free_cb);

/* For stream readers: no data now. Suspends the connection and returns what
 * the reader must return; http_stream_wake() resumes it. */
ssize_t http_stream_wait(HttpRequest *req);
void http_stream_wake(HttpRequest *req);

/* Runs cb once when the request ends, whatever the reason (answered, client
 * gone, server stopping), just before the request is freed. Owners of a
 * request that waits for an answer or streams use it to forget it. */
typedef void (*HttpEndCallback)(HttpRequest *req, void *userdata);
void http_request_on_end(HttpRequest *req, HttpEndCallback cb, void *userdata);
