/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "http.h"
#include "loop-util.h"
#include "http-refusal.h"
#include "http-target.h"
#include "log.h"
#include "parse-util.h"
#include "http-read-deadline.h"

/* MHD's per-connection memory pool bounds the header block it accepts: in
 * 0.9.75 its read buffer starts at half the pool and does not grow past
 * that for a header block (measured: a 6 KiB pool takes 2.7 KiB of
 * headers, an 18 KiB one 8.9 KiB). So the pool is twice MAX_HEADER_BYTES
 * plus a margin: batond, not MHD, sees an oversized header block first and
 * answers with a JSON 431; only larger ones reach MHD's limit (its fixed
 * HTML page). The pool is not bigger than that because all of it ends up
 * resident for every connection (MHD zeroes what it hands back, and the
 * whole pool after each request): it is most of what an idle stream costs,
 * and at MHD's default of 32 KiB the memset alone cost 7% of a probe. */
#define HTTP_POOL_FOR(max_header_bytes) (2 * (max_header_bytes) + 1024)

struct HttpSharedResponse {
        unsigned n_ref;
        unsigned status;
        struct MHD_Response *keep_alive;
        struct MHD_Response *close;     /* the same with "Connection: close" */
};

typedef struct HttpListener {
        HttpServer *server;
        struct MHD_Daemon *daemon;
        sd_event_source *io_source;
        sd_event_source *timer_source;
        char *address;
        uint16_t port;
        bool metrics;                   /* health and metrics only */
        bool quiesced;
} HttpListener;

struct HttpServer {
        sd_event *event;
        HttpListener *listeners;
        size_t n_listeners;
        sd_event_source *run_source;

        const Route *routes;
        size_t n_routes;
        void *handler_userdata;
        HttpLimits limits;

        bool ready;
        bool draining;
        bool stopping;
        bool public_ops;

        HttpCounters counters;
        RequestMetrics metrics;
        HttpRequestDoneCallback done_cb;
        void *done_userdata;
        HttpRequestLogCallback log_cb;
        void *log_userdata;

        /* Request ids: a random prefix per process and a counter, so that
         * an id found in the journal names one request of one process. */
        char request_id_prefix[13];
        uint64_t request_seq;

        /* Suspended requests, so that all can be resumed before MHD stops. */
        HttpRequest *suspended_head;
        /* Requests whose line MHD has parsed but whose headers batond has
         * not seen yet: where to look for those MHD refuses by itself. */
        HttpRequest *unseen_head;

        /* Per connection: CONNECTION_TIMEOUT to send a whole request. */
        ReadDeadlines *read_deadlines;
};

struct HttpRequest {
        HttpServer *server;
        HttpListener *listener;
        struct MHD_Connection *connection;
        ReadDeadline *read_deadline;    /* its connection's; NULL without one */
        const char *path;               /* MHD's, valid for the request's life */
        const char *raw_uri;            /* the request target as received, in MHD's buffer */
        size_t raw_uri_length;          /* strlen() of it before MHD split and decoded it */
        bool target_encoded_nul;        /* %00 in it */
        bool target_unsafe;             /* whitespace or a control character in it, raw */
        HttpMethod method;
        RouteMatch match;

        bool headers_seen;
        bool dispatched;
        bool queued;
        bool suspended;
        bool is_stream;
        bool failed;                    /* no response possible: close */
        bool shed;                      /* answered 503 at the connection limit */
        bool refused;                   /* refused by MHD, answered by batond (http-refusal.h) */

        uint64_t seq;
        usec_t started_usec;
        usec_t answered_usec;           /* when the response went to MHD */

        unsigned status;
        struct MHD_Response *response;  /* owned, or NULL */
        HttpSharedResponse *shared;     /* a reference, or NULL */

        char *body;
        size_t body_size;
        size_t body_allocated;
        uint64_t body_received;

        HttpEndCallback end_cb;
        void *end_userdata;

        HttpRequest *suspended_prev, *suspended_next;
        HttpRequest *unseen_prev, *unseen_next;
        bool unseen;
};

/* --- suspension bookkeeping --- */

static void request_suspend(HttpRequest *req) {
        HttpServer *s = req->server;

        MHD_suspend_connection(req->connection);
        req->suspended = true;
        req->suspended_prev = NULL;
        req->suspended_next = s->suspended_head;
        if (s->suspended_head)
                s->suspended_head->suspended_prev = req;
        s->suspended_head = req;
}

