/* SPDX-License-Identifier: MIT */
/* sse-load: the load client of Baton's benchmarks, in C so that it is not
 * what limits the measurement. One epoll loop, no threads.
 *
 *   sse-load sub  PORT PATH CONNECTIONS SECONDS
 *       Opens CONNECTIONS Server-Sent-Event streams to 127.0.0.1:PORT PATH,
 *       prints "ready" once every stream answered 200, then counts events
 *       for SECONDS after the first one arrives. Each event's data must
 *       carry "sent":MICROSECONDS (CLOCK_MONOTONIC, set by the publisher on
 *       this machine): now - sent is the delivery latency. Per stream, the
 *       server's event ids must increase (batond: a number, nchan: "t:n");
 *       and every stream should see every event: the fewest and most
 *       events any stream saw are reported, to compare with what the
 *       publisher had acknowledged. Prints one JSON object.
 *
 *   sse-load pub  PORT PATH RATE SECONDS [PAYLOAD_BYTES [CONNECTIONS]]
 *       POSTs {"seq":N,"sent":T,"pad":"..."} to PATH at RATE per second over
 *       CONNECTIONS (16) keep-alive connections, for SECONDS. Prints the
 *       JSON totals; "late_ticks" counts moments when every connection was
 *       still waiting for an answer while the next event was due.
 *
 *   sse-load pubmax PORT PATH CONNECTIONS SECONDS
 *       Closed loop: every connection POSTs the next event as soon as the
 *       previous one was answered. Prints acknowledged events per second.
 *
 *   sse-load idle PORT PATH CONNECTIONS SECONDS
 *       Opens the streams, prints "ready", holds them SECONDS without
 *       expecting events (for memory measurements).
 *
 *   sse-load pubn PORT PATH CONNECTIONS EVENTS_EACH PAYLOAD_BYTES
 *       Closed loop: each connection POSTs EVENTS_EACH events, the next as
 *       soon as the previous one was answered. Prints the totals.
 *
 *   sse-load catchup PORT PATH CONNECTIONS LAST_ID SECONDS
 *       Opens the streams (PATH says from where: ?lastEventId=0) and
 *       measures how long until every one of them received LAST_ID, with
 *       the bytes and events they took together; ids must increase by one.
 *
 *   sse-load slow PORT PATH BYTES_PER_SEC LAST_ID SECONDS
 *       One stream read at BYTES_PER_SEC until the server cuts it
 *       ("reconnect", or the end of the stream), then resumed from its
 *       last id at full speed until LAST_ID: reports when it was cut and
 *       whether, across the two, every id came exactly once.
 *
 *   sse-load resume PORT PATH CONNECTIONS SECONDS
 *       Opens the streams, prints "ready", and for SECONDS reconnects every
 *       stream that ends with Last-Event-ID (as EventSource does, but at
 *       once): reports how long from the first cut until every cut stream
 *       had an event again, and ids lost or duplicated across the resumes.
 *
 * SSE_LOAD_HOST (an IPv4 address, default 127.0.0.1) names another host:
 * the fleet benchmark reaches each host's nginx on a bridge.
 *
 * Works against batond (data is an envelope around the payload) and nchan
 * (data is the payload itself): only the "seq" and "sent" fields matter. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)
#define LINE_MAX_BYTES (256 * 1024)

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

static int die(const char *what) {
        fprintf(stderr, "sse-load: %s: %s\n", what, strerror(errno));
        exit(2);
}

/* The server's address: SSE_LOAD_HOST, or loopback. */
static struct in_addr target = { .s_addr = 0 };

static int connect_to(int port) {
        struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                    .sin_addr = target };
        int one = 1;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return -1;
        if (connect(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0) {
                close(fd);
                return -1;
        }
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        return fd;
}

static void raise_fd_limit(void) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

static int send_all(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR) {
                                /* Requests are small: a short wait is fine here. */
                                struct timespec ts = { 0, 100000 };
                                nanosleep(&ts, NULL);
                                continue;
                        }
                        return -1;
                }
                buf += n;
                len -= (size_t) n;
        }
        return 0;
}

/* --- latency samples --- */

typedef struct Samples {
        uint32_t *v;
        size_t n, cap;
} Samples;

static void samples_add(Samples *s, uint64_t usec) {
        if (s->n == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 1 << 20;
                s->v = realloc(s->v, s->cap * sizeof(uint32_t));
                if (!s->v)
                        die("realloc");
        }
        s->v[s->n++] = usec > UINT32_MAX ? UINT32_MAX : (uint32_t) usec;
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
        return (x > y) - (x < y);
}

