/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>

#include "loop-util.h"
#include "log.h"
#include "parse-util.h"
#include "lifecycle-startup.h"

#define STARTUP_BACKOFF_MIN_USEC (250 * USEC_PER_MSEC)
/* How often STATUS= is refreshed with the latest error while waiting. */
#define STARTUP_STATUS_USEC (1 * USEC_PER_SEC)

struct Startup {
        sd_event *event;
        Db *db;
        Bus *bus;
        Health *health;
        const MigrationSet *migrations;
        usec_t lock_timeout_usec;
        usec_t backoff_max_usec;
        usec_t backoff_usec;

        StartupStep step;
        Migrator *migrator;
        uint64_t first_round;           /* health rounds that count start here */
        sd_event_source *retry_timer;
        sd_event_source *status_timer;
        char status[512];
        char db_error_logged[256];      /* the last libpq text logged while waiting */

        StartupCallbacks cb;
        void *userdata;
};

static void step_enter(Startup *s, StartupStep step);

static void set_status(Startup *s, const char *format, ...) _printf_(2, 3);
static void set_status(Startup *s, const char *format, ...) {
        char text[sizeof(s->status)];
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(text, sizeof(text), format, ap);
        va_end(ap);
        if (streq(text, s->status))
                return;
        snprintf(s->status, sizeof(s->status), "%s", text);
        log_debug("Startup: %s", text);
        if (s->cb.progress)
                s->cb.progress(s, s->status, s->userdata);
}

/* Describes the current wait, with the dependency's latest error. */
static void refresh_status(Startup *s) {
        const HealthSnapshot *h;

        switch (s->step) {
        case STARTUP_DATABASE:
                /* STATUS= reaches /health/ready: libpq's text (hosts,
                 * roles) goes to the journal only, once per new text. */
                if (!isempty(db_last_error(s->db)) && !streq(db_last_error(s->db), s->db_error_logged)) {
                        log_warning("Cannot connect to PostgreSQL yet: %s", db_last_error(s->db));
                        snprintf(s->db_error_logged, sizeof(s->db_error_logged), "%s", db_last_error(s->db));
                }
                set_status(s, "waiting for PostgreSQL: %s",
                           isempty(db_last_error(s->db)) ? "connecting" : db_error_code(NULL));
                break;
        case STARTUP_NATS:
                set_status(s, "waiting for NATS: %s", bus_last_error(s->bus));
                break;
        case STARTUP_CHECKS:
                h = health_snapshot(s->health);
                if (health_rounds(s->health) <= s->first_round)
                        set_status(s, "running the first health checks");
                else if (!h->database.up)
                        set_status(s, "waiting for the database check: %s", h->database.error);
                else if (h->nats_enabled && !h->nats.up)
                        set_status(s, "waiting for the NATS check: %s", h->nats.error);
                break;
        default:
                break;
        }
}

static int on_status_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Startup *s = userdata;

        refresh_status(s);
        if (s->step != STARTUP_DONE && event_timer_arm(source, STARTUP_STATUS_USEC) < 0)
                log_error("Failed to re-arm the startup status timer.");
        return 0;
}

static void migrations_start(Startup *s);

static int on_retry(sd_event_source *source, uint64_t usec, void *userdata) {
        Startup *s = userdata;

        if (s->step == STARTUP_MIGRATIONS)
                migrations_start(s);
        return 0;
}

static void retry_later(Startup *s) {
        char buf[FORMAT_DURATION_MAX];

        log_debug("Retrying migrations in %s.", format_duration(buf, sizeof(buf), s->backoff_usec));
        if (event_timer_arm(s->retry_timer, s->backoff_usec) < 0)
                log_error("Failed to arm the migration retry timer.");
        s->backoff_usec *= 2;
        if (s->backoff_usec > s->backoff_max_usec)
                s->backoff_usec = s->backoff_max_usec;
}

static void on_migrated(const MigrateResult *result, void *userdata) {
        Startup *s = userdata;
        /* result points into the migrator: free it only on the way out. */
        _cleanup_(migrator_freep) _unused_ Migrator *done = TAKE_PTR(s->migrator);

        switch (result->outcome) {
        case MIGRATE_OK:
                log_info("Database schema at version %u (%u migration(s) applied now).",
                         result->version, result->n_applied);
                step_enter(s, s->bus ? STARTUP_NATS : STARTUP_CHECKS);
                break;
        case MIGRATE_RETRY:
                /* STATUS= reaches /health/ready: libpq's text (hosts,
                 * roles) goes to the journal only. */
                if (result->error_code) {
                        log_warning("Cannot apply migrations yet: %s", strempty(result->error));
                        set_status(s, "waiting to apply migrations: %s", result->error_code);
                } else
                        set_status(s, "waiting to apply migrations: %s", strempty(result->error));
                if (db_connected(s->db))
                        retry_later(s);
                else
                        step_enter(s, STARTUP_DATABASE);
                break;
        case MIGRATE_FATAL:
                s->cb.fatal(s, result->error ? result->error : "migration failed", s->userdata);
                break;
        }
}

