/* SPDX-License-Identifier: MIT */
#pragma once

/* Cross-origin requests from browsers (the CORS protocol of the Fetch
 * standard): which origins CORS_ORIGINS lets read the event API's answers,
 * and the headers that tell a browser so. Pure logic, no I/O: the HTTP
 * server asks cors_decide() whether a preflight gets its 204 (http-request.c)
 * and which headers every answer of a ROUTE_CORS route carries
 * (http-response.c).
 *
 * A list of origins allows those, with credentials (cookies: a baton_token
 * cookie is how an EventSource, which cannot set headers, will carry a
 * token): the request's Origin is echoed, with
 * "Access-Control-Allow-Credentials: true" and "Vary: Origin". "*" allows
 * every origin and never with credentials: browsers refuse "*" for a
 * request with credentials, and echoing any origin with them would hand
 * every site a logged-in user's access. Other origins get no
 * Access-Control-* header at all, so their pages cannot read the answers. */

#include "http-router.h"
#include "util.h"

typedef struct CorsPolicy {
        bool any;                       /* "*": every origin, without credentials */
        char **origins;                 /* as browsers send them: lower-case scheme and host */
        size_t n_origins;
} CorsPolicy;

CorsPolicy *cors_policy_free(CorsPolicy *p);
DEFINE_POINTER_CLEANUP(CorsPolicy, cors_policy_free);

/* Parses CORS_ORIGINS: empty (no CORS: *ret = NULL), "*", or origins
 * (scheme://host[:port]) separated by commas, blanks around each ignored.
 * Scheme and host are case-insensitive and kept in lower case; an origin
 * with a path or a trailing slash, a port that is its scheme's default (a
 * browser never sends it), "null" or '*' among origins is refused. On
 * -EINVAL, *ret_problem says why and *ret_item / *ret_item_length point at
 * the origin in spec it is about (NULL / 0 when about the whole value).
 * ret may be NULL to only check. */
int cors_policy_parse(const char *spec, CorsPolicy **ret, const char **ret_problem,
                      const char **ret_item, size_t *ret_item_length);

/* Whether the policy allows this Origin (NULL: the request has none). */
bool cors_origin_allowed(const CorsPolicy *policy, const char *origin);

#define CORS_HEADERS_MAX 6

typedef struct CorsHeader {
        const char *name;
        const char *value;              /* static, the request's Origin, or in CorsAnswer */
} CorsHeader;

typedef struct CorsAnswer {
        /* A preflight from an allowed origin: answer 204 with the headers
         * below instead of what the path would answer OPTIONS. */
        bool preflight;
        size_t n_headers;
        CorsHeader headers[CORS_HEADERS_MAX];
        char allow_methods[64];         /* Access-Control-Allow-Methods' value */
} CorsAnswer;

/* The headers of batond's answer to a request on a path whose CORS routes
 * take route_methods (HttpMethod bits; 0: not a CORS path, no headers).
 * origin is the request's Origin header, request_method its
 * Access-Control-Request-Method (either NULL when absent): an OPTIONS
 * request with both is a preflight. policy NULL: CORS is off, no headers. */
void cors_decide(const CorsPolicy *policy, HttpMethod method, const char *origin,
                 const char *request_method, unsigned route_methods, CorsAnswer *ret);

/* What a preflight allows, and for how long a browser may keep it. */
#define CORS_ALLOW_HEADERS "Authorization, Content-Type, Last-Event-ID, Idempotency-Key"
#define CORS_MAX_AGE_SEC 600
/* The headers of an answer, beyond the CORS-safelisted ones, that a page
 * may read. */
#define CORS_EXPOSE_HEADERS "Retry-After, X-Request-ID"