static double percentile_ms(Samples *s, double p) {
        if (s->n == 0)
                return 0;
        size_t i = (size_t) (p * (double) (s->n - 1));
        return s->v[i] / 1000.0;
}

/* --- subscribers --- */

typedef enum ChunkState { CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF } ChunkState;

typedef struct Sub {
        int fd;
        bool headers_done;
        bool chunked;
        ChunkState chunk_state;
        size_t chunk_left;
        char head[4096];
        size_t head_len;
        char sizebuf[32];
        size_t sizebuf_len;
        char *line;
        size_t line_len, line_cap;
        uint64_t last_id_major, last_id_minor;
        uint64_t events;
        uint64_t gaps;                  /* ids not one above the last (batond) */
        uint64_t ids;                   /* events whole, with an id */
        uint64_t bytes;
        bool reconnect;                 /* got "event: reconnect" */
        bool ended;                     /* the response ended (last chunk) */
        char pending_id[48];            /* "id: N" of the event being read */
        uint64_t cut_usec;              /* resume: when its first stream ended */
        uint64_t resumed_usec;          /* resume: first event after reconnecting */
        uint64_t retry_usec;            /* resume: when to try connecting again */
        uint64_t resumes, refused;
        bool opened;                    /* resume: its first stream answered 200 */
        bool request_sent;              /* resume: connected, request written */
} Sub;

typedef struct SubStats {
        uint64_t events, out_of_order, bad, reconnects, closed;
        uint64_t first_event_usec, window_end_usec;
        bool counting;
        Samples latency;
} SubStats;

static SubStats stats;

static int64_t field_number(const char *s, size_t len, const char *name) {
        size_t n = strlen(name);
        for (size_t i = 0; i + n < len; i++)
                if (memcmp(s + i, name, n) == 0)
                        return strtoll(s + i + n, NULL, 10);
        return -1;
}

/* "id: 42" (batond) or "id: 1700000000:3" (nchan): must increase. */
static void sub_id(Sub *c, const char *line) {
        char *end;
        uint64_t major = strtoull(line + 3, &end, 10), minor = 0;

        if (*end == ':')
                minor = strtoull(end + 1, NULL, 10);
        if (c->events > 0 && (major < c->last_id_major ||
                              (major == c->last_id_major && minor <= c->last_id_minor)))
                stats.out_of_order++;
        if (c->last_id_major > 0 && major != c->last_id_major + 1 && minor == 0)
                c->gaps++;
        c->last_id_major = major;
        c->last_id_minor = minor;
        c->ids++;
}

static void sub_line(Sub *c, const char *line, size_t len) {
        /* An event's id counts once the event is whole (the blank line
         * that dispatches it), as EventSource's lastEventId: a stream cut
         * between its id and its data resumes from the one before. */
        if (len == 0 || (len == 1 && line[0] == '\r')) {
                if (c->pending_id[0])
                        sub_id(c, c->pending_id);
                c->pending_id[0] = '\0';
                return;
        }
        if (len >= 6 && memcmp(line, "event:", 6) == 0) {
                if (strstr(line, "reconnect")) {
                        stats.reconnects++;
                        c->reconnect = true;
                }
                return;
        }
        if (len >= 3 && memcmp(line, "id:", 3) == 0) {
                snprintf(c->pending_id, sizeof(c->pending_id), "%.*s", (int) len, line);
                return;
        }
        if (len < 5 || memcmp(line, "data:", 5) != 0)
                return;
        int64_t sent = field_number(line, len, "\"sent\":");
        uint64_t now = now_usec();
        if (sent < 0) {
                if (!strstr(line, "\"reason\""))
                        stats.bad++;
                return;
        }
        if (!stats.counting) {
                stats.counting = true;
                stats.first_event_usec = now;
        }
        c->events++;
        if (now > stats.window_end_usec)
                return;
        stats.events++;
        samples_add(&stats.latency, now > (uint64_t) sent ? now - (uint64_t) sent : 0);
}

/* SSE text after de-chunking: split into lines. */
static void sub_text(Sub *c, const char *p, size_t n) {
        for (size_t i = 0; i < n; i++) {
                if (p[i] == '\n') {
                        sub_line(c, c->line ? c->line : "", c->line_len);
                        c->line_len = 0;
                        continue;
                }
                if (c->line_len + 2 > c->line_cap) {
                        c->line_cap = c->line_cap ? c->line_cap * 2 : 512;
                        if (c->line_cap > LINE_MAX_BYTES) {
                                stats.bad++;
                                c->line_len = 0;
                                continue;
                        }
                        c->line = realloc(c->line, c->line_cap);
                        if (!c->line)
                                die("realloc");
                }
                c->line[c->line_len++] = p[i];
                c->line[c->line_len] = '\0';
        }
}

