/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <time.h>

#include "http-refusal.h"
#include "parse-util.h"

void http_refusal_decide(const char *content_length, bool transfer_encoding, size_t header_size,
                         uint64_t max_header_bytes, HttpRefusal *ret) {
        uint64_t length;
        int r;

        assert(ret);

        *ret = (HttpRefusal) { .status = 400, .code = "bad_request" };
        if (content_length && !transfer_encoding) {
                r = parse_uint64(content_length, &length);
                if (r == -ERANGE) {
                        ret->status = 413;
                        ret->code = "payload_too_large";
                        snprintf(ret->message, sizeof(ret->message),
                                 "the Content-Length is past 2^64 bytes");
                        return;
                }
                if (r < 0) {
                        snprintf(ret->message, sizeof(ret->message),
                                 "the Content-Length is not a number of bytes (digits only)");
                        return;
                }
        }
        /* libmicrohttpd also refuses a Cookie header it has no memory left
         * to parse: a header block past what batond takes anyway. */
        if (header_size > max_header_bytes) {
                ret->status = 431;
                ret->code = "header_too_large";
                snprintf(ret->message, sizeof(ret->message),
                         "request headers are %zu bytes, the limit is %" PRIu64, header_size,
                         max_header_bytes);
                return;
        }
        snprintf(ret->message, sizeof(ret->message), "the request is malformed");
}

static const char *reason_phrase(unsigned status) {
        switch (status) {
        case 400: return "Bad Request";
        case 413: return "Content Too Large";
        case 431: return "Request Header Fields Too Large";
        default:  return "Error";
        }
}

int http_refusal_format(const HttpRefusal *refusal, const char *request_id, const char *date,
                        char *buf, size_t size) {
        _cleanup_(json_decrefp) json_t *body = NULL;
        char text[256];
        size_t n;
        int len;

        assert(refusal && request_id && date && buf);

        body = json_pack("{s:s, s:s}", "error", refusal->code, "message", refusal->message);
        if (!body)
                return -ENOMEM;
        n = json_dumpb(body, text, sizeof(text) - 1, JSON_COMPACT);
        if (n == 0 || n >= sizeof(text) - 1)
                return -ENOBUFS;
        text[n++] = '\n';       /* as every other JSON answer */
        len = snprintf(buf, size,
                       "HTTP/1.1 %u %s\r\n"
                       "Date: %s\r\n"
                       "Connection: close\r\n"
                       "Content-Type: application/json\r\n"
                       "Cache-Control: no-store\r\n"
                       "X-Request-ID: %s\r\n"
                       "Content-Length: %zu\r\n"
                       "\r\n"
                       "%.*s",
                       refusal->status, reason_phrase(refusal->status), date, request_id, n,
                       (int) n, text);
        if (len < 0 || (size_t) len >= size)
                return -ENOBUFS;
        return len;
}

const char *http_date_format(time_t t, char buf[HTTP_DATE_MAX]) {
        struct tm tm;

        assert(buf);

        /* strftime's %a and %b follow the locale; batond never sets one,
         * so they are the C locale's English names the RFC wants. */
        if (!gmtime_r(&t, &tm) || strftime(buf, HTTP_DATE_MAX, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
                buf[0] = '\0';
        return buf;
}
