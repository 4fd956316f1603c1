/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/random.h>

#include "db.h"
#include "list.h"
#include "log.h"
#include "loop-util.h"
#include "parse-util.h"

#define DB_BACKOFF_MIN_USEC (100 * USEC_PER_MSEC)
#define DB_ERROR_MAX 512

typedef enum DbState {
        DB_DISCONNECTED,        /* waiting for the reconnect timer */
        DB_CONNECTING,
        DB_CONNECTED,
} DbState;

typedef struct DbQuery {
        char *sql;
        char **params;
        int n_params;
        usec_t timeout_usec;
        DbQueryCallback cb;
        void *userdata;
        bool urgent;
        ListNode queue;                 /* in the connection's */
} DbQuery;

struct Db {
        sd_event *event;
        char *conninfo;
        char *application_name;
        usec_t connect_timeout_usec;
        usec_t backoff_max_usec;
        usec_t backoff_usec;
        usec_t statement_timeout_usec;

        DbState state;
        bool started;
        PGconn *conn;
        int fd;
        sd_event_source *io_source;
        sd_event_source *timer_source;  /* connect timeout, query timeout, or reconnect */
        /* Sends queued queries from the loop, never from inside db_query():
         * a callback must not run before db_query() has returned. */
        sd_event_source *kick_source;
        int64_t priority;

        ListNode queue;                 /* the first is in flight when 'busy' */
        bool busy;
        bool flushing;
        PGresult *last_result;
        char *query_error;              /* first error of the query in flight */
        char sqlstate[6];

        char last_error[DB_ERROR_MAX];

        DbStateCallback state_cb;
        void *state_userdata;
        DbNotifyCallback notify_cb;
        void *notify_userdata;
};

static void db_connect_begin(Db *db);
static void db_send_next(Db *db);
static void set_session_defaults(Db *db);

static void db_kick(Db *db) {
        if (sd_event_source_set_enabled(db->kick_source, SD_EVENT_ONESHOT) < 0)
                log_error("Failed to schedule a PostgreSQL query.");
}

static int on_kick(sd_event_source *source, void *userdata) {
        db_send_next(userdata);
        return 0;
}

static void set_last_error(Db *db, const char *message) {
        db_one_line(message, db->last_error, sizeof(db->last_error));
}

static void query_free(DbQuery *q) {
        if (!q)
                return;
        free(q->sql);
        for (int i = 0; i < q->n_params; i++)
                free(q->params[i]);
        free(q->params);
        free(q);
}

static DbQuery *queue_first(Db *db) {
        return list_first(&db->queue, DbQuery, queue);
}

static DbQuery *queue_pop(Db *db) {
        DbQuery *q = queue_first(db);
        if (q)
                list_remove(&q->queue);
        return q;
}

static void timer_stop(Db *db) {
        (void) sd_event_source_set_enabled(db->timer_source, SD_EVENT_OFF);
}

static int watch(Db *db, uint32_t events, bool new_socket);

/* Completes every queued query with the same failure. */
static void fail_all_queries(Db *db, const char *error) {
        DbResult result = { .error = error, .transient = true };
        DbQuery *q;

        db->busy = false;
        db->flushing = false;
        while ((q = queue_pop(db))) {
                if (q->cb)
                        q->cb(db, &result, q->userdata);
                query_free(q);
        }
}

static void close_connection(Db *db) {
        db->io_source = sd_event_source_disable_unref(db->io_source);
        if (db->conn)
                PQfinish(db->conn);
        db->conn = NULL;
        db->fd = -1;
        if (db->last_result)
                PQclear(db->last_result);
        db->last_result = NULL;
        db->query_error = mfree(db->query_error);
}

static void schedule_reconnect(Db *db) {
        uint32_t jitter = 0;
        usec_t delay = db->backoff_usec;
        char buf[FORMAT_DURATION_MAX];

        /* +/-20% so that instances that lost the database together do not
         * come back in lockstep. */
        if (getrandom(&jitter, sizeof(jitter), GRND_NONBLOCK) == sizeof(jitter))
                delay = delay * 8 / 10 + (delay * 4 / 10) * (jitter % 1000) / 1000;
        log_debug("Reconnecting to PostgreSQL in %s.", format_duration(buf, sizeof(buf), delay));
        if (event_timer_arm(db->timer_source, delay) < 0)
                log_error("Failed to arm the PostgreSQL reconnect timer.");
        db->backoff_usec *= 2;
        if (db->backoff_usec > db->backoff_max_usec)
                db->backoff_usec = db->backoff_max_usec;
}