static void sub_body(Sub *c, const char *p, size_t n) {
        if (!c->chunked) {
                sub_text(c, p, n);
                return;
        }
        while (n > 0) {
                switch (c->chunk_state) {
                case CHUNK_SIZE:
                        if (*p == '\n') {
                                c->sizebuf[c->sizebuf_len] = '\0';
                                c->chunk_left = strtoul(c->sizebuf, NULL, 16);
                                c->sizebuf_len = 0;
                                c->chunk_state = c->chunk_left ? CHUNK_DATA : CHUNK_CRLF;
                                if (!c->chunk_left) {
                                        stats.closed++;         /* the server ended the stream */
                                        c->ended = true;
                                }
                        } else if (*p != '\r' && c->sizebuf_len < sizeof(c->sizebuf) - 1)
                                c->sizebuf[c->sizebuf_len++] = *p;
                        p++;
                        n--;
                        break;
                case CHUNK_DATA: {
                        size_t k = n < c->chunk_left ? n : c->chunk_left;
                        sub_text(c, p, k);
                        p += k;
                        n -= k;
                        c->chunk_left -= k;
                        if (c->chunk_left == 0)
                                c->chunk_state = CHUNK_CRLF;
                        break;
                }
                case CHUNK_CRLF:
                        if (*p == '\n')
                                c->chunk_state = CHUNK_SIZE;
                        p++;
                        n--;
                        break;
                }
        }
}

/* Returns 1 once the response headers were complete and successful. */
static int sub_head(Sub *c, const char *p, size_t n, size_t *consumed) {
        for (size_t i = 0; i < n; i++) {
                if (c->head_len < sizeof(c->head) - 1)
                        c->head[c->head_len++] = p[i];
                c->head[c->head_len] = '\0';
                if (c->head_len >= 4 && memcmp(c->head + c->head_len - 4, "\r\n\r\n", 4) == 0) {
                        *consumed = i + 1;
                        if (strncmp(c->head, "HTTP/1.1 200", 12) != 0)
                                return -1;
                        c->chunked = strcasestr(c->head, "transfer-encoding: chunked") != NULL;
                        c->headers_done = true;
                        return 1;
                }
        }
        *consumed = n;
        return 0;
}