static void request_resume(HttpRequest *req) {
        HttpServer *s = req->server;

        if (!req->suspended)
                return;
        if (req->suspended_prev)
                req->suspended_prev->suspended_next = req->suspended_next;
        else
                s->suspended_head = req->suspended_next;
        if (req->suspended_next)
                req->suspended_next->suspended_prev = req->suspended_prev;
        req->suspended = false;
        MHD_resume_connection(req->connection);
        /* When stopping, MHD_stop_daemon() processes the resumption itself. */
        if (!s->stopping)
                http_server_schedule_run(s);
}

static void request_unseen_add(HttpRequest *req) {
        HttpServer *s = req->server;

        req->unseen = true;
        req->unseen_prev = NULL;
        req->unseen_next = s->unseen_head;
        if (s->unseen_head)
                s->unseen_head->unseen_prev = req;
        s->unseen_head = req;
}

static void request_unseen_remove(HttpRequest *req) {
        HttpServer *s = req->server;

        if (!req->unseen)
                return;
        if (req->unseen_prev)
                req->unseen_prev->unseen_next = req->unseen_next;
        else
                s->unseen_head = req->unseen_next;
        if (req->unseen_next)
                req->unseen_next->unseen_prev = req->unseen_prev;
        req->unseen = false;
}

/* --- responses --- */

static void add_common_headers(struct MHD_Response *response) {
        /* Health and API answers describe the present: never cache them. */
        if (MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES)
                log_debug("Failed to add Cache-Control header, ignoring.");
}

static bool request_has_response(const HttpRequest *req) {
        return req->response || req->shared || req->queued;
}

/* Installs a ready response (owned or shared) on the request; if the request
 * waits suspended for it, wakes it so the access handler queues it. */
static void request_set_response(HttpRequest *req, unsigned status, struct MHD_Response *response,
                                 HttpSharedResponse *shared) {
        if (request_has_response(req)) {
                log_debug("Second response for %s ignored (bug).", req->path);
                if (response)
                        MHD_destroy_response(response);
                http_shared_response_unref(shared);
                return;
        }
        if (response) {
                char id[HTTP_REQUEST_ID_MAX + 1];
                add_common_headers(response);
                /* Shared (prebuilt) responses cannot carry a per-request header. */
                if (MHD_add_response_header(response, "X-Request-ID", http_request_id(req, id)) != MHD_YES)
                        log_debug("Failed to add X-Request-ID header, ignoring.");
        }
        req->status = status;
        req->response = response;
        req->shared = shared;
        request_resume(req);
}

/* Always consumes text (malloc()ed): the response owns it, or it is freed. */
static struct MHD_Response *response_from_text(char *text, size_t size) {
        struct MHD_Response *r = MHD_create_response_from_buffer(size, text, MHD_RESPMEM_MUST_FREE);

        if (!r) {
                free(text);
                return NULL;
        }
        if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES) {
                MHD_destroy_response(r);        /* frees text with it */
                return NULL;
        }
        return r;
}

static struct MHD_Response *response_from_json(json_t *body) {
        size_t size;
        char *buf;

        /* Six significant digits: durations, not 0.092999999999999999. */
        const size_t flags = JSON_COMPACT | JSON_REAL_PRECISION(6);

        size = json_dumpb(body, NULL, 0, flags);
        if (size == 0)
                return NULL;
        buf = malloc(size + 1);
        if (!buf)
                return NULL;
        if (json_dumpb(body, buf, size, flags) != size) {
                free(buf);
                return NULL;
        }
        buf[size] = '\n';       /* friendlier for curl; JSON allows it */
        return response_from_text(buf, size + 1);
}

void http_respond_json(HttpRequest *req, unsigned status, json_t *body) {
        static const char oom[] = "{\"error\":\"internal\",\"message\":\"out of memory\"}\n";
        struct MHD_Response *response = body ? response_from_json(body) : NULL;

        json_decref(body);
        if (!response) {
                status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                response = MHD_create_response_from_buffer(sizeof(oom) - 1, (void *) oom,
                                                           MHD_RESPMEM_PERSISTENT);
                if (!response) {
                        req->failed = true;
                        request_resume(req);
                        return;
                }
        }
        request_set_response(req, status, response, NULL);
}

