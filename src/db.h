/* SPDX-License-Identifier: MIT */
#pragma once

/* One asynchronous PostgreSQL connection on the sd-event loop. It keeps
 * itself connected: after a failure it reconnects with exponential backoff
 * (with jitter, so two colours do not retry in lockstep) for as long as it
 * exists. Queries run one at a time in submission order, each with its own
 * timeout. A query that runs too long is cancelled by the server itself
 * (statement_timeout, when the connection has one): only that query fails
 * and the connection goes on serving the others. A query the server does
 * not answer at all within its timeout (plus DB_CANCEL_GRACE_USEC with a
 * statement timeout) resets the connection, since its state is unknown.
 *
 * libpq never blocks the loop here, with one documented exception: a host
 * name in DATABASE_URL is resolved by libpq synchronously when a connection
 * attempt starts. Use an IP address (or hostaddr=) where DNS may hang. */

#include <libpq-fe.h>
#include <systemd/sd-event.h>

#include "db-error.h"
#include "util.h"

typedef struct Db Db;

typedef struct DbResult {
        PGresult *result;       /* the last result; valid during the callback only */
        const char *error;      /* one line, NULL on success */
        const char *sqlstate;   /* NULL when the error is not from the server */
        bool transient;         /* worth retrying: connection trouble, lock timeout, ... */
} DbResult;

typedef void (*DbQueryCallback)(Db *db, const DbResult *result, void *userdata);
typedef void (*DbStateCallback)(Db *db, bool connected, void *userdata);
/* A NOTIFY on a channel this connection LISTENs to. */
typedef void (*DbNotifyCallback)(Db *db, const char *channel, const char *payload, void *userdata);

typedef struct DbSettings {
        const char *conninfo;
        const char *application_name;
        usec_t connect_timeout_usec;
        usec_t backoff_max_usec;
        /* The server cancels statements running longer (0: none, for
         * migrations, which may take their time). */
        usec_t statement_timeout_usec;
        /* sd-event priority of the connection's sources (0: normal). */
        int64_t priority;
} DbSettings;

/* How long past its timeout a query may still be answered (by the server's
 * own cancel) before the connection is given up on. */
#define DB_CANCEL_GRACE_USEC (2 * USEC_PER_SEC)

int db_new(sd_event *event, const DbSettings *settings, Db **ret);
/* Pending queries are dropped without their callbacks running. */
Db *db_free(Db *db);
DEFINE_POINTER_CLEANUP(Db, db_free);

void db_set_state_callback(Db *db, DbStateCallback cb, void *userdata);
void db_set_notify_callback(Db *db, DbNotifyCallback cb, void *userdata);
void db_set_timeouts(Db *db, usec_t connect_timeout_usec, usec_t backoff_max_usec,
                     usec_t statement_timeout_usec);

/* Starts connecting; from then on the connection is kept up. */
int db_start(Db *db);

bool db_connected(const Db *db);
/* Why the last attempt or query failed ("" when nothing failed yet). */
const char *db_last_error(const Db *db);

/* Queues a query. Without parameters the simple protocol is used, so 'sql'
 * may hold several statements (migrations). Returns -ENOTCONN at once when
 * not connected (see db_last_error()); otherwise cb runs exactly once. */
int db_query(Db *db, const char *sql, int n_params, const char *const *params,
             usec_t timeout_usec, DbQueryCallback cb, void *userdata);

/* Like db_query(), but runs before every queued non-urgent query (after
 * the one in flight and earlier urgent ones): for work that others wait on,
 * on a connection shared with bulk reads. */
int db_query_urgent(Db *db, const char *sql, int n_params, const char *const *params,
                    usec_t timeout_usec, DbQueryCallback cb, void *userdata);

/* Forgets every query queued by 'userdata' (the query argument): their
 * callbacks will not run, and those not yet sent are not sent. For an
 * owner that goes away mid-conversation. */
void db_cancel(Db *db, void *userdata);

/* Drops the connection (failing queued queries) and reconnects. */
void db_reset(Db *db, const char *reason);