static int run_sub(int port, const char *path, int n, int seconds, bool idle) {
        static char buf[READ_CHUNK];
        char request[1024];
        Sub *subs = calloc((size_t) n, sizeof(Sub));
        struct epoll_event ev, events[512];
        int ep = epoll_create1(EPOLL_CLOEXEC), ready = 0, failed = 0;
        uint64_t deadline;

        if (!subs || ep < 0)
                die("setup");
        snprintf(request, sizeof(request), "GET %s HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n", path);
        for (int i = 0; i < n; i++) {
                Sub *c = &subs[i];
                c->fd = connect_to(port);
                if (c->fd < 0 || send_all(c->fd, request, strlen(request)) < 0)
                        die("connect");
                ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = c };
                if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
                        die("epoll_ctl");
        }
        stats.window_end_usec = UINT64_MAX;
        deadline = now_usec() + (uint64_t) seconds * 1000000ULL + 60000000ULL;
        for (;;) {
                uint64_t now = now_usec();
                if (ready + failed == n && ready > 0 && stats.window_end_usec == UINT64_MAX) {
                        printf("ready %d\n", ready);
                        fflush(stdout);
                        stats.window_end_usec = UINT64_MAX - 1;
                        if (idle)
                                deadline = now + (uint64_t) seconds * 1000000ULL;
                }
                if (stats.counting && stats.window_end_usec == UINT64_MAX - 1)
                        stats.window_end_usec = stats.first_event_usec + (uint64_t) seconds * 1000000ULL;
                if (now > deadline || (stats.counting && now > stats.window_end_usec))
                        break;
                int k = epoll_wait(ep, events, 512, 100);
                for (int e = 0; e < k; e++) {
                        Sub *c = events[e].data.ptr;
                        ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
                        if (r <= 0) {
                                if (r < 0 && errno == EAGAIN)
                                        continue;
                                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                                close(c->fd);
                                c->fd = -1;
                                if (!c->headers_done)
                                        failed++;
                                continue;
                        }
                        size_t off = 0;
                        if (!c->headers_done) {
                                int h = sub_head(c, buf, (size_t) r, &off);
                                if (h < 0) {
                                        failed++;
                                        fprintf(stderr, "sse-load: stream refused: %.60s\n", c->head);
                                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                                        close(c->fd);
                                        c->fd = -1;
                                        continue;
                                }
                                if (h > 0)
                                        ready++;
                        }
                        if (c->headers_done && (size_t) r > off)
                                sub_body(c, buf + off, (size_t) r - off);
                }
        }
        /* Drain what is still in flight for the per-stream totals. */
        for (uint64_t until = now_usec() + 2000000ULL; now_usec() < until; ) {
                int k = epoll_wait(ep, events, 512, 100);
                for (int e = 0; e < k; e++) {
                        Sub *c = events[e].data.ptr;
                        ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
                        if (r > 0 && c->headers_done)
                                sub_body(c, buf, (size_t) r);
                        else if (r == 0 || (r < 0 && errno != EAGAIN)) {
                                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                                close(c->fd);
                                c->fd = -1;
                        }
                }
        }
        uint64_t min_events = UINT64_MAX, max_events = 0;
        for (int i = 0; i < n; i++) {
                if (!subs[i].headers_done)
                        continue;
                min_events = subs[i].events < min_events ? subs[i].events : min_events;
                max_events = subs[i].events > max_events ? subs[i].events : max_events;
        }
        qsort(stats.latency.v, stats.latency.n, sizeof(uint32_t), cmp_u32);
        double window = stats.counting ? (double) seconds : 0;
        printf("{\"connections\":%d,\"failed\":%d,\"events\":%" PRIu64 ",\"events_per_sec\":%.1f,"
               "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"min_per_stream\":%" PRIu64
               ",\"max_per_stream\":%" PRIu64 ",\"out_of_order\":%" PRIu64 ",\"bad\":%" PRIu64
               ",\"reconnects\":%" PRIu64 ",\"ended\":%" PRIu64 "}\n",
               ready, failed, stats.events, window > 0 ? (double) stats.events / window : 0,
               percentile_ms(&stats.latency, 0.50), percentile_ms(&stats.latency, 0.99),
               percentile_ms(&stats.latency, 1.0), min_events == UINT64_MAX ? 0 : min_events,
               max_events, stats.out_of_order, stats.bad, stats.reconnects, stats.closed);
        return 0;
}

/* --- publishers --- */

typedef struct Pub {
        int fd;
        bool busy;
        uint64_t sent_usec;             /* of the request in flight */
        char in[4096];
        size_t in_len;
} Pub;

/* Consumes one response if complete; returns its status, 0 if incomplete. */
static int pub_response(Pub *p) {
        char *end = memmem(p->in, p->in_len, "\r\n\r\n", 4);
        if (!end)
                return 0;
        size_t head = (size_t) (end - p->in) + 4, body = 0;
        char *cl = strcasestr(p->in, "content-length:");
        if (cl && cl < end)
                body = strtoul(cl + 15, NULL, 10);
        if (p->in_len < head + body)
                return 0;
        int status = atoi(p->in + 9);
        memmove(p->in, p->in + head + body, p->in_len - head - body);
        p->in_len -= head + body;
        return status;
}

