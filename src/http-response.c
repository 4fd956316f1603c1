/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>

#include "http-internal.h"
#include "log.h"
#include "sse-frame.h"

/* --- responses --- */

static void add_common_headers(struct MHD_Response *response) {
        /* Health and API answers describe the present: never cache them. */
        if (MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES)
                log_debug("Failed to add Cache-Control header, ignoring.");
}

/* Browsers on other origins read an answer of the event API only with
 * these (http-cors.h); and with a list of origins, every answer of its
 * paths varies by Origin. */
static void add_cors_headers(HttpRequest *req, struct MHD_Response *response) {
        unsigned methods = http_request_cors_methods(req);
        CorsAnswer a;

        if (!req->server->cors || methods == 0 || !req->connection)
                return;
        cors_decide(req->server->cors, req->method, http_request_header(req, "Origin"),
                    http_request_header(req, "Access-Control-Request-Method"), methods, &a);
        for (size_t i = 0; i < a.n_headers; i++)
                if (MHD_add_response_header(response, a.headers[i].name, a.headers[i].value) != MHD_YES)
                        log_debug("Failed to add %s header, ignoring.", a.headers[i].name);
}

bool http_request_has_response(const HttpRequest *req) {
        assert(req);

        return req->response || req->shared || req->queued;
}

/* Installs a ready response (owned or shared) on the request; if the request
 * waits suspended for it, wakes it so the access handler queues it. */
static void request_set_response(HttpRequest *req, unsigned status, struct MHD_Response *response,
                                 HttpSharedResponse *shared) {
        /* One answer per request: a second would be a handler's bug. */
        assert(!http_request_has_response(req));
        assert(!response != !shared);

        if (response) {
                char id[HTTP_REQUEST_ID_MAX + 1];
                add_common_headers(response);
                /* Shared (prebuilt) responses cannot carry a per-request header. */
                if (MHD_add_response_header(response, "X-Request-ID", http_request_id(req, id)) != MHD_YES)
                        log_debug("Failed to add X-Request-ID header, ignoring.");
                add_cors_headers(req, response);
        }
        req->status = status;
        req->response = response;
        req->shared = shared;
        http_request_resume(req);
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

        assert(req);

        json_decref(body);
        if (!response) {
                status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                response = MHD_create_response_from_buffer(sizeof(oom) - 1, (void *) oom,
                                                           MHD_RESPMEM_PERSISTENT);
                if (!response) {
                        req->failed = true;
                        http_request_resume(req);
                        return;
                }
        }
        request_set_response(req, status, response, NULL);
}

int http_shared_response_new(unsigned status, json_t *body, HttpSharedResponse **ret) {
        HttpSharedResponse *r;

        assert(ret);

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
        assert(req && r);

        request_set_response(req, r->status, NULL, http_shared_response_ref(r));
}

void http_respond_text(HttpRequest *req, unsigned status, const char *content_type, char *text,
                       size_t size) {
        assert(req && content_type && text);

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

void http_respond_empty(HttpRequest *req, unsigned status) {
        assert(req);

        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);

        if (!r) {
                http_respond_json(req, status, NULL);   /* the out-of-memory answer */
                return;
        }
        request_set_response(req, status, r, NULL);
}

void http_respond_json_text(HttpRequest *req, unsigned status, char *text, size_t size) {
        assert(req && text);

        struct MHD_Response *response = response_from_text(text, size);

        if (!response) {
                http_respond_json(req, status, NULL);   /* the out-of-memory answer */
                return;
        }
        request_set_response(req, status, response, NULL);
}

void http_request_add_response_header(HttpRequest *req, const char *name, const char *value) {
        assert(req && name && value);

        if (req->response && MHD_add_response_header(req->response, name, value) != MHD_YES)
                log_debug("Failed to add %s header, ignoring.", name);
}

bool http_request_accepts_event_stream(const HttpRequest *req) {
        assert(req);

        const char *accept = req->connection
                ? MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT)
                : NULL;

        return accept && strcasestr(accept, "text/event-stream");
}

/* "retry: MS

event: unavailable
data: {...}

", a whole response. */
static void respond_unavailable_event(HttpRequest *req, json_t *body) {
        _cleanup_free_ char *data = body ? json_dumps(body, JSON_COMPACT) : NULL;
        SseBuffer b = { 0 };
        char *text;

        json_decref(body);
        if (!data || sse_append_retry(&b, req->server->stream_retry_hint_usec / USEC_PER_MSEC) < 0 ||
            sse_append_event(&b, NULL, "unavailable", data) < 0) {
                sse_buffer_done(&b);
                http_respond_json(req, MHD_HTTP_SERVICE_UNAVAILABLE, NULL);
                return;
        }
        text = b.data;          /* start is 0: nothing was taken */
        http_respond_text(req, MHD_HTTP_OK, "text/event-stream", text, b.end);
}

