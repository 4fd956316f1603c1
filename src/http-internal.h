/* SPDX-License-Identifier: MIT */
#pragma once

/* What the http-*.c files share and nothing else sees: the server, its
 * listeners and requests, and the steps of a request's life that one file
 * starts and another finishes. http-server.c runs libmicrohttpd on the
 * loop; http-request.c follows a request through MHD's callbacks;
 * http-response.c builds answers and hands them to MHD; http-framing.c
 * refuses requests a proxy could read differently. */

#include <microhttpd.h>

#include "http-read-deadline.h"
#include "list.h"
#include "http-response.h"
#include "http-server.h"

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

/* Connections the internal daemon takes at once: the watchdog has one
 * probe out at a time; a few more leave room for one that lingers. */
#define HTTP_INTERNAL_CONNECTIONS 4

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
        bool internal;                  /* the watchdog's: ops routes only, no socket */
        bool quiesced;
} HttpListener;

struct HttpServer {
        sd_event *event;
        HttpListener *listeners;
        size_t n_listeners;
        HttpListener internal;          /* http_server_add_connection()'s */
        sd_event_source *run_source;
        sd_event_source *again_source;  /* MHD said it has work left (timeout 0) */

        const Route *routes;
        size_t n_routes;
        void *handler_userdata;
        HttpLimits limits;

        usec_t stream_retry_hint_usec;  /* the retry: of an "unavailable" event */
        CorsPolicy *cors;               /* CORS_ORIGINS; NULL: no CORS headers */
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
        ListNode suspended;
        /* While any request is held for readiness: ends the holds that ran
         * out (HTTP_HOLD_UNTIL_READY_USEC). */
        sd_event_source *hold_timer;
        usec_t hold_until_ready_usec;
        /* Requests whose line MHD has parsed but whose headers batond has
         * not seen yet: where to look for those MHD refuses by itself. */
        ListNode unseen;

        /* Per connection: CONNECTION_TIMEOUT to send a whole request. */
        ReadDeadlines *read_deadlines;

        /* Bodies being read, as counted at their headers (body_reserved):
         * at most limits.max_buffered_body_bytes. */
        uint64_t body_bytes_reserved;
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
        bool is_stream;
        bool failed;                    /* no response possible: close */
        bool shed;                      /* answered 503 at the connection limit */
        bool over_limit;                /* on a connection of the shedding reserve */
        bool stop_body;                 /* refused by its route's admit: the body is not read */
        bool unavailable_event;         /* a 503 given as a 200 "unavailable" event */
        bool refused;                   /* refused by MHD, answered by batond (http-refusal.h) */
        bool held;                      /* needs readiness, came before it: waits for it */

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
        uint64_t body_reserved;         /* of the server's body_bytes_reserved */

        HttpEndCallback end_cb;
        void *end_userdata;

        ListNode suspended;             /* in the server's, while MHD holds it suspended */
        ListNode unseen;                /* in the server's, from its line to its headers */
};

/* http-request.c: MHD's callbacks, registered by http-server.c. */
void *http_on_uri(void *cls, const char *uri, struct MHD_Connection *connection);
enum MHD_Result http_on_access(void *cls, struct MHD_Connection *connection, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls);
void http_on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                       enum MHD_RequestTerminationCode toe);
void http_on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe);
void http_on_mhd_log(void *cls, const char *format, va_list ap) _printf_(2, 0);

/* http-request.c: a request waits suspended in MHD until it has an answer
 * (or, for a stream, more data); the server resumes them all at a stop. */
void http_request_suspend(HttpRequest *req);
void http_request_resume(HttpRequest *req);

/* How often held requests are looked at for a hold that ran out. */
#define HTTP_HOLD_CHECK_USEC (250 * USEC_PER_MSEC)
/* Arms that look, unless it is armed. */
void http_server_arm_hold_timer(HttpServer *s);

/* http-request.c: the methods of the path's ROUTE_CORS routes (the
 * request's route, or on a 405 those the path takes); 0 when none. */
unsigned http_request_cors_methods(const HttpRequest *req);

/* http-response.c */
bool http_request_has_response(const HttpRequest *req);
/* Hands the installed answer to MHD (keep-alive unless draining). */
enum MHD_Result http_request_queue_response(HttpRequest *req);

/* http-framing.c: true, with the reason in 'why', when the request must be
 * refused before anything else looks at it. */
bool http_request_misframed(const HttpRequest *req, const char *version, const char *content_length,
                            const char *transfer_encoding, char *why, size_t size);