static int run_pub(int port, const char *path, int rate, int seconds, int payload, int n_conns,
                   bool closed_loop, uint64_t max_events) {
        static char pad[65536];
        char body[70000], request[72000];
        Pub *pubs = calloc((size_t) n_conns, sizeof(Pub));
        struct epoll_event ev, events[256];
        int ep = epoll_create1(EPOLL_CLOEXEC);
        uint64_t start, end, sent = 0, ok = 0, failed = 0, behind = 0, seq = 0;
        Samples latency = { 0 };        /* request sent to 2xx read, per publish */

        if (!pubs || ep < 0)
                die("setup");
        if (payload > (int) sizeof(pad) - 1)
                payload = sizeof(pad) - 1;
        memset(pad, 'x', (size_t) payload);
        for (int i = 0; i < n_conns; i++) {
                pubs[i].fd = connect_to(port);
                if (pubs[i].fd < 0)
                        die("connect");
                ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = &pubs[i] };
                if (epoll_ctl(ep, EPOLL_CTL_ADD, pubs[i].fd, &ev) < 0)
                        die("epoll_ctl");
        }
        start = now_usec();
        end = start + (uint64_t) seconds * 1000000ULL;
        int next = 0;
        for (;;) {
                uint64_t now = now_usec();
                bool done = now >= end || (max_events > 0 && sent >= max_events);
                /* Send what is due: on schedule (rate) or whenever free (closed
                 * loop), rotating over the connections so that none carries
                 * most of the requests (servers close a connection after so
                 * many requests: nginx's keepalive_requests). */
                for (int j = 0; j < n_conns && !done; j++) {
                        int i = (next + j) % n_conns;
                        if (pubs[i].busy)
                                continue;
                        next = (i + 1) % n_conns;
                        if (!closed_loop && sent >= (now - start) * (uint64_t) rate / 1000000ULL)
                                break;
                        if (max_events > 0 && sent >= max_events)
                                break;
                        int blen = snprintf(body, sizeof(body), "{\"seq\":%" PRIu64 ",\"sent\":%" PRIu64
                                            ",\"pad\":\"%.*s\"}", seq, now_usec(), payload, pad);
                        int rlen = snprintf(request, sizeof(request),
                                            "POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                                            "Content-Length: %d\r\n\r\n%s", path, blen, body);
                        if (send_all(pubs[i].fd, request, (size_t) rlen) < 0)
                                die("send");
                        pubs[i].busy = true;
                        pubs[i].sent_usec = now_usec();
                        seq++;
                        sent++;
                }
                if (!closed_loop && !done && sent < (now - start) * (uint64_t) rate / 1000000ULL)
                        behind++;
                bool any_busy = false;
                for (int i = 0; i < n_conns; i++)
                        any_busy |= pubs[i].busy;
                if (done && !any_busy)
                        break;
                if (done && now > end + 10000000ULL)
                        break;
                int k = epoll_wait(ep, events, 256, closed_loop ? 100 : 1);
                for (int e = 0; e < k; e++) {
                        Pub *p = events[e].data.ptr;
                        ssize_t r = recv(p->fd, p->in + p->in_len, sizeof(p->in) - p->in_len - 1, 0);
                        if (r <= 0) {
                                if (r < 0 && errno == EAGAIN)
                                        continue;
                                /* The server closed it (after its last response, or
                                 * losing a request in flight): reconnect. */
                                if (p->busy)
                                        failed++;
                                epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
                                close(p->fd);
                                p->busy = false;
                                p->in_len = 0;
                                p->fd = connect_to(port);
                                ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = p };
                                if (p->fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &ev) < 0)
                                        die("reconnect");
                                continue;
                        }
                        p->in_len += (size_t) r;
                        p->in[p->in_len] = '\0';
                        int status;
                        while ((status = pub_response(p)) > 0) {
                                if (status >= 200 && status < 300) {
                                        ok++;
                                        samples_add(&latency, now_usec() - p->sent_usec);
                                } else
                                        failed++;
                                p->busy = false;
                        }
                }
        }
        double elapsed = (double) (now_usec() - start) / 1e6;
        if (latency.n > 0)
                qsort(latency.v, latency.n, sizeof(uint32_t), cmp_u32);
        printf("{\"sent\":%" PRIu64 ",\"acknowledged\":%" PRIu64 ",\"failed\":%" PRIu64
               ",\"per_sec\":%.1f,\"late_ticks\":%" PRIu64 ",\"seconds\":%.2f,\"p50_ms\":%.3f,"
               "\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
               sent, ok, failed, (double) ok / (max_events > 0 ? elapsed : (double) seconds), behind, elapsed,
               percentile_ms(&latency, 0.50), percentile_ms(&latency, 0.99), percentile_ms(&latency, 1.0));
        free(latency.v);
        return failed > 0 ? 1 : 0;
}

/* --- catching up, and a slow reader --- */

static Sub *open_stream(int port, const char *path, int ep) {
        char request[1024];
        struct epoll_event ev;
        Sub *c = calloc(1, sizeof(Sub));

        if (!c)
                die("calloc");
        snprintf(request, sizeof(request), "GET %s HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n",
                 path);
        c->fd = connect_to(port);
        if (c->fd < 0 || send_all(c->fd, request, strlen(request)) < 0)
                die("connect");
        ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = c };
        if (ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
                die("epoll_ctl");
        return c;
}

/* Feeds what arrived on c; returns false when the stream ended. */
static bool stream_feed(Sub *c, const char *buf, ssize_t r) {
        size_t off = 0;

        if (r <= 0)
                return r < 0 && errno == EAGAIN;
        c->bytes += (uint64_t) r;
        if (!c->headers_done && sub_head(c, buf, (size_t) r, &off) < 0) {
                fprintf(stderr, "sse-load: stream refused: %.60s\n", c->head);
                return false;
        }
        if (c->headers_done && (size_t) r > off)
                sub_body(c, buf + off, (size_t) r - off);
        return true;
}