/* Connection lost or never made: tell everyone, retry later. */
static void connection_failed(Db *db, const char *error) {
        bool was_connected = db->state == DB_CONNECTED;

        set_last_error(db, error);
        close_connection(db);
        timer_stop(db);
        if (event_finished(db->event)) {
                /* Tearing down after the loop ended: nobody is left to
                 * retry for or to tell. */
                db->state = DB_DISCONNECTED;
                fail_all_queries(db, db->last_error);
                return;
        }
        /* Down before the callbacks run: a retry from one of them must see
         * -ENOTCONN, not queue behind a connection that no longer exists. */
        db->state = DB_DISCONNECTED;
        fail_all_queries(db, db->last_error);
        schedule_reconnect(db);
        if (was_connected) {
                log_warning("Lost the PostgreSQL connection (%s): %s", db->application_name,
                            db->last_error);
                if (db->state_cb)
                        db->state_cb(db, false, db->state_userdata);
        } else
                log_debug("PostgreSQL connection attempt failed: %s", db->last_error);
}

static void connection_established(Db *db) {
        timer_stop(db);
        if (PQsetnonblocking(db->conn, 1) != 0) {
                connection_failed(db, "cannot switch the connection to non-blocking mode");
                return;
        }
        if (watch(db, EPOLLIN, true) < 0) {
                connection_failed(db, "cannot watch the connection socket");
                return;
        }
        /* Connected only once usable: a failure above is a failed attempt,
         * not a lost connection. */
        db->state = DB_CONNECTED;
        db->backoff_usec = DB_BACKOFF_MIN_USEC;
        db->last_error[0] = '\0';
        int v = PQserverVersion(db->conn);
        log_info("Connected to PostgreSQL %d.%d (%s).", v / 10000, v % 10000, db->application_name);
        set_session_defaults(db);
        if (db->state_cb)
                db->state_cb(db, true, db->state_userdata);
        db_kick(db);
}

/* --- connecting --- */

static void on_session_defaults(Db *db, const DbResult *result, void *userdata) {
        if (result->error)
                log_warning("Could not set the session settings, ignoring: %s", result->error);
}

/* A backend whose client went away keeps running (and holding its locks,
 * our migration lock included) until its query ends; waiting on a lock, it
 * may never end. Since PostgreSQL 14 it can check the client meanwhile.
 * Queued first, before anyone else can use the new connection. */
/* statement_timeout: the server cancels a query that runs too long, and
 * the connection stays (a client-side timeout would have to reset it).
 * client_connection_check_interval (14+): a query whose client vanished
 * stops, instead of running to its end. */
static void set_session_defaults(Db *db) {
        char sql[160];
        size_t n = 0;

        if (PQserverVersion(db->conn) >= 140000)
                n += (size_t) snprintf(sql + n, sizeof(sql) - n, "SET client_connection_check_interval = '1s';");
        if (db->statement_timeout_usec > 0)
                n += (size_t) snprintf(sql + n, sizeof(sql) - n, "SET statement_timeout = '%" PRIu64 "ms';",
                                       db->statement_timeout_usec / USEC_PER_MSEC);
        if (n == 0)
                return;
        if (db_query_urgent(db, sql, 0, NULL, 10 * USEC_PER_SEC, on_session_defaults, NULL) < 0)
                log_warning("Could not queue the session settings, ignoring.");
}

/* libpq prints NOTICEs ("relation ... already exists, skipping") to stderr
 * by default; they are routine here, so they go to debug logging. */
static void on_notice(void *arg, const char *message) {
        char line[DB_ERROR_MAX];
        log_debug("PostgreSQL: %s", db_one_line(message, line, sizeof(line)));
}

static void connect_step(Db *db) {
        PostgresPollingStatusType st = PQconnectPoll(db->conn);

        switch (st) {
        case PGRES_POLLING_OK:
                connection_established(db);
                return;
        case PGRES_POLLING_FAILED:
                connection_failed(db, PQerrorMessage(db->conn));
                return;
        case PGRES_POLLING_READING:
        case PGRES_POLLING_WRITING:
                /* libpq may have moved to another socket (next host or
                 * address, a retry without SSL). */
                if (watch(db, st == PGRES_POLLING_READING ? EPOLLIN : EPOLLOUT, true) < 0)
                        connection_failed(db, "cannot watch the connection socket");
                return;
        default:
                return;
        }
}

