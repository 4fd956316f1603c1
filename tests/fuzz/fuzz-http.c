/* SPDX-License-Identifier: MIT */
/* The request path: the raw bytes of one client connection go through
 * libmicrohttpd and batond's HttpServer (header and body limits, framing
 * checks, request ids, router, route table, handlers, access log) exactly
 * as an accepted connection does: the harness hands one end of a socket
 * pair to http_server_add_connection(), writes the input into the other and
 * runs the sd-event loop until nothing moves.
 *
 * There is no database: the Manager is built (manager_new()) but never
 * started, so what needs PostgreSQL answers as it does while PostgreSQL is
 * down (publish is validated, then 503; history 503; the probes say
 * starting). Each input gets a fresh HttpServer, freed at the end (which
 * ends streams and parked requests as a stop does), so nothing carries over.
 *
 * Invariants on what comes back, read one answer at a time and framed as
 * the server parsed each request (its access-log records say which were
 * HEAD; a prefix check of the input cannot, as an empty line before "HEAD"
 * showed): HTTP/1.x status lines; one head per answer and a body that is
 * exactly what the head says; nothing after an answer that closes; never a
 * 500 (there is no internal error to report here); JSON bodies parse;
 * every {"error": ...} answer has a message and an X-Request-ID; and the
 * loop goes quiet (a request that keeps it busy is a busy-loop bug).
 *
 * Input: the bytes the client sends, optionally after a first line
 * "@FLAGS": s = not ready yet (the 503 not_ready paths), m = the socket is
 * a metrics socket, d = draining, e = the client half-closes after sending.
 * (A public socket with PUBLIC_HEALTH=false is out of reach:
 * http_server_add_connection() feeds only sockets that serve the probes.) */

#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fuzz-util.h"
#include "log.h"
#include "manager.h"
#include "http-routes.h"

/* sd_event_run() calls (each dispatches one source) before a connection
 * that has not gone quiet counts as a busy loop. */
#define PUMP_MAX 100000
#define REPLY_MAX (1024 * 1024)

/* Small limits, so that 413 and 431 are a few KiB of input away; tokens
 * set, so that both sides of the Authorization checks are reachable. */
static char *environment[] = {
        (char *) "DATABASE_URL=postgres://fuzz@127.0.0.1:1/fuzz",
        (char *) "MAX_CONNECTIONS=16",
        (char *) "CONNECTION_TIMEOUT=1h",
        (char *) "MAX_HEADER_BYTES=1K",
        (char *) "MAX_BODY_BYTES=2K",
        (char *) "MAX_EVENT_BYTES=1K",
        (char *) "API_TOKEN=fuzz-token",
        (char *) "DEPLOYMENT_TOKEN=deploy-token",
        (char *) "DEPLOYMENT_COLOR=blue",
        (char *) "STREAM_HEARTBEAT_INTERVAL=1h",
        (char *) "STREAM_TEST_MAX_DURATION=10s",
        (char *) "ACCESS_LOG=true",
        NULL,
};

static Manager *manager;

typedef struct Options {
        bool starting;
        bool metrics;
        bool drain;
        bool eof;
} Options;

typedef struct Reply {
        char data[REPLY_MAX];
        size_t size;
} Reply;

static Reply reply;

static size_t parse_options(const uint8_t *data, size_t size, Options *o) {
        const uint8_t *nl;

        if (size == 0 || data[0] != '@' || !(nl = memchr(data, '\n', size)))
                return 0;
        for (const uint8_t *p = data + 1; p < nl; p++) {
                o->starting |= *p == 's';
                o->metrics |= *p == 'm';
                o->drain |= *p == 'd';
                o->eof |= *p == 'e';
        }
        return (size_t) (nl - data) + 1;
}

/* A listening socket nobody connects to: MHD wants one per daemon. An
 * autobound abstract unix address costs no file system entry. */
static int listen_socket(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

        fuzz_check(fd >= 0, "socket: %m");
        fuzz_check(bind(fd, (struct sockaddr *) &sa, sizeof(sa_family_t)) == 0 && listen(fd, 1) == 0,
                   "bind/listen: %m");
        return fd;
}

