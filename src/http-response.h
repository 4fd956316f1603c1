/* SPDX-License-Identifier: MIT */
#pragma once

/* Answers to a request: JSON (built per request or shared), text, errors
 * in batond's {"error": ..., "message": ...} form, and streams whose body
 * comes later. A handler answers at once or later from any loop callback;
 * until then the request waits suspended. */

#include <jansson.h>
#include <microhttpd.h>

#include "http-request.h"

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

/* Responds with no body at all (a 204). */
void http_respond_empty(HttpRequest *req, unsigned status);

/* Adds a header to the response just set (before it is queued). */
void http_request_add_response_header(HttpRequest *req, const char *name, const char *value);

/* Responds {"error": code, "message": ...}.
 *
 * A 503 on a ROUTE_EVENT_STREAM route to a request that accepts
 * text/event-stream (an EventSource) is given as a whole, ended stream
 * instead: 200, "retry: <STREAM_RETRY_HINT>", then "event: unavailable"
 * with that JSON as its data. A browser's EventSource gives up for good
 * on any status but 200, and retries after a 200 ends: it comes back. */
void http_respond_error(HttpRequest *req, unsigned status, const char *code,
                        const char *format, ...) _printf_(4, 5);
/* 503 with "Retry-After: 1": the service is fine, but full or not yet
 * able to serve this now (overloaded, unavailable). */
void http_respond_retry_later(HttpRequest *req, const char *code, const char *format, ...) _printf_(3, 4);

/* Does the request accept text/event-stream (an EventSource's Accept)? */
bool http_request_accepts_event_stream(const HttpRequest *req);

/* MHD's own buffer in a stream response. For chunked HTTP/1.1 streams MHD
 * has the reader write straight into the connection's memory and never
 * uses it; only HTTP/1.0 clients get their data through it. It is
 * allocated (and zeroed) per stream, so it is kept small. */
#define HTTP_STREAM_BLOCK 256

/* The socket send buffer of a stream (the kernel doubles it). */
#define HTTP_STREAM_SNDBUF (64 * 1024)
/* ... and of every other connection. Left to itself the kernel grows it to
 * megabytes for a client that reads slowly, beyond every bound batond
 * keeps (a history page is counted until its last byte left batond). */
#define HTTP_SNDBUF (128 * 1024)

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
/* Resets the stream's connection: for a client that reads nothing at all,
 * which MHD would otherwise keep for ever. */
void http_stream_abort(HttpRequest *req);