static int run_catchup(int port, const char *path, int n, uint64_t last_id, int seconds) {
        static char buf[READ_CHUNK];
        struct epoll_event events[512];
        int ep = epoll_create1(EPOLL_CLOEXEC), done = 0, ended = 0;
        Sub **subs = calloc((size_t) n, sizeof(Sub *));
        uint64_t start, finish = 0, bytes = 0, events_total = 0, gaps = 0;

        if (!subs || ep < 0)
                die("setup");
        stats.window_end_usec = UINT64_MAX;
        start = now_usec();
        for (int i = 0; i < n; i++)
                subs[i] = open_stream(port, path, ep);
        while (done + ended < n && now_usec() < start + (uint64_t) seconds * 1000000ULL) {
                int k = epoll_wait(ep, events, 512, 100);
                for (int e = 0; e < k; e++) {
                        Sub *c = events[e].data.ptr;
                        bool was_done = c->last_id_major >= last_id;
                        if (!stream_feed(c, buf, recv(c->fd, buf, sizeof(buf), 0))) {
                                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                                close(c->fd);
                                if (!was_done)
                                        ended++;
                                continue;
                        }
                        if (!was_done && c->last_id_major >= last_id) {
                                done++;
                                finish = now_usec();
                        }
                }
        }
        for (int i = 0; i < n; i++) {
                bytes += subs[i]->bytes;
                events_total += subs[i]->events;
                gaps += subs[i]->gaps;
        }
        double elapsed = (double) ((finish ? finish : now_usec()) - start) / 1e6;
        printf("{\"connections\":%d,\"caught_up\":%d,\"ended_early\":%d,\"seconds\":%.3f,"
               "\"events\":%" PRIu64 ",\"events_per_sec\":%.1f,\"mb_per_sec\":%.1f,\"gaps\":%" PRIu64
               ",\"out_of_order\":%" PRIu64 ",\"reconnects\":%" PRIu64 "}\n",
               n, done, ended, elapsed, events_total, (double) events_total / elapsed,
               (double) bytes / elapsed / 1e6, gaps, stats.out_of_order, stats.reconnects);
        return done == n ? 0 : 1;
}

static int run_slow(int port, const char *path, int bytes_per_sec, uint64_t last_id, int seconds) {
        static char buf[READ_CHUNK];
        char resume[1024];
        int small = 4096;
        Sub *c;
        uint64_t start = now_usec(), cut_at = 0, before_cut;
        bool cut = false;

        /* The slow part: a small receive buffer, a few bytes at a time. */
        c = open_stream(port, path, -1);
        (void) setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        (void) fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
        while (!cut && now_usec() < start + (uint64_t) seconds * 1000000ULL) {
                size_t want = (size_t) bytes_per_sec / 10;
                ssize_t r = recv(c->fd, buf, want < sizeof(buf) ? want : sizeof(buf), 0);
                if (r <= 0) {
                        cut = true;             /* the server closed (or reset) it */
                        break;
                }
                stream_feed(c, buf, r);
                if (c->reconnect)
                        cut = true;
                usleep(100000);
        }
        cut_at = now_usec();
        before_cut = c->events;
        uint64_t resume_from = c->last_id_major, gaps = c->gaps, before_ids = c->ids;
        close(c->fd);
        /* Resumed at full speed from its last id. */
        snprintf(resume, sizeof(resume), "%s%slastEventId=%" PRIu64, path, strchr(path, '?') ? "&" : "?",
                 resume_from);
        Sub *r2 = open_stream(port, resume, -1);
        (void) fcntl(r2->fd, F_SETFL, fcntl(r2->fd, F_GETFL) & ~O_NONBLOCK);
        r2->last_id_major = resume_from;        /* the next id must follow it */
        while (r2->last_id_major < last_id && now_usec() < cut_at + (uint64_t) seconds * 1000000ULL) {
                ssize_t r = recv(r2->fd, buf, sizeof(buf), 0);
                if (r <= 0 || !stream_feed(r2, buf, r))
                        break;
        }
        printf("{\"cut\":%s,\"cut_after_sec\":%.2f,\"events_before_cut\":%" PRIu64 ",\"resumed_from\":%"
               PRIu64 ",\"events_after_resume\":%" PRIu64 ",\"last_id\":%" PRIu64 ",\"complete\":%s,"
               "\"gaps\":%" PRIu64 ",\"out_of_order\":%" PRIu64 "}\n",
               cut ? "true" : "false", (double) (cut_at - start) / 1e6, before_cut, resume_from, r2->events,
               r2->last_id_major, r2->last_id_major >= last_id && before_ids + r2->ids == last_id ? "true" : "false",
               gaps + r2->gaps, stats.out_of_order);
        return 0;
}