static void db_connect_begin(Db *db) {
        /* Our defaults come before the user's string so that anything set in
         * DATABASE_URL wins (libpq: later keywords override earlier ones).
         * Keepalives notice a vanished server on an idle connection. */
        const char *keywords[] = {
                "application_name", "keepalives", "keepalives_idle", "keepalives_interval",
                "keepalives_count", "dbname", NULL,
        };
        const char *values[] = {
                db->application_name, "1", "10", "5", "3", db->conninfo, NULL,
        };

        db->state = DB_CONNECTING;
        db->conn = PQconnectStartParams(keywords, values, 1);
        if (!db->conn) {
                connection_failed(db, "out of memory");
                return;
        }
        if (PQstatus(db->conn) == CONNECTION_BAD) {
                connection_failed(db, PQerrorMessage(db->conn));
                return;
        }
        PQsetNoticeProcessor(db->conn, on_notice, db);
        /* PQconnectPoll ignores connect_timeout: this timer enforces it. */
        if (event_timer_arm(db->timer_source, db->connect_timeout_usec) < 0) {
                connection_failed(db, "cannot arm the connect timer");
                return;
        }
        /* The first poll happens when the socket is writable. */
        if (watch(db, EPOLLOUT, true) < 0)
                connection_failed(db, "cannot watch the connection socket");
}

/* --- queries --- */

static void query_finish(Db *db) {
        DbQuery *q = queue_pop(db);
        DbResult result = { .result = db->last_result };
        char error[DB_ERROR_MAX];

        db->busy = false;
        timer_stop(db);
        if (db->query_error) {
                result.error = db_one_line(db->query_error, error, sizeof(error));
                result.sqlstate = db->sqlstate[0] ? db->sqlstate : NULL;
                result.transient = db_sqlstate_transient(result.sqlstate);
        }
        if (q->cb)
                q->cb(db, &result, q->userdata);
        query_free(q);

        if (db->last_result)
                PQclear(db->last_result);
        db->last_result = NULL;
        db->query_error = mfree(db->query_error);
        db_kick(db);
}

/* A COPY would leave the connection in copy mode, where PQgetResult()
 * returns a new COPY result forever. Nothing batond runs uses COPY, so the
 * statement is refused as a plain error (not worth retrying) and the
 * connection, now in an unknown state, is reset. */
static void copy_refused(Db *db) {
        DbQuery *q = queue_pop(db);
        DbResult result = {
                .error = "COPY is not supported here",
                .sqlstate = "0A000",    /* feature_not_supported */
                .transient = false,
        };

        db->busy = false;
        if (q && q->cb)
                q->cb(db, &result, q->userdata);
        query_free(q);
        connection_failed(db, "connection reset after a refused COPY");
}

/* Collects results of the query in flight as they become available. */
static void query_collect(Db *db) {
        while (db->busy && !PQisBusy(db->conn)) {
                PGresult *res = PQgetResult(db->conn);

                if (!res) {
                        query_finish(db);
                        return;
                }
                ExecStatusType st = PQresultStatus(res);
                if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
                        PQclear(res);
                        copy_refused(db);
                        return;
                }
                if ((st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE) && !db->query_error) {
                        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
                        db->query_error = strdup(PQresultErrorMessage(res));
                        snprintf(db->sqlstate, sizeof(db->sqlstate), "%s", strempty(state));
                }
                if (db->last_result)
                        PQclear(db->last_result);
                db->last_result = res;
        }
}

static void flush_output(Db *db) {
        int r = PQflush(db->conn);

        if (r < 0) {
                connection_failed(db, PQerrorMessage(db->conn));
                return;
        }
        db->flushing = r > 0;
        if (watch(db, db->flushing ? EPOLLIN | EPOLLOUT : EPOLLIN, false) < 0)
                connection_failed(db, "cannot watch the connection socket");
}

static void db_send_next(Db *db) {
        DbQuery *q = queue_first(db);
        int ok;

        if (db->state != DB_CONNECTED || db->busy || !q)
                return;
        db->sqlstate[0] = '\0';
        if (q->n_params == 0)
                ok = PQsendQuery(db->conn, q->sql);
        else
                ok = PQsendQueryParams(db->conn, q->sql, q->n_params, NULL,
                                       (const char *const *) q->params, NULL, NULL, 0);
        if (!ok) {
                connection_failed(db, PQerrorMessage(db->conn));
                return;
        }
        db->busy = true;
        if (event_timer_arm(db->timer_source,
                            q->timeout_usec + (db->statement_timeout_usec > 0 ? DB_CANCEL_GRACE_USEC : 0)) < 0)
                log_error("Failed to arm the query timer; the query runs without timeout.");
        flush_output(db);
}

