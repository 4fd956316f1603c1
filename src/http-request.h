/* SPDX-License-Identifier: MIT */
#pragma once

/* A request, as a route handler sees it: what was asked (path, method,
 * route parameters, query, headers, body, request id) and when it ends.
 * Answers are http-response.h's. */

#include "http-router.h"
#include "util.h"

typedef struct HttpServer HttpServer;

/* The longest request id batond takes from X-Request-ID (nginx's
 * $request_id is 32); longer or unusual ones are replaced by its own. */
#define HTTP_REQUEST_ID_MAX 64

HttpServer *http_request_server(HttpRequest *req);
const char *http_request_path(const HttpRequest *req);
HttpMethod http_request_method(const HttpRequest *req);
const char *http_request_route_name(const HttpRequest *req);
/* The i-th {param} of the route; NULL when absent. */
const RouteParam *http_request_param(const HttpRequest *req, size_t i);
const char *http_request_query(const HttpRequest *req, const char *key);
const char *http_request_header(const HttpRequest *req, const char *name);
/* Valid only during the route handler's call: freed (and its bytes
 * returned to MAX_BUFFERED_BODY_BYTES) as soon as the handler returns. */
const char *http_request_body(const HttpRequest *req, size_t *ret_size);
/* The client's X-Request-ID when it sent a usable one, else batond's own
 * ("<12 hex digits of this process>-<counter>"); in buf. */
const char *http_request_id(const HttpRequest *req, char buf[HTTP_REQUEST_ID_MAX + 1]);

/* Runs cb once when the request ends, whatever the reason (answered, client
 * gone, server stopping), just before the request is freed. Owners of a
 * request that waits for an answer or streams use it to forget it. */
typedef void (*HttpEndCallback)(HttpRequest *req, void *userdata);
void http_request_on_end(HttpRequest *req, HttpEndCallback cb, void *userdata);