/* --- resuming across a handoff --- */

/* Starts connecting c (again), without waiting: 10,000 blocking connects
 * in a row would measure this loop, not the servers. */
static void resume_connect(Sub *c, int port, int ep) {
        struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                    .sin_addr = target };
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
        int one = 1;

        c->headers_done = c->chunked = c->ended = c->reconnect = c->request_sent = false;
        c->chunk_state = CHUNK_SIZE;
        c->head_len = c->sizebuf_len = c->line_len = 0;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (c->fd >= 0 && setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0 &&
            (connect(c->fd, (struct sockaddr *) &addr, sizeof(addr)) == 0 || errno == EINPROGRESS) &&
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) == 0)
                return;
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        c->retry_usec = now_usec() + 100000;
}

/* Once connected: the request, with Last-Event-ID as EventSource sends it. */
static int resume_send_request(Sub *c, const char *path, int ep) {
        char request[1024], id[64] = "";
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        int err = 0;
        socklen_t len = sizeof(err);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)
                return -1;
        if (c->last_id_major > 0)
                snprintf(id, sizeof(id), "Last-Event-ID: %" PRIu64 "\r\n", c->last_id_major);
        snprintf(request, sizeof(request),
                 "GET %s HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n%s\r\n", path, id);
        if (send_all(c->fd, request, strlen(request)) < 0 || epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                return -1;
        c->request_sent = true;
        return 0;
}

static void resume_drop(Sub *c, int ep, uint64_t now) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        if (!c->cut_usec)
                c->cut_usec = now;
        c->resumed_usec = 0;
        c->retry_usec = now;            /* at once: the worst case for the server */
}

/* Opens CONNECTIONS live streams, prints "ready", and for SECONDS resumes
 * every stream that ends (end of the response, or of the connection) from
 * its last id, at once. Reports when the first stream was cut, when the
 * last cut one had its first event again, and per stream gaps (an id not
 * one above the one before: lost) and repeats (duplicated). */
static int run_resume(int port, const char *path, int n, int seconds) {
        static char buf[READ_CHUNK];
        struct epoll_event events[512];
        int ep = epoll_create1(EPOLL_CLOEXEC), ready = 0;
        Sub *subs = calloc((size_t) n, sizeof(Sub));
        uint64_t start, end, first_cut = 0, last_resume = 0, cut = 0, resumed = 0, resumes = 0;
        uint64_t refused = 0, gaps = 0, min_last = UINT64_MAX, max_last = 0, last_cut = 0;
        Samples gap_usec = { 0 };

        if (!subs || ep < 0)
                die("setup");
        stats.window_end_usec = UINT64_MAX;
        for (int i = 0; i < n; i++)
                resume_connect(&subs[i], port, ep);
        start = now_usec();
        end = UINT64_MAX;
        for (;;) {
                uint64_t now = now_usec();
                if (end == UINT64_MAX && ready == n) {
                        printf("ready %d\n", ready);
                        fflush(stdout);
                        end = now + (uint64_t) seconds * 1000000ULL;
                }
                if (now > end || (end == UINT64_MAX && now > start + 120000000ULL))
                        break;
                int k = epoll_wait(ep, events, 512, 20);
                now = now_usec();
                for (int e = 0; e < k; e++) {
                        Sub *c = events[e].data.ptr;
                        uint64_t before = c->events;
                        bool was_done = c->headers_done;
                        if (!c->request_sent) {
                                if (resume_send_request(c, path, ep) < 0) {
                                        c->refused++;
                                        resume_drop(c, ep, now);
                                }
                                continue;
                        }
                        if (!stream_feed(c, buf, recv(c->fd, buf, sizeof(buf), 0)) || c->ended) {
                                if (!c->headers_done)
                                        c->refused++;
                                resume_drop(c, ep, now);
                                continue;
                        }
                        if (!was_done && c->headers_done && !c->opened) {
                                c->opened = true;
                                ready++;
                        }
                        if (c->cut_usec && !c->resumed_usec && c->events > before && c->resumes > 0)
                                c->resumed_usec = now;
                }
                for (int i = 0; i < n; i++) {
                        Sub *c = &subs[i];
                        if (c->fd < 0 && c->retry_usec <= now) {
                                c->resumes++;
                                resume_connect(c, port, ep);
                        }
                }
        }
        for (int i = 0; i < n; i++) {
                Sub *c = &subs[i];
                resumes += c->resumes;
                refused += c->refused;
                gaps += c->gaps;
                min_last = c->last_id_major < min_last ? c->last_id_major : min_last;
                max_last = c->last_id_major > max_last ? c->last_id_major : max_last;
                if (!c->cut_usec)
                        continue;
                cut++;
                last_cut = c->cut_usec > last_cut ? c->cut_usec : last_cut;
                first_cut = !first_cut || c->cut_usec < first_cut ? c->cut_usec : first_cut;
                if (c->resumed_usec) {
                        samples_add(&gap_usec, c->resumed_usec - c->cut_usec);
                        resumed++;
                        last_resume = c->resumed_usec > last_resume ? c->resumed_usec : last_resume;
                }
        }
        qsort(gap_usec.v, gap_usec.n, sizeof(uint32_t), cmp_u32);
        printf("{\"connections\":%d,\"ready\":%d,\"cut\":%" PRIu64 ",\"resumed\":%" PRIu64
               ",\"all_resumed_sec\":%.3f,\"reconnects\":%" PRIu64 ",\"refused\":%" PRIu64
               ",\"lost\":%" PRIu64 ",\"duplicated\":%" PRIu64 ",\"min_last_id\":%" PRIu64
               ",\"max_last_id\":%" PRIu64 ",\"cuts_spread_sec\":%.3f,\"resume_p50_ms\":%.1f,"
               "\"resume_p99_ms\":%.1f}\n",
               n, ready, cut, resumed, last_resume > first_cut ? (double) (last_resume - first_cut) / 1e6 : 0,
               resumes, refused, gaps, stats.out_of_order, min_last == UINT64_MAX ? 0 : min_last, max_last,
               (double) (last_cut - first_cut) / 1e6, percentile_ms(&gap_usec, 0.5), percentile_ms(&gap_usec, 0.99));
        return 0;
}

