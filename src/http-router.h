/* SPDX-License-Identifier: MIT */
#pragma once

/* Route matching: which route of a table takes a method and path. Pure
 * logic, no I/O: http-request.c asks router_match() and turns the answer
 * into a response (404, 405 with Allow, 503 before ready, or the
 * handler's). Route names are stable labels for logs and metrics, never
 * raw paths. The table itself is http-routes.c's. */

#include "util.h"

typedef enum HttpMethod {
        HTTP_GET     = 1 << 0,
        HTTP_HEAD    = 1 << 1,
        HTTP_POST    = 1 << 2,
        HTTP_PUT     = 1 << 3,
        HTTP_DELETE  = 1 << 4,
        HTTP_PATCH   = 1 << 5,
        HTTP_OPTIONS = 1 << 6,
        HTTP_OTHER   = 1 << 7,
} HttpMethod;

#define HTTP_ANY_METHOD 0xffu

typedef enum RouteFlags {
        ROUTE_NEEDS_READY  = 1 << 0,    /* 503 until startup completed */
        ROUTE_ACCEPTS_BODY = 1 << 1,    /* the request body is read and kept */
        ROUTE_EVENT_BODY   = 1 << 2,    /* body limited by MAX_EVENT_BYTES, not MAX_BODY_BYTES */
        ROUTE_OPS          = 1 << 3,    /* health and metrics: served on the metrics socket, and
                                         * on the public ones unless PUBLIC_HEALTH=false */
        ROUTE_QUIET        = 1 << 4,    /* a 5xx is an answer, not an error (the ready probe's
                                         * 503): not logged as one */
        ROUTE_EVENT_STREAM = 1 << 5,    /* answers text/event-stream: a 503 to a request that
                                         * accepts it is given as an event (see
                                         * http_respond_error()) */
        ROUTE_CORS         = 1 << 6,    /* browsers on the origins of CORS_ORIGINS may call it
                                         * (http-cors.h) */
} RouteFlags;

typedef struct HttpRequest HttpRequest;
typedef void (*RouteHandler)(HttpRequest *req, void *userdata);

typedef struct Route {
        const char *name;
        /* Literal segments, "{name}" for one non-empty segment, or a final
         * "*" for any rest (matched only when nothing more precise does). */
        const char *pattern;
        unsigned methods;               /* HttpMethod bits; GET implies HEAD */
        unsigned flags;                 /* RouteFlags */
        RouteHandler handler;
        /* NULL, or runs as soon as the headers are in, before any of the
         * body is read: it refuses the request by answering it (the body
         * is then never read nor buffered), or lets it go on by not. */
        RouteHandler admit;
} Route;

#define ROUTE_PARAMS_MAX 2

typedef struct RouteParam {
        const char *value;              /* points into the matched path */
        size_t length;
} RouteParam;

typedef struct RouteMatch {
        const Route *route;
        RouteParam params[ROUTE_PARAMS_MAX];
        size_t n_params;
        unsigned allowed;               /* on -EMETHOD: the methods the path takes */
        unsigned cors_methods;          /* on -EMETHOD: those of them its ROUTE_CORS routes take */
} RouteMatch;

/* Returned by router_match() when the path exists but not for this method. */
#define EMETHOD EOPNOTSUPP

HttpMethod http_method_from_string(const char *method);

/* 0 and *ret filled when a route matches; -ENOENT when no pattern matches the
 * path; -EMETHOD (with ret->allowed and ret->cors_methods) when patterns
 * match but none takes the method (a CORS preflight's OPTIONS, say). Exact and parameter patterns win over wildcards. */
int router_match(const Route *routes, size_t n_routes, const char *path, HttpMethod method,
                 RouteMatch *ret);

/* Writes "GET, HEAD, POST" for the methods in mask; returns buf. */
const char *router_format_allow(unsigned mask, char *buf, size_t size);