typedef struct Client {
        int fd;
        const uint8_t *out;
        size_t out_left;
        bool eof;
} Client;

/* Moves bytes both ways; true when any moved. */
static bool client_io(Client *c) {
        bool moved = false;
        ssize_t n;

        if (c->fd < 0)
                return false;
        if (c->out_left > 0) {
                n = send(c->fd, c->out, c->out_left, MSG_NOSIGNAL);
                if (n > 0) {
                        c->out += n;
                        c->out_left -= (size_t) n;
                        moved = true;
                } else if (n < 0 && errno != EAGAIN)
                        c->out_left = 0;        /* the server closed */
                if (c->out_left == 0 && c->eof)
                        (void) shutdown(c->fd, SHUT_WR);
        }
        for (;;) {
                char discard[4096];
                char *to = reply.size < REPLY_MAX ? reply.data + reply.size : discard;
                size_t room = reply.size < REPLY_MAX ? REPLY_MAX - reply.size : sizeof(discard);
                n = recv(c->fd, to, room, 0);
                if (n <= 0)
                        break;
                if (to != discard)
                        reply.size += (size_t) n;
                moved = true;
        }
        return moved;
}

static void pump(Client *c) {
        for (unsigned i = 0; i < PUMP_MAX; i++) {
                bool moved = client_io(c);
                int r = sd_event_run(manager->event, 0);

                fuzz_check(r >= 0, "sd_event_run: %s", strerror(-r));
                if (!moved && r == 0)
                        return;
        }
        fuzz_check(false, "still busy after %u loop iterations: a busy loop", PUMP_MAX);
}