int main(int argc, char **argv) {
        const char *host = getenv("SSE_LOAD_HOST");

        target.s_addr = htonl(INADDR_LOOPBACK);
        if (host && inet_pton(AF_INET, host, &target) != 1) {
                fprintf(stderr, "sse-load: SSE_LOAD_HOST=%s is not an IPv4 address\n", host);
                return 2;
        }
        raise_fd_limit();
        if (argc >= 6 && (strcmp(argv[1], "sub") == 0 || strcmp(argv[1], "idle") == 0))
                return run_sub(atoi(argv[2]), argv[3], atoi(argv[4]), atoi(argv[5]),
                               strcmp(argv[1], "idle") == 0);
        if (argc >= 6 && strcmp(argv[1], "pub") == 0)
                return run_pub(atoi(argv[2]), argv[3], atoi(argv[4]), atoi(argv[5]),
                               argc >= 7 ? atoi(argv[6]) : 16, argc >= 8 ? atoi(argv[7]) : 16, false, 0);
        if (argc >= 6 && strcmp(argv[1], "pubmax") == 0)
                return run_pub(atoi(argv[2]), argv[3], 0, atoi(argv[5]), 16, atoi(argv[4]), true, 0);
        if (argc >= 7 && strcmp(argv[1], "pubn") == 0)
                return run_pub(atoi(argv[2]), argv[3], 0, 600, atoi(argv[6]), atoi(argv[4]), true,
                               (uint64_t) atoi(argv[4]) * (uint64_t) atoi(argv[5]));
        if (argc >= 7 && strcmp(argv[1], "catchup") == 0)
                return run_catchup(atoi(argv[2]), argv[3], atoi(argv[4]), strtoull(argv[5], NULL, 10),
                                   atoi(argv[6]));
        if (argc >= 7 && strcmp(argv[1], "slow") == 0)
                return run_slow(atoi(argv[2]), argv[3], atoi(argv[4]), strtoull(argv[5], NULL, 10),
                                atoi(argv[6]));
        if (argc >= 6 && strcmp(argv[1], "resume") == 0)
                return run_resume(atoi(argv[2]), argv[3], atoi(argv[4]), atoi(argv[5]));
        fprintf(stderr, "usage: sse-load sub|idle PORT PATH CONNECTIONS SECONDS\n"
                        "       sse-load pub PORT PATH RATE SECONDS [PAYLOAD_BYTES [CONNECTIONS]]\n"
                        "       sse-load pubmax PORT PATH CONNECTIONS SECONDS\n"
                        "       sse-load pubn PORT PATH CONNECTIONS EVENTS_EACH PAYLOAD_BYTES\n"
                        "       sse-load catchup PORT PATH CONNECTIONS LAST_ID SECONDS\n"
                        "       sse-load slow PORT PATH BYTES_PER_SEC LAST_ID SECONDS\n"
                        "       sse-load resume PORT PATH CONNECTIONS SECONDS\n");
        return 2;
}