int http_shared_response_new(unsigned status, json_t *body, HttpSharedResponse **ret) {
        HttpSharedResponse *r;

        if (!body)
                return -ENOMEM;
        r = calloc(1, sizeof(HttpSharedResponse));
        if (!r) {
                json_decref(body);
                return -ENOMEM;
        }
        r->n_ref = 1;
        r->status = status;
        r->keep_alive = response_from_json(body);
        r->close = response_from_json(body);
        json_decref(body);
        if (!r->keep_alive || !r->close ||
            MHD_add_response_header(r->close, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES) {
                http_shared_response_unref(r);
                return -ENOMEM;
        }
        add_common_headers(r->keep_alive);
        add_common_headers(r->close);
        *ret = r;
        return 0;
}

HttpSharedResponse *http_shared_response_ref(HttpSharedResponse *r) {
        if (r)
                r->n_ref++;
        return r;
}

HttpSharedResponse *http_shared_response_unref(HttpSharedResponse *r) {
        if (!r || --r->n_ref > 0)
                return NULL;
        /* MHD keeps its own reference for connections still sending them. */
        if (r->keep_alive)
                MHD_destroy_response(r->keep_alive);
        if (r->close)
                MHD_destroy_response(r->close);
        return mfree(r);
}

void http_respond_shared(HttpRequest *req, HttpSharedResponse *r) {
        request_set_response(req, r->status, NULL, http_shared_response_ref(r));
}

void http_respond_text(HttpRequest *req, unsigned status, const char *content_type, char *text,
                       size_t size) {
        struct MHD_Response *r = MHD_create_response_from_buffer(size, text, MHD_RESPMEM_MUST_FREE);

        if (!r) {
                free(text);
                http_respond_json(req, status, NULL);   /* the out-of-memory answer */
                return;
        }
        if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES) {
                MHD_destroy_response(r);
                http_respond_json(req, status, NULL);
                return;
        }
        request_set_response(req, status, r, NULL);
}

void http_respond_json_text(HttpRequest *req, unsigned status, char *text, size_t size) {
        struct MHD_Response *response = response_from_text(text, size);

        if (!response) {
                http_respond_json(req, status, NULL);   /* the out-of-memory answer */
                return;
        }
        request_set_response(req, status, response, NULL);
}

void http_request_add_response_header(HttpRequest *req, const char *name, const char *value) {
        if (req->response && MHD_add_response_header(req->response, name, value) != MHD_YES)
                log_debug("Failed to add %s header, ignoring.", name);
}

void http_respond_error(HttpRequest *req, unsigned status, const char *code, const char *format, ...) {
        char message[512];
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        /* Messages echo the client's path, which may be any bytes (or cut
         * inside a character by the buffer): jansson refuses strings that
         * are not UTF-8, and that used to turn a 404 into a 500. */
        (void) utf8_scrub(message);
        http_respond_json(req, status, json_pack("{s:s, s:s}", "error", code, "message", message));
}

/* The kernel grows a socket's send buffer to megabytes on its own; for a
 * stream whose client stopped reading, that memory would fill long before
 * our own per-stream limit noticed. Streams are not bulk transfers. */
static void limit_send_buffer(HttpRequest *req) {
        const union MHD_ConnectionInfo *info =
                MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        int size = HTTP_STREAM_SNDBUF;

        if (info && setsockopt(info->connect_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)) < 0)
                log_debug("Failed to limit the send buffer of a stream, ignoring: %s", strerror(errno));
}

void http_respond_stream(HttpRequest *req, const char *content_type,
                         MHD_ContentReaderCallback reader, void *cls,
                         MHD_ContentReaderFreeCallback free_cb) {
        struct MHD_Response *response;

        response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK, reader, cls, free_cb);
        if (!response) {
                if (free_cb)
                        free_cb(cls);
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        if (MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES ||
            /* Tell nginx not to buffer the stream (proxy_buffering off does too). */
            MHD_add_response_header(response, "X-Accel-Buffering", "no") != MHD_YES)
                log_debug("Failed to add stream headers, ignoring.");

        limit_send_buffer(req);
        req->is_stream = true;
        req->server->counters.active_requests--;
        req->server->counters.active_streams++;
        request_set_response(req, MHD_HTTP_OK, response, NULL);
}