static const char *header_value(const char *head, size_t head_size, const char *name, size_t *ret_len) {
        size_t n = strlen(name);

        for (const char *p = head; p && p < head + head_size; ) {
                const char *eol = memmem(p, (size_t) (head + head_size - p), "\r\n", 2);
                if (!eol)
                        break;
                if ((size_t) (eol - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
                        const char *v = p + n + 1;
                        while (*v == ' ')
                                v++;
                        *ret_len = (size_t) (eol - v);
                        return v;
                }
                p = eol + 2;
        }
        return NULL;
}

static bool header_is(const char *head, size_t head_size, const char *name, const char *value) {
        size_t len;
        const char *v = header_value(head, head_size, name, &len);

        return v && len == strlen(value) && strncasecmp(v, value, len) == 0;
}

/* How the server parsed each request it answered, in the order it finished
 * them (which is the order of the answers on one connection): the access
 * log's record. Requests libmicrohttpd refused before batond saw their
 * headers have none. */
#define RECORDS_MAX 256
static struct {
        bool head[RECORDS_MAX];
        size_t n;
} records;

static void record_request(const HttpRequestRecord *record, void *userdata) {
        if (records.n < RECORDS_MAX)
                records.head[records.n++] = streq(record->method, "HEAD");
        access_log_request(record, userdata);
}

/* A chunked body from p: returns its end, or NULL when the reply ends first
 * (a stream cut when the server stopped). */
static const char *chunked_body_end(const char *p, const char *end) {
        for (;;) {
                const char *eol = memmem(p, (size_t) (end - p), "\r\n", 2);
                char *hex_end;
                unsigned long size;

                if (!eol)
                        return NULL;
                size = strtoul(p, &hex_end, 16);
                fuzz_check(hex_end > p && (hex_end == eol || *hex_end == ';'),
                           "a chunk size that is not hex: '%.20s'", p);
                p = eol + 2;
                if (size == 0)
                        break;
                if ((size_t) (end - p) < size + 2)
                        return NULL;
                fuzz_check(memcmp(p + size, "\r\n", 2) == 0, "a chunk not followed by CRLF");
                p += size + 2;
        }
        /* Trailers (none are sent), then the empty line. */
        const char *last = memmem(p, (size_t) (end - p), "\r\n", 2);
        if (!last)
                return NULL;
        fuzz_check(last == p, "trailer fields after a chunked body");
        return last + 2;
}

static void check_json_body(const char *head, size_t head_size, const char *body, size_t body_size) {
        json_error_t e;
        size_t len;
        _cleanup_(json_decrefp) json_t *j = json_loadb(body, body_size, 0, &e);

        fuzz_check(j, "a JSON answer that is not JSON (%s): '%.*s'", e.text, (int) body_size, body);
        /* {"error": code, "message": ...}; a health body's "error" is a check's. */
        if (json_object_get(j, "error") && !json_object_get(j, "status")) {
                fuzz_check(json_is_string(json_object_get(j, "error")) &&
                           json_is_string(json_object_get(j, "message")),
                           "an error answer without code or message: '%.*s'", (int) body_size, body);
                fuzz_check(header_value(head, head_size, "X-Request-ID", &len),
                           "an error answer without X-Request-ID");
        }
}

/* Reads the replies one at a time, each framed as the server parsed its
 * request: a HEAD answer has no body, others have exactly their
 * Content-Length or a complete chunked body. An answer to a request with
 * no record (libmicrohttpd's own refusal) closes the connection: its body,
 * whole or absent (a refused HEAD), must end the reply. Nothing follows a
 * "Connection: close". */
static void check_replies(void) {
        const char *p = reply.data, *end = reply.data + reply.size;
        size_t answered = 0;

        if (reply.size >= REPLY_MAX)
                return;                 /* the harness kept only the start */
        while (p < end) {
                const char *head_end = memmem(p, (size_t) (end - p), "\r\n\r\n", 4);
                const char *body, *v;
                size_t head_size, len, body_size;
                unsigned status;
                bool recorded = answered < records.n, closing;

                fuzz_check(end - p >= 13 && (memcmp(p, "HTTP/1.1 ", 9) == 0 || memcmp(p, "HTTP/1.0 ", 9) == 0),
                           "not a status line: '%.40s'", p);
                fuzz_check(head_end, "a response header block never ends");
                status = (unsigned) ((p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0'));
                fuzz_check(status >= 100 && status <= 599 && p[12] == ' ', "status '%.12s'", p);
                head_size = (size_t) (head_end - p) + 2;
                body = head_end + 4;
                if (status < 200) {             /* 100 Continue, then the answer */
                        p = body;
                        continue;
                }
                fuzz_check(status != 500, "an internal error: '%.*s'", (int) (end - p), p);
                closing = header_is(p, head_size, "Connection", "close");
                fuzz_check(recorded || closing, "an answer to an unrecorded request keeps the connection");

                if (recorded && records.head[answered])
                        body_size = 0;
                else if (header_is(p, head_size, "Transfer-Encoding", "chunked")) {
                        const char *body_end = chunked_body_end(body, end);
                        if (!body_end)
                                return;         /* a stream the stop cut */
                        body_size = (size_t) (body_end - body);
                } else if ((v = header_value(p, head_size, "Content-Length", &len))) {
                        body_size = strtoul(v, NULL, 10);
                        if (!recorded && body == end)
                                body_size = 0;  /* a refused HEAD */
                        fuzz_check((size_t) (end - body) >= body_size,
                                   "a body shorter than its Content-Length (%zu of %zu)",
                                   (size_t) (end - body), body_size);
                } else {
                        fuzz_check(closing, "a body with neither length nor close");
                        body_size = (size_t) (end - body);
                }
                v = header_value(p, head_size, "Content-Type", &len);
                if (body_size > 0 && v && len >= 16 && strncasecmp(v, "application/json", 16) == 0)
                        check_json_body(p, head_size, body, body_size);
                answered++;
                p = body + body_size;
                fuzz_check(!closing || p == end, "%zu bytes after an answer that closed the connection: '%.40s'",
                           (size_t) (end - p), p);
                fuzz_check(recorded || p == end, "bytes after libmicrohttpd's own answer");
        }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        _cleanup_free_ char *error = NULL;
        const char *level = getenv("LOG_LEVEL");
        sigset_t mask, saved;
        Config *config;
        int r;

        /* A client gone mid-answer must be an error return, not a signal. */
        signal(SIGPIPE, SIG_IGN);

        r = config_load("/dev/null", false, environment, &config, &error);
        fuzz_check(r == 0, "configuration: %s", strempty(error));
        /* Everything is logged (to libFuzzer's -close_fd_mask=2 /dev/null):
         * the formatting is part of the path under test. */
        log_set_max_level(level ? log_level_from_string(level) : LOG_DEBUG);

        /* sd-event insists that the signals the Manager handles are blocked
         * while it adds them; they are unblocked again at once, so that
         * libFuzzer's own handlers keep working. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, &saved);
        r = manager_new(config, "/dev/null", false, &manager);
        sigprocmask(SIG_SETMASK, &saved, NULL);
        fuzz_check(r == 0, "manager_new: %s", strerror(-r));
        access_log_set_enabled(manager->access_log, manager->config->access_log);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const Config *cfg = manager->config;
        Options o = { 0 };
        size_t skip = parse_options(data, size, &o);
        const Route *routes;
        size_t n_routes;
        HttpServer *server = NULL;
        int sv[2], r;

        data += skip;
        size -= skip;
        reply.size = 0;
        records.n = 0;

        ListenSocket sock = {
                .fd = listen_socket(),
                .name = (char *) (o.metrics ? LISTEN_METRICS_NAME : "http"),
                .address = (char *) "fuzz",
                .metrics = o.metrics,
        };
        ListenSet set = { .sockets = &sock, .n_sockets = 1 };
        HttpLimits limits = {
                .max_connections = cfg->max_connections,
                .connection_timeout_usec = cfg->connection_timeout_usec,
                .max_header_bytes = cfg->max_header_bytes,
                .max_body_bytes = cfg->max_body_bytes,
                .max_event_bytes = cfg->max_event_bytes,
        };
        routes = routes_table(&n_routes);
        r = http_server_new(manager->event, &set, &limits, routes, n_routes, manager, &server);
        fuzz_check(r == 0, "http_server_new: %s", strerror(-r));
        if (sock.fd >= 0)
                close(sock.fd);
        http_server_set_request_log_callback(server, record_request, manager->access_log);
        /* Not ready: the answer is the 503 the hold ends in, at once. */
        http_server_set_hold_until_ready(server, 0);
        manager->http = server;
        r = drain_new(manager->event, server, manager->streams, &manager->drain);
        fuzz_check(r == 0, "drain_new: %s", strerror(-r));
        /* The states the flags ask for, through the daemon's own transitions. */
        r = lifecycle_new(server, manager->health, "fuzz", "", NULL, &manager->lifecycle);
        fuzz_check(r == 0, "lifecycle_new: %s", strerror(-r));
        if (!o.starting)
                fuzz_check(lifecycle_set(manager->lifecycle, LIFECYCLE_READY, NULL) == 0, "ready");
        if (o.drain)
                fuzz_check(lifecycle_set(manager->lifecycle, LIFECYCLE_DRAINING, NULL) == 0, "draining");

        fuzz_check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
                   "socketpair: %m");
        Client client = { .fd = sv[0], .out = data, .out_left = size, .eof = o.eof };
        if (size == 0 && o.eof)
                (void) shutdown(client.fd, SHUT_WR);
        r = http_server_add_connection(server, sv[1]);
        fuzz_check(r == 0, "add_connection: %s", strerror(-r));
        pump(&client);

        /* As at a stop: streams and parked requests end, connections close. */
        http_server_free(server);
        manager->http = NULL;
        manager->drain = drain_free(manager->drain);
        manager->lifecycle = lifecycle_free(manager->lifecycle);
        pump(&client);
        close(client.fd);

        /* BATON_FUZZ_SHOW=1 fuzz-http FILE...: what came back, for writing seeds. */
        if (getenv("BATON_FUZZ_SHOW"))
                fprintf(stderr, "--- %zu bytes back:\n%.*s\n", reply.size, (int) reply.size, reply.data);
        check_replies();
        return 0;
}