_printf_(4, 0)
static void respond_errorv(HttpRequest *req, unsigned status, const char *code, const char *format, va_list ap) {
        char message[512];
        json_t *body;

        assert(req && code);

        (void) vsnprintf(message, sizeof(message), format, ap);
        /* Messages echo the client's path, which may be any bytes (or cut
         * inside a character by the buffer): jansson refuses strings that
         * are not UTF-8, and that used to turn a 404 into a 500. */
        (void) utf8_scrub(message);
        body = json_pack("{s:s, s:s}", "error", code, "message", message);
        if (status == MHD_HTTP_SERVICE_UNAVAILABLE && req->match.route &&
            (req->match.route->flags & ROUTE_EVENT_STREAM) && http_request_accepts_event_stream(req)) {
                req->unavailable_event = true;
                respond_unavailable_event(req, body);
                return;
        }
        http_respond_json(req, status, body);
}

void http_respond_error(HttpRequest *req, unsigned status, const char *code, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        respond_errorv(req, status, code, format, ap);
        va_end(ap);
}

void http_respond_retry_later(HttpRequest *req, const char *code, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        respond_errorv(req, MHD_HTTP_SERVICE_UNAVAILABLE, code, format, ap);
        va_end(ap);
        http_request_add_response_header(req, MHD_HTTP_HEADER_RETRY_AFTER, "1");
}

/* The kernel grows a socket's send buffer to megabytes on its own; for a
 * stream whose client stopped reading, that memory would fill long before
 * our own per-stream limit noticed. Streams are not bulk transfers. */
static void limit_send_buffer(HttpRequest *req) {
        const union MHD_ConnectionInfo *info =
                MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        int size = HTTP_STREAM_SNDBUF;

        if (info && setsockopt(info->connect_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)) < 0)
                log_debug_errno(errno, "Failed to limit the send buffer of a stream, ignoring: %m");
}

void http_respond_stream(HttpRequest *req, const char *content_type,
                         MHD_ContentReaderCallback reader, void *cls,
                         MHD_ContentReaderFreeCallback free_cb) {
        struct MHD_Response *response;

        assert(req && content_type);

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
        assert(!req->is_stream && req->server->counters.active_requests > 0);
        req->is_stream = true;
        req->server->counters.active_requests--;
        req->server->counters.active_streams++;
        request_set_response(req, MHD_HTTP_OK, response, NULL);
}

ssize_t http_stream_wait(HttpRequest *req) {
        assert(req);

        /* MHD_stop_daemon() aborts on suspended connections: once stopping,
         * streams end instead of waiting. */
        if (req->server->stopping)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        http_request_suspend(req);
        return 0;
}

void http_stream_abort(HttpRequest *req) {
        const union MHD_ConnectionInfo *info;

        assert(req);

        info = MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        /* A reset, not a close: what the kernel still holds for a client
         * that does not read is dropped at once, and the client learns at
         * its next read instead of after reading all of it. */
        if (info && setsockopt(info->connect_fd, SOL_SOCKET, SO_LINGER, &(struct linger) { .l_onoff = 1 },
                               sizeof(struct linger)) < 0)
                log_debug_errno(errno, "Failed to set SO_LINGER on a stream's connection, ignoring: %m");
        if (info && shutdown(info->connect_fd, SHUT_RDWR) < 0)
                log_debug_errno(errno, "Failed to shut down a stream's connection, ignoring: %m");
        /* MHD notices on its next look at the connection. */
        http_request_resume(req);
}

void http_stream_wake(HttpRequest *req) {
        assert(req);

        http_request_resume(req);
}

void http_request_on_end(HttpRequest *req, HttpEndCallback cb, void *userdata) {
        assert(req);

        req->end_cb = cb;
        req->end_userdata = userdata;
}

enum MHD_Result http_request_queue_response(HttpRequest *req) {
        assert(req);

        /* Draining, tell keep-alive clients to go elsewhere next time; from
         * the shedding reserve, give the slot back (HTTP_SHED_RESERVE). */
        bool close_after = req->server->draining || req->over_limit;
        struct MHD_Response *response;
        enum MHD_Result ret;

        /* Answered: what is left of the body is not waited for. */
        read_deadline_stop(req->read_deadline);

        if (req->shared)
                response = close_after ? req->shared->close : req->shared->keep_alive;
        else {
                response = req->response;
                if (close_after &&
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