ssize_t http_stream_wait(HttpRequest *req) {
        /* MHD_stop_daemon() aborts on suspended connections: once stopping,
         * streams end instead of waiting. */
        if (req->server->stopping)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        request_suspend(req);
        return 0;
}

void http_stream_wake(HttpRequest *req) {
        request_resume(req);
}

void http_request_on_end(HttpRequest *req, HttpEndCallback cb, void *userdata) {
        req->end_cb = cb;
        req->end_userdata = userdata;
}

/* --- request accessors --- */

HttpServer *http_request_server(HttpRequest *req) {
        return req->server;
}

const char *http_request_path(const HttpRequest *req) {
        return req->path;
}

HttpMethod http_request_method(const HttpRequest *req) {
        return req->method;
}

const char *http_request_route_name(const HttpRequest *req) {
        return req->match.route ? req->match.route->name : "unmatched";
}

const RouteParam *http_request_param(const HttpRequest *req, size_t i) {
        return i < req->match.n_params ? &req->match.params[i] : NULL;
}

const char *http_request_query(const HttpRequest *req, const char *key) {
        return MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_request_header(const HttpRequest *req, const char *name) {
        return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char *http_request_body(const HttpRequest *req, size_t *ret_size) {
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
        const char *client = req->connection
                ? MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "X-Request-ID")
                : NULL;

        if (client && request_id_usable(client))
                return client;
        snprintf(buf, HTTP_REQUEST_ID_MAX + 1, "%s-%06" PRIx64, req->server->request_id_prefix, req->seq);
        return buf;
}

/* --- the request state machine, driven by MHD --- */

static enum MHD_Result count_content_length(void *cls, enum MHD_ValueKind kind, const char *key,
                                            const char *value) {
        unsigned *n = cls;
        if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
                (*n)++;
        return MHD_YES;
}

/* A proxy and batond must agree where a body ends, or a request can be
 * smuggled inside another one. libmicrohttpd 0.9.75 quietly picks one of
 * Content-Length and Transfer-Encoding, and one of several Content-Length
 * headers; we refuse such requests instead, as nginx does. */
static bool framing_ambiguous(struct MHD_Connection *connection) {
        unsigned n = 0;

        if (MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
                return true;
        (void) MHD_get_connection_values(connection, MHD_HEADER_KIND, count_content_length, &n);
        return n > 1;
}

/* Headers batond acts on, each of which must come at most once: with two,
 * batond (which sees the first) and a proxy (which may use the last) would
 * disagree on who is asking, for what, or where the body ends. */
static const char *const singleton_headers[] = {
        MHD_HTTP_HEADER_HOST, MHD_HTTP_HEADER_AUTHORIZATION, MHD_HTTP_HEADER_CONTENT_TYPE,
        MHD_HTTP_HEADER_TRANSFER_ENCODING, "Last-Event-ID", "X-Request-ID",
};

typedef struct HeaderScan {
        const char *duplicate;          /* a singleton header seen twice */
        const char *dirty;              /* a header with a control character */
        const char *spaced;             /* a header name with whitespace in it */
        unsigned seen[ELEMENTSOF(singleton_headers)];
} HeaderScan;

/* RFC 9110 5.5: a field value with CR, LF or NUL must be refused (or those
 * replaced), and no other control character is allowed by its grammar; a
 * bare CR reaches us inside the value. (A NUL cannot: libmicrohttpd ends
 * the value there.) */
static bool header_text_clean(const char *s) {
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                if ((c < 0x20 && c != '\t') || c == 0x7f)
                        return false;
        }
        return true;
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value) {
        HeaderScan *scan = cls;

        if (!scan->dirty && (!header_text_clean(key) || (value && !header_text_clean(value))))
                scan->dirty = key;
        /* RFC 9112 5.1: no whitespace between a field name and its colon,
         * and a server must refuse it. libmicrohttpd keeps it in the name,
         * so "Transfer-Encoding : chunked" would escape the framing check
         * while a lenient proxy could frame the body by it. */
        if (!scan->spaced && key[strcspn(key, " \t")] != '\0')
                scan->spaced = key;
        for (size_t i = 0; i < ELEMENTSOF(singleton_headers); i++)
                if (strcasecmp(key, singleton_headers[i]) == 0 && ++scan->seen[i] == 2 && !scan->duplicate)
                        scan->duplicate = singleton_headers[i];
        return MHD_YES;
}

/* libmicrohttpd 0.9.75 waits for a body that never ends when the transfer
 * coding is not "chunked" (xchunked, "gzip, chunked"); RFC 9112 6.3 says
 * such a request gets 400 and the connection closed. */
static bool transfer_encoding_supported(const char *te) {
        size_t n;

        te += strspn(te, " \t");
        n = strlen(te);
        while (n > 0 && (te[n - 1] == ' ' || te[n - 1] == '\t'))
                n--;
        return n == strlen("chunked") && strncasecmp(te, "chunked", n) == 0;
}

/* A NUL in the request target, sent raw or as %00: libmicrohttpd ends the
 * path there, so "/_/health/live%00x" would be served as the probe and a
 * proxy's idea of the path would differ from ours. The raw one shows as a
 * target shorter than the space MHD found for it before the version: both
 * pointers are into the one request line (0.9.75 puts the version right
 * after the target's terminating NUL). */
static bool request_target_has_nul(const HttpRequest *req, const char *version) {
        const char *p = req->raw_uri;

        if (req->target_encoded_nul)
                return true;
        return p && !isempty(version) && version > p &&
               (size_t) (version - p) != req->raw_uri_length + 1;
}

/* RFC 9112 3.2: a server must answer 400 to an HTTP/1.1 request without
 * Host. HTTP/1.0 had none; MHD takes 1.2 to 1.9 for 1.1. */
static bool request_lacks_host(const HttpRequest *req, const char *version) {
        return !streq_ptr(version, MHD_HTTP_VERSION_1_0) &&
               !MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
}

/* Refused before anything else looks at the request, with the reason in
 * 'why': each of these is a way to make batond and a proxy in front of it
 * read one request differently. */
static bool request_misframed(const HttpRequest *req, const char *version, const char *content_length,
                              const char *transfer_encoding, char *why, size_t size) {
        HeaderScan scan = { 0 };

        (void) MHD_get_connection_values(req->connection, MHD_HEADER_KIND, scan_header, &scan);
        if (request_target_has_nul(req, version))
                snprintf(why, size, "the request target contains a NUL byte");
        else if (req->target_unsafe)
                snprintf(why, size, "the request target contains whitespace or a control character");
        else if (request_lacks_host(req, version))
                snprintf(why, size, "an HTTP/1.1 request needs a Host header");
        else if (scan.spaced)
                snprintf(why, size, "whitespace in the header name '%s'", scan.spaced);
        else if (scan.dirty)
                snprintf(why, size, "the %s header contains a control character", scan.dirty);
        else if (content_length && framing_ambiguous(req->connection))
                snprintf(why, size, "ambiguous body length: Content-Length with Transfer-Encoding, "
                                    "or more than one Content-Length");
        else if (transfer_encoding && !transfer_encoding_supported(transfer_encoding))
                snprintf(why, size, "unsupported Transfer-Encoding: only chunked is accepted");
        else if (scan.duplicate)
                snprintf(why, size, "more than one %s header", scan.duplicate);
        else
                return false;
        return true;
}

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

        if (l->metrics)
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
        http_respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "overloaded",
                           "the service is at its connection limit (%" PRIu64 "); retry shortly",
                           s->limits.max_connections);
        if (req->response && MHD_add_response_header(req->response, MHD_HTTP_HEADER_RETRY_AFTER, "1") != MHD_YES)
                log_debug("Failed to add Retry-After header, ignoring.");
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
        char allow[64], why[256];
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
        if (request_misframed(req, version, content_length, transfer_encoding, why, sizeof(why))) {
                http_respond_error(req, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", why);
                return MHD_YES;
        }
        if (content_length && parse_uint64(content_length, &length) == 0 &&
            length > request_body_limit(req)) {
                http_respond_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                                   "request body is %" PRIu64 " bytes, the limit is %" PRIu64,
                                   length, request_body_limit(req));
                return MHD_YES;
        }

        if (r == -ENOENT)
                http_respond_error(req, MHD_HTTP_NOT_FOUND, "not_found", "no such resource: %s",
                                   req->path);
        else if (r == -EMETHOD) {
                struct MHD_Response *response;
                router_format_allow(req->match.allowed, allow, sizeof(allow));
                http_respond_error(req, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                                   "%s takes %s", req->path, allow);
                response = req->response;
                if (response && MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES)
                        log_debug("Failed to add Allow header, ignoring.");
        } else if (!(req->match.route->flags & ROUTE_OPS) && listener_over_limit(req->listener))
                respond_overloaded(req);
        else if ((req->match.route->flags & ROUTE_NEEDS_READY) && !s->ready)
                http_respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready",
                                   "the service is starting; retry shortly");
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
        if (request_has_response(req) || !req->match.route ||
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

static enum MHD_Result request_queue(HttpRequest *req) {
        bool draining = req->server->draining;
        struct MHD_Response *response;
        enum MHD_Result ret;

        /* Answered: what is left of the body is not waited for. */
        read_deadline_stop(req->read_deadline);

        if (req->shared)
                response = draining ? req->shared->close : req->shared->keep_alive;
        else {
                response = req->response;
                /* While draining, tell keep-alive clients to go elsewhere next time. */
                if (draining &&
                    MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES)
                        log_debug("Failed to add Connection: close, ignoring.");
        }
        ret = MHD_queue_response(req->connection, req->status, response);
        req->answered_usec = now_usec(CLOCK_MONOTONIC);
        /* MHD holds its own reference from here on. */
        if (req->response)
                MHD_destroy_response(req->response);
        req->shared = http_shared_response_unref(req->shared);
        req->response = NULL;
        req->queued = true;
        return ret;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *connection, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
        HttpRequest *req = *con_cls;

        if (!req)
                return MHD_NO;          /* allocation failed in on_uri() */

        if (!req->headers_seen) {
                req->headers_seen = true;
                request_unseen_remove(req);
                req->path = http_target_path(url);
                req->method = http_method_from_string(method);
                request_begin(req, version);
                /* Queueing on the first call costs keep-alive in MHD 0.9.75;
                 * do it only for answers that mean "stop sending" (a shed
                 * connection should close, to free its slot). */
                if (request_has_response(req) && (req->status == MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE ||
                                                  req->status == MHD_HTTP_CONTENT_TOO_LARGE ||
                                                  req->status == MHD_HTTP_BAD_REQUEST || req->shed))
                        return request_queue(req);
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
        if (!request_has_response(req) && !req->dispatched) {
                req->dispatched = true;
                read_deadline_stop(req->read_deadline);
                req->match.route->handler(req, req->server->handler_userdata);
        }
        if (req->failed)
                return MHD_NO;
        if (request_has_response(req))
                return request_queue(req);

        /* The handler answers later: park the connection until it does. */
        request_suspend(req);
        return MHD_YES;
}

/* Called as soon as MHD has the request line: the request exists from here. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *connection) {
        HttpListener *l = cls;
        HttpServer *s = l->server;
        HttpRequest *req = calloc(1, sizeof(HttpRequest));

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
        request_unseen_add(req);
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

        request_metrics_observe(&s->metrics, route ? (size_t) (route - s->routes) : SIZE_MAX,
                                req->method, req->status, duration);
        if (!s->log_cb)
                return;
        HttpRequestRecord record = {
                .request = req,
                .route = route ? route->name : METRICS_UNMATCHED,
                .route_flags = route ? route->flags : 0,
                .method = metrics_method_label(metrics_method_index(req->method)),
                .path = req->path,
                .status = req->status,
                .duration_usec = duration,
                .stream = req->is_stream,
        };
        s->log_cb(&record, s->log_userdata);
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        HttpServer *s = cls;
        HttpRequest *req = *con_cls;

        if (!req)
                return;
        *con_cls = NULL;

        if (req->suspended) {   /* cannot happen: MHD resumes before closing */
                req->suspended = false;
                log_debug("Completed a suspended request (bug).");
        }
        request_unseen_remove(req);
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
        if (req->is_stream)
                s->counters.active_streams--;
        else
                s->counters.active_requests--;
        s->counters.requests_total++;
        free(req->body);
        free(req);

        if (s->done_cb)
                s->done_cb(s, s->done_userdata);
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
        HttpServer *s = cls;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *info =
                        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
                s->counters.active_connections++;
                *socket_context = info ? read_deadline_new(s->read_deadlines, info->connect_fd) : NULL;
                if (!*socket_context)
                        log_debug("No read deadline for a new connection (out of memory).");
        } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
                read_deadline_free(*socket_context);
                *socket_context = NULL;
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
 * and logs it through on_mhd_log() while it does. Only then does a request
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
        HttpRequest *next;

        for (HttpRequest *req = s->unseen_head; req; req = next) {
                next = req->unseen_next;
                if (!request_being_refused(req))
                        continue;
                request_unseen_remove(req);
                request_answer_refusal(req);
        }
}