static void on_readable(Db *db) {
        PGnotify *n;

        if (!PQconsumeInput(db->conn)) {
                connection_failed(db, PQerrorMessage(db->conn));
                return;
        }
        /* Notifications (LISTEN) arrive interleaved with query results. */
        while ((n = PQnotifies(db->conn))) {
                if (db->notify_cb)
                        db->notify_cb(db, n->relname, n->extra, db->notify_userdata);
                PQfreemem(n);
                if (!db->conn)
                        return;         /* the callback reset the connection */
        }
        if (db->busy)
                query_collect(db);
        else if (PQstatus(db->conn) == CONNECTION_BAD)
                connection_failed(db, PQerrorMessage(db->conn));
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Db *db = userdata;

        if (db->state == DB_CONNECTING) {
                connect_step(db);
                return 0;
        }
        if ((revents & EPOLLOUT) && db->flushing) {
                flush_output(db);
                if (db->state != DB_CONNECTED)
                        return 0;
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(db);
        return 0;
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Db *db = userdata;
        char buf[FORMAT_DURATION_MAX], message[128];

        switch (db->state) {
        case DB_DISCONNECTED:
                db_connect_begin(db);
                break;
        case DB_CONNECTING:
                snprintf(message, sizeof(message), "timed out connecting after %s",
                         format_duration(buf, sizeof(buf), db->connect_timeout_usec));
                connection_failed(db, message);
                break;
        case DB_CONNECTED:
                if (db->busy && queue_first(db)) {
                        snprintf(message, sizeof(message), "query timed out after %s",
                                 format_duration(buf, sizeof(buf), queue_first(db)->timeout_usec));
                        /* The server may still be working on it: only a new
                         * connection gives a known state. Reconnect at once. */
                        db->backoff_usec = DB_BACKOFF_MIN_USEC;
                        connection_failed(db, message);
                }
                break;
        }
        return 0;
}

/* Points the io source at the connection's current socket and events.
 * new_socket: the socket may have been replaced even if its number did not
 * change (PQconnectPoll closes one and opens the next within one call, and
 * the kernel hands out the same number); the old registration is then
 * stale, so the source is made anew. */
static int watch(Db *db, uint32_t events, bool new_socket) {
        int fd = PQsocket(db->conn);
        int r;

        if (fd < 0)
                return -EBADF;
        if (db->io_source && (new_socket || fd != db->fd))
                db->io_source = sd_event_source_disable_unref(db->io_source);
        db->fd = fd;
        if (!db->io_source) {
                r = sd_event_add_io(db->event, &db->io_source, fd, events, on_io, db);
                if (r < 0)
                        return r;
                return sd_event_source_set_priority(db->io_source, db->priority);
        }
        r = sd_event_source_set_io_events(db->io_source, events);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(db->io_source, SD_EVENT_ON);
}

/* --- public --- */

int db_new(sd_event *event, const DbSettings *settings, Db **ret) {
        _cleanup_(db_freep) Db *db = NULL;
        int r;

        assert(event && settings && ret);

        db = calloc(1, sizeof(Db));
        if (!db)
                return -ENOMEM;
        list_init(&db->queue);
        db->event = sd_event_ref(event);
        db->fd = -1;
        db->conninfo = strdup(settings->conninfo);
        db->application_name = strdup(settings->application_name);
        if (!db->conninfo || !db->application_name)
                return -ENOMEM;
        db->connect_timeout_usec = settings->connect_timeout_usec;
        db->backoff_max_usec = settings->backoff_max_usec;
        db->statement_timeout_usec = settings->statement_timeout_usec;
        db->priority = settings->priority;
        db->backoff_usec = DB_BACKOFF_MIN_USEC;

        r = event_timer_new(event, &db->timer_source, USEC_PER_MSEC, on_timer, db);
        if (r < 0)
                return r;
        r = event_defer_new(event, &db->kick_source, on_kick, db);
        if (r < 0)
                return r;
        r = sd_event_source_set_priority(db->kick_source, db->priority);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(db);
        return 0;
}

Db *db_free(Db *db) {
        DbQuery *q;

        if (!db)
                return NULL;
        close_connection(db);
        while ((q = queue_pop(db)))
                query_free(q);
        sd_event_source_disable_unref(db->timer_source);
        sd_event_source_disable_unref(db->kick_source);
        sd_event_unref(db->event);
        free(db->conninfo);
        free(db->application_name);
        return mfree(db);
}

void db_set_state_callback(Db *db, DbStateCallback cb, void *userdata) {
        assert(db);

        db->state_cb = cb;
        db->state_userdata = userdata;
}

void db_set_notify_callback(Db *db, DbNotifyCallback cb, void *userdata) {
        assert(db);

        db->notify_cb = cb;
        db->notify_userdata = userdata;
}

void db_set_timeouts(Db *db, usec_t connect_timeout_usec, usec_t backoff_max_usec,
                     usec_t statement_timeout_usec) {
        bool changed;

        assert(db);

        changed = db->statement_timeout_usec != statement_timeout_usec;
        db->connect_timeout_usec = connect_timeout_usec;
        db->backoff_max_usec = backoff_max_usec;
        db->statement_timeout_usec = statement_timeout_usec;
        if (db->backoff_usec > backoff_max_usec)
                db->backoff_usec = backoff_max_usec;
        /* A reload: the session takes the new one now, later ones at connect. */
        if (changed && db->state == DB_CONNECTED)
                set_session_defaults(db);
}

int db_start(Db *db) {
        assert(db);

        if (db->started)
                return 0;
        db->started = true;
        db_connect_begin(db);
        return 0;
}

bool db_connected(const Db *db) {
        assert(db);

        return db->state == DB_CONNECTED;
}

const char *db_last_error(const Db *db) {
        assert(db);

        return db->last_error;
}

/* Queues q: at the end, or (urgent) before every queued non-urgent query,
 * never before the one in flight. */
static void queue_insert(Db *db, DbQuery *q) {
        ListNode *after = &db->queue;   /* insert after this node */

        if (!q->urgent) {
                list_append(&db->queue, &q->queue);
                return;
        }
        if (db->busy && !list_empty(&db->queue))
                after = db->queue.next;         /* the one in flight */
        while (after->next != &db->queue && container_of(after->next, DbQuery, queue)->urgent)
                after = after->next;
        list_insert_between(&q->queue, after, after->next);
}

static int query_new(Db *db, const char *sql, int n_params, const char *const *params,
                     usec_t timeout_usec, DbQueryCallback cb, void *userdata, bool urgent) {
        DbQuery *q;

        if (db->state != DB_CONNECTED)
                return -ENOTCONN;
        q = calloc(1, sizeof(DbQuery));
        if (!q)
                return -ENOMEM;
        q->sql = strdup(sql);
        q->params = n_params > 0 ? calloc((size_t) n_params, sizeof(char *)) : NULL;
        q->n_params = n_params;
        if (!q->sql || (n_params > 0 && !q->params)) {
                q->n_params = 0;
                query_free(q);
                return -ENOMEM;
        }
        for (int i = 0; i < n_params; i++)
                if (params[i] && !(q->params[i] = strdup(params[i]))) {
                        query_free(q);
                        return -ENOMEM;
                }
        q->timeout_usec = timeout_usec;
        q->cb = cb;
        q->userdata = userdata;
        q->urgent = urgent;
        queue_insert(db, q);
        db_kick(db);
        return 0;
}

int db_query(Db *db, const char *sql, int n_params, const char *const *params,
             usec_t timeout_usec, DbQueryCallback cb, void *userdata) {
        assert(db && sql);

        return query_new(db, sql, n_params, params, timeout_usec, cb, userdata, false);
}

int db_query_urgent(Db *db, const char *sql, int n_params, const char *const *params,
                    usec_t timeout_usec, DbQueryCallback cb, void *userdata) {
        assert(db && sql);

        return query_new(db, sql, n_params, params, timeout_usec, cb, userdata, true);
}

void db_cancel(Db *db, void *userdata) {
        assert(db);

        DbQuery *in_flight = db->busy ? queue_first(db) : NULL;

        LIST_FOREACH_SAFE(q, next, &db->queue, DbQuery, queue) {
                if (q->userdata != userdata)
                        continue;
                if (q == in_flight)
                        /* Its result will arrive and must be read, so only
                         * its callback goes. */
                        q->cb = NULL;
                else {
                        /* Not sent yet: it goes, and does no work for nobody. */
                        list_remove(&q->queue);
                        query_free(q);
                }
        }
}

void db_reset(Db *db, const char *reason) {
        assert(db && reason);

        if (db->state == DB_DISCONNECTED)
                return;
        db->backoff_usec = DB_BACKOFF_MIN_USEC;
        connection_failed(db, reason);
}