static void migrations_start(Startup *s) {
        int r;

        if (!db_connected(s->db)) {
                step_enter(s, STARTUP_DATABASE);
                return;
        }
        set_status(s, "applying migrations");
        r = migrator_run(s->db, s->migrations, s->lock_timeout_usec, on_migrated, s, &s->migrator);
        if (r < 0)
                s->cb.fatal(s, "out of memory starting migrations", s->userdata);
}

static void step_enter(Startup *s, StartupStep step) {
        s->step = step;
        switch (step) {
        case STARTUP_DATABASE:
                if (db_connected(s->db))
                        step_enter(s, STARTUP_MIGRATIONS);
                else
                        refresh_status(s);
                break;
        case STARTUP_MIGRATIONS:
                s->backoff_usec = STARTUP_BACKOFF_MIN_USEC;
                migrations_start(s);
                break;
        case STARTUP_NATS:
                if (bus_connected(s->bus))
                        step_enter(s, STARTUP_CHECKS);
                else
                        refresh_status(s);
                break;
        case STARTUP_CHECKS:
                /* Only a round that starts now proves the dependencies as
                 * they are after the steps above. */
                s->first_round = health_rounds(s->health);
                refresh_status(s);
                if (health_start(s->health) < 0)
                        s->cb.fatal(s, "cannot start health checks", s->userdata);
                break;
        case STARTUP_DONE:
                (void) sd_event_source_set_enabled(s->status_timer, SD_EVENT_OFF);
                s->cb.ready(s, s->userdata);
                break;
        default:
                break;
        }
}

void startup_cancel(Startup *s) {
        assert(s);

        if (s->step == STARTUP_DONE || s->step == STARTUP_CANCELLED)
                return;
        log_info("Startup cancelled while %s.", s->status);
        s->step = STARTUP_CANCELLED;
        (void) sd_event_source_set_enabled(s->retry_timer, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(s->status_timer, SD_EVENT_OFF);
        s->migrator = migrator_free(s->migrator);
}

void startup_on_database(Startup *s, bool connected) {
        assert(s);

        if (connected && s->step == STARTUP_DATABASE)
                step_enter(s, STARTUP_MIGRATIONS);
        /* A drop during migrations surfaces as a MIGRATE_RETRY result. */
}

void startup_on_bus(Startup *s, bool connected) {
        assert(s);

        if (connected && s->step == STARTUP_NATS)
                step_enter(s, STARTUP_CHECKS);
}

void startup_on_health_round(Startup *s) {
        assert(s);

        if (s->step != STARTUP_CHECKS || health_rounds(s->health) <= s->first_round)
                return;
        const HealthSnapshot *h = health_snapshot(s->health);
        if (h->database.up && (!h->nats_enabled || h->nats.up))
                step_enter(s, STARTUP_DONE);
        else
                refresh_status(s);      /* the checks keep running every interval */
}

int startup_new(sd_event *event, Db *db, Bus *bus, Health *health, const MigrationSet *migrations,
                const StartupCallbacks *callbacks, void *userdata, Startup **ret) {
        _cleanup_(startup_freep) Startup *s = NULL;
        int r;

        assert(event && db && health && migrations && callbacks && ret);

        s = calloc(1, sizeof(Startup));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->db = db;
        s->bus = bus;
        s->health = health;
        s->migrations = migrations;
        s->cb = *callbacks;
        s->userdata = userdata;
        s->backoff_usec = STARTUP_BACKOFF_MIN_USEC;
        s->backoff_max_usec = 10 * USEC_PER_SEC;
        s->lock_timeout_usec = 10 * USEC_PER_SEC;

        r = event_timer_new(event, &s->retry_timer, 10 * USEC_PER_MSEC, on_retry, s);
        if (r < 0)
                return r;
        r = sd_event_add_time_relative(event, &s->status_timer, CLOCK_MONOTONIC, STARTUP_STATUS_USEC,
                                       10 * USEC_PER_MSEC, on_status_timer, s);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

Startup *startup_free(Startup *s) {
        if (!s)
                return NULL;
        migrator_free(TAKE_PTR(s->migrator));
        sd_event_source_disable_unref(s->retry_timer);
        sd_event_source_disable_unref(s->status_timer);
        sd_event_unref(s->event);
        return mfree(s);
}

void startup_set_timeouts(Startup *s, usec_t migration_lock_timeout_usec, usec_t backoff_max_usec) {
        assert(s);

        s->lock_timeout_usec = migration_lock_timeout_usec;
        s->backoff_max_usec = backoff_max_usec;
}

int startup_begin(Startup *s) {
        assert(s);

        int r = db_start(s->db);
        if (r < 0)
                return r;
        if (s->bus) {
                /* NATS connects in the background while the database steps run. */
                r = bus_start(s->bus);
                if (r < 0)
                        return r;
        }
        step_enter(s, STARTUP_DATABASE);
        return 0;
}

StartupStep startup_step(const Startup *s) {
        assert(s);

        return s->step;
}

const char *startup_status(const Startup *s) {
        assert(s);

        return s->status;
}
