/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdio.h>
#include <systemd/sd-event.h>

#include "db.h"
#include "log.h"
#include "db-migrate-cli.h"
#include "db-migrate.h"

typedef struct MigrateCli {
        sd_event *event;
        Db *db;
        const MigrationSet *set;
        MigrateCliMode mode;
        const Config *config;
        Migrator *migrator;
        sd_event_source *retry;
        int result;                     /* 0, or -errno (logged) */
} MigrateCli;

static void on_status(int error, const char *message, char **lines, size_t n_lines, bool problems,
                      void *userdata) {
        MigrateCli *cli = userdata;

        if (error < 0)
                cli->result = log_error_errno(error, "Cannot read the migration status: %s", strempty(message));
        else {
                for (size_t i = 0; i < n_lines; i++)
                        printf("%s\n", lines[i]);
                /* The lines say what does not match, or why it would refuse. */
                cli->result = problems ? -EBADMSG : 0;
        }
        (void) sd_event_exit(cli->event, 0);
}

static void on_migrated(const MigrateResult *result, void *userdata);

static void start(MigrateCli *cli) {
        int r;

        cli->migrator = migrator_free(cli->migrator);
        if (cli->mode == MIGRATE_CLI_STATUS)
                r = migrator_status(cli->db, cli->set, on_status, cli, &cli->migrator);
        else if (cli->mode == MIGRATE_CLI_PLAN)
                r = migrator_plan(cli->db, cli->set, on_status, cli, &cli->migrator);
        else
                r = migrator_run(cli->db, cli->set, cli->config->migration_lock_timeout_usec,
                                 on_migrated, cli, &cli->migrator);
        if (r < 0) {
                cli->result = log_error_errno(r, "Cannot start: %m");
                (void) sd_event_exit(cli->event, 0);
        }
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        start(userdata);
        return 0;
}

static void on_migrated(const MigrateResult *result, void *userdata) {
        MigrateCli *cli = userdata;

        switch (result->outcome) {
        case MIGRATE_OK:
                printf("Schema at version %u; %u migration(s) applied.\n", result->version,
                       result->n_applied);
                cli->result = 0;
                break;
        case MIGRATE_RETRY:
                /* Another instance holds the lock: wait for it, as the daemon does. */
                if (db_connected(cli->db) && strstr(strempty(result->error), "another instance")) {
                        log_info("%s; waiting.", result->error);
                        cli->retry = sd_event_source_disable_unref(cli->retry);
                        if (sd_event_add_time_relative(cli->event, &cli->retry, CLOCK_MONOTONIC,
                                                       USEC_PER_SEC, 0, on_retry, cli) >= 0)
                                return;
                }
                _fallthrough_;
        case MIGRATE_FATAL:
                cli->result = log_error_errno(-EIO, "Migration failed: %s", strempty(result->error));
                break;
        }
        (void) sd_event_exit(cli->event, 0);
}

static void on_db_state(Db *db, bool connected, void *userdata) {
        MigrateCli *cli = userdata;

        if (connected && !cli->migrator)
                start(cli);
}

static int on_connect_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        MigrateCli *cli = userdata;

        if (db_connected(cli->db))
                return 0;
        cli->result = log_error_errno(-ETIMEDOUT, "Cannot connect to PostgreSQL: %s", db_last_error(cli->db));
        (void) sd_event_exit(cli->event, 0);
        return 0;
}

int migrate_cli(const Config *config, MigrateCliMode mode) {
        assert(config);

        _cleanup_free_ char *error = NULL;
        MigrationSet set = { 0 };
        MigrateCli cli = { .config = config, .mode = mode, .result = -EIO };
        int r;

        r = migration_set_load(embedded_migrations, n_embedded_migrations, &set, &error);
        if (r < 0)
                return log_error_errno(r, "Embedded migrations are broken: %s", strempty(error));
        cli.set = &set;
        DbSettings ds = {
                .conninfo = config->database_url,
                .application_name = "batond-migrate",
                .connect_timeout_usec = config->database_connect_timeout_usec,
                .backoff_max_usec = config->retry_backoff_max_usec,
        };
        if ((r = sd_event_new(&cli.event)) < 0 ||
            (r = db_new(cli.event, &ds, &cli.db)) < 0 ||
            (r = sd_event_add_time_relative(cli.event, NULL, CLOCK_MONOTONIC,
                                            config->database_connect_timeout_usec, 0,
                                            on_connect_timeout, &cli)) < 0) {
                cli.result = log_error_errno(r, "Failed to set up: %m");
                goto finish;
        }
        db_set_state_callback(cli.db, on_db_state, &cli);
        r = db_start(cli.db);
        if (r >= 0)
                r = sd_event_loop(cli.event);
        if (r < 0)
                cli.result = log_error_errno(r, "Event loop failed: %m");
finish:
        migrator_free(cli.migrator);
        sd_event_source_disable_unref(cli.retry);
        db_free(cli.db);
        sd_event_unref(cli.event);
        migration_set_done(&set);
        return cli.result;
}
