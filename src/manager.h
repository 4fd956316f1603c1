/* SPDX-License-Identifier: MIT */
#pragma once

/* The Manager owns everything batond runs: the event loop, the running
 * configuration and every subsystem. Callbacks receive it as userdata;
 * nothing else is global (logging aside). */

#include <systemd/sd-event.h>

#include "http-access-log.h"
#include "event-bus.h"
#include "config.h"
#include "db.h"
#include "lifecycle-drain.h"
#include "lifecycle.h"
#include "event-fanout.h"
#include "health-checks.h"
#include "http-server.h"
#include "event-bus-mailbox.h"
#include "db-migrate.h"
#include "event-pglisten.h"
#include "event-publisher.h"
#include "event-pruner.h"
#include "auth-jwt.h"
#include "lifecycle-startup.h"
#include "sse-stream.h"
#include "lifecycle-watchdog.h"

typedef struct Manager {
        sd_event *event;
        Config *config;
        char *config_path;
        bool config_path_required;
        MigrationSet migrations;

        Mailbox *mailbox;
        /* One connection per kind of work, so that none waits behind
         * another: control (health checks, migrations), writes (publish
         * batches), reads (history, replays, gap fills), and LISTEN for
         * fan-out when NATS is disabled. */
        Db *db;
        Db *db_write;
        Db *db_read;
        Db *db_prune;                   /* the pruner's own */
        JwtKeys *jwt_keys;              /* from JWT_KEY and JWT_PUBLIC_KEY_FILE; NULL: none */
        Pruner *pruner;
        Db *db_replay[FANOUT_REPLAY_CONNECTIONS_MAX];   /* DATABASE_REPLAY_CONNECTIONS */
        size_t n_db_replay;
        PgListener *listener;           /* NULL when NATS__ENABLED */
        Bus *bus;                       /* NULL unless NATS__ENABLED */
        unsigned forged_logged;         /* bus messages with a bad signature, since the last log */
        Publisher *publisher;
        Fanout *fanout;
        Health *health;
        StreamHub *streams;
        HttpServer *http;
        Startup *startup;
        Drain *drain;
        Watchdog *watchdog;
        AccessLog *access_log;
        Lifecycle *lifecycle;           /* the state, STATUS=, the status file */
        sd_event_source *status_timer;  /* refreshes them once a second */

        HttpSharedResponse *live_response;
        HttpSharedResponse *summary_response;
        char *listen_summary;           /* "127.0.0.1:8080, [::1]:8080" for STATUS= */
        char not_ready_reason[CHECK_ERROR_MAX + 32];

        usec_t start_monotonic_usec;
        usec_t start_realtime_usec;
        int exit_code;
} Manager;

/* Takes ownership of config. Logs its failures. */
int manager_new(Config *config, const char *config_path, bool config_path_required, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_POINTER_CLEANUP(Manager, manager_free);

/* Acquires sockets, starts serving probes, then starts the dependency
 * sequence towards READY=1. 0, or -errno (logged): -ECONFIG when the
 * configuration cannot work. */
int manager_start(Manager *m);

/* Runs the loop until the drain completes or startup fails. Returns the
 * status the loop ended with (EXIT_SUCCESS after a drain, EXIT_FAILURE
 * when startup failed for good, both logged), or -errno (logged) when
 * the loop itself failed. */
int manager_run(Manager *m);
