/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdio.h>
#include <strings.h>

#include "http-internal.h"

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
bool http_request_misframed(const HttpRequest *req, const char *version, const char *content_length,
                              const char *transfer_encoding, char *why, size_t size) {
        HeaderScan scan = { 0 };

        assert(req && version && why);

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
