/* SPDX-License-Identifier: MIT */
#pragma once

/* Requests that libmicrohttpd 0.9.75 refuses by itself while it parses the
 * headers, before batond's handler sees them: a Content-Length it cannot
 * parse (RFC 9110 8.6: digits only) or one past 2^64. For those it sends
 * its HTML page with the response head written twice (its state machine
 * builds the head once when it refuses and again when it replies), so a
 * client takes the second head for the first one's body. batond answers
 * such a request itself (http-request.c: answer_refusals()); this module is the
 * pure part of that: what to answer, and the bytes of the answer. */

#include <stdint.h>

#include "util.h"

typedef struct HttpRefusal {
        unsigned status;
        const char *code;               /* the JSON "error" */
        char message[160];
} HttpRefusal;

/* What batond answers a request libmicrohttpd refused: content_length is
 * the header's value (NULL without one), transfer_encoding whether the
 * request has one (then Content-Length is not what was refused),
 * header_size the size of the request's header block. */
void http_refusal_decide(const char *content_length, bool transfer_encoding, size_t header_size,
                         uint64_t max_header_bytes, HttpRefusal *ret);

/* A whole HTTP/1.1 response for it: status line, Date, Connection: close,
 * the JSON content type, Cache-Control: no-store, X-Request-ID, a
 * Content-Length that matches, and the body {"error":...,"message":...}.
 * date is an IMF-fixdate (RFC 9110 5.6.7). Returns the length written
 * (without the NUL), or -ENOBUFS when it does not fit. */
int http_refusal_format(const HttpRefusal *refusal, const char *request_id, const char *date,
                        char *buf, size_t size);

/* The IMF-fixdate of t ("Sun, 06 Nov 1994 08:49:37 GMT"); buf holds 30. */
#define HTTP_DATE_MAX 30
const char *http_date_format(time_t t, char buf[HTTP_DATE_MAX]);