_printf_(2, 0) static void on_mhd_log(void *cls, const char *format, va_list ap) {
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

/* --- event loop integration --- */

static void listener_rearm_timer(HttpListener *l) {
        MHD_UNSIGNED_LONG_LONG timeout_ms;
        int r;

        if (MHD_get_timeout(l->daemon, &timeout_ms) != MHD_YES) {
                r = sd_event_source_set_enabled(l->timer_source, SD_EVENT_OFF);
        } else {
                r = event_timer_arm(l->timer_source, (usec_t) timeout_ms * USEC_PER_MSEC);
        }
        if (r < 0)
                log_error_errno(r, "Failed to re-arm HTTP timer for %s: %s", l->address, strerror(abs(r)));
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
        return 0;
}

void http_server_schedule_run(HttpServer *s) {
        int r = sd_event_source_set_enabled(s->run_source, SD_EVENT_ONESHOT);
        /* -ESTALE: the loop has finished (shutdown resumes the last
         * suspended streams after it); nothing is left to run. */
        if (r < 0 && r != -ESTALE)
                log_error_errno(r, "Failed to schedule HTTP processing: %s", strerror(abs(r)));
}

static int listener_start(HttpServer *s, HttpListener *l, ListenSocket *sock) {
        const union MHD_DaemonInfo *info;
        size_t pool = HTTP_POOL_FOR(s->limits.max_header_bytes);
        unsigned timeout_sec = (unsigned) (s->limits.connection_timeout_usec / USEC_PER_SEC);
        int r;

        l->server = s;
        l->port = sock->port;
        l->metrics = sock->metrics;
        l->address = strdup(sock->address);
        if (!l->address)
                return -ENOMEM;

        l->daemon = MHD_start_daemon(
                MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_TURBO,
                0, NULL, NULL, on_access, s,
                MHD_OPTION_LISTEN_SOCKET, sock->fd,
                MHD_OPTION_CONNECTION_LIMIT,
                (unsigned) (s->limits.max_connections + HTTP_SHED_RESERVE(s->limits.max_connections)),
                MHD_OPTION_CONNECTION_TIMEOUT, timeout_sec,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
                MHD_OPTION_URI_LOG_CALLBACK, on_uri, l,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                /* Not strict: MHD would refuse a missing Host and a space in
                 * the target itself, with its own page and, for the Host,
                 * its head twice (http-refusal.h). batond refuses both, as
                 * JSON (request_misframed()). */
                MHD_OPTION_STRICT_FOR_CLIENT, (int) 0,
                MHD_OPTION_SIGPIPE_HANDLED_BY_APP, (int) 1,
                MHD_OPTION_END);
        if (!l->daemon)
                return -EIO;
        sock->fd = -1;          /* the daemon owns it now */

        info = MHD_get_daemon_info(l->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return -EIO;
        r = sd_event_add_io(s->event, &l->io_source, info->epoll_fd, EPOLLIN, on_listener_io, l);
        if (r < 0)
                return r;
        /* Accuracy 1us: 0 would mean sd-event's default of 250ms, and MHD uses
         * a zero timeout to say "call me again now" (e.g. pipelined requests). */
        r = sd_event_add_time_relative(s->event, &l->timer_source, CLOCK_MONOTONIC, 0, 1,
                                       on_listener_timer, l);
        if (r < 0)
                return r;
        listener_rearm_timer(l);
        return 0;
}

static int make_request_id_prefix(char *buf, size_t size) {
        uint8_t bytes[6];

        if (getrandom(bytes, sizeof(bytes), 0) != (ssize_t) sizeof(bytes))
                return -errno;
        snprintf(buf, size, "%02x%02x%02x%02x%02x%02x", bytes[0], bytes[1], bytes[2], bytes[3],
                 bytes[4], bytes[5]);
        return 0;
}

int http_server_new(sd_event *event, ListenSet *sockets, const HttpLimits *limits,
                    const Route *routes, size_t n_routes, void *handler_userdata,
                    HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        int r;

        s = calloc(1, sizeof(HttpServer));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->limits = *limits;
        s->routes = routes;
        s->n_routes = n_routes;
        s->handler_userdata = handler_userdata;
        s->public_ops = true;

        r = request_metrics_init(&s->metrics, routes, n_routes);
        if (r < 0)
                return r;
        r = make_request_id_prefix(s->request_id_prefix, sizeof(s->request_id_prefix));
        if (r < 0)
                return r;

        r = event_defer_new(event, &s->run_source, on_run, s);
        if (r < 0)
                return r;
        r = read_deadlines_new(event, s->limits.connection_timeout_usec, &s->read_deadlines);
        if (r < 0)
                return r;

        s->listeners = calloc(sockets->n_sockets, sizeof(HttpListener));
        if (!s->listeners)
                return -ENOMEM;
        for (size_t i = 0; i < sockets->n_sockets; i++) {
                r = listener_start(s, &s->listeners[i], &sockets->sockets[i]);
                s->n_listeners = i + 1;
                if (r < 0)
                        return log_error_errno(r, "Failed to start HTTP server on %s: %s",
                                               sockets->sockets[i].address, strerror(abs(r)));
                log_info("Serving HTTP on %s (%s socket '%s').", sockets->sockets[i].address,
                         sockets->from_systemd ? "systemd" : "own", sockets->sockets[i].name);
        }
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
        while (s->suspended_head)
                request_resume(s->suspended_head);

        for (size_t i = 0; i < s->n_listeners; i++) {
                HttpListener *l = &s->listeners[i];
                sd_event_source_disable_unref(l->io_source);
                sd_event_source_disable_unref(l->timer_source);
                if (l->daemon)
                        MHD_stop_daemon(l->daemon);
                free(l->address);
        }
        free(s->listeners);
        /* After MHD stopped: it closed every connection, freeing its deadline. */
        read_deadlines_free(s->read_deadlines);
        request_metrics_done(&s->metrics);
        sd_event_source_disable_unref(s->run_source);
        sd_event_unref(s->event);
        return mfree(s);
}

void http_server_set_request_done_callback(HttpServer *s, HttpRequestDoneCallback cb, void *userdata) {
        s->done_cb = cb;
        s->done_userdata = userdata;
}

void http_server_set_request_log_callback(HttpServer *s, HttpRequestLogCallback cb, void *userdata) {
        s->log_cb = cb;
        s->log_userdata = userdata;
}

void http_server_set_public_ops(HttpServer *s, bool public_ops) {
        s->public_ops = public_ops;
}

const RequestMetrics *http_server_request_metrics(const HttpServer *s) {
        return &s->metrics;
}

uint16_t http_server_public_port(const HttpServer *s) {
        for (size_t i = 0; i < s->n_listeners; i++)
                if (!s->listeners[i].metrics)
                        return s->listeners[i].port;
        return 0;
}

void http_server_set_ready(HttpServer *s, bool ready) {
        s->ready = ready;
}

void http_server_set_body_limits(HttpServer *s, uint64_t max_body_bytes, uint64_t max_event_bytes) {
        s->limits.max_body_bytes = max_body_bytes;
        s->limits.max_event_bytes = max_event_bytes;
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
        return s->draining;
}

HttpCounters http_server_counters(const HttpServer *s) {
        HttpCounters c = s->counters;

        c.connections_read_timeout = s->read_deadlines ? read_deadlines_expired(s->read_deadlines) : 0;
        return c;
}

int http_server_add_connection(HttpServer *s, int fd) {
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        HttpListener *l = NULL;

        /* The self-probe asks for /_/health/live: a listener that serves it. */
        for (size_t i = 0; i < s->n_listeners && !l; i++)
                if (s->listeners[i].metrics || s->public_ops)
                        l = &s->listeners[i];
        if (!l) {
                close(fd);
                return -ENOTCONN;
        }
        /* MHD closes fd itself when this fails. */
        if (MHD_add_connection(l->daemon, fd, (const struct sockaddr *) &addr,
                               sizeof(sa_family_t)) != MHD_YES)
                return errno > 0 ? -errno : -EIO;
        http_server_schedule_run(s);
        return 0;
}
