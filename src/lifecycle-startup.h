/* SPDX-License-Identifier: MIT */
#pragma once

/* The road to READY=1, one step after another, in this order:
 *
 *   1. PostgreSQL connected   (Db reconnects by itself; we wait)
 *   2. migrations applied     (retried with backoff while another instance
 *                              holds the lock or the connection drops;
 *                              fatal on a changed or unknown migration)
 *   3. NATS connected         (only when enabled)
 *   4. a full round of health checks passed, begun after step 3
 *
 * Until then STATUS= and the ready probe say which step waits and why
 * (the last error). */

#include <systemd/sd-event.h>

#include "event-bus.h"
#include "db.h"
#include "health-checks.h"
#include "db-migrate.h"

typedef struct Startup Startup;

typedef enum StartupStep {
        STARTUP_DATABASE,
        STARTUP_MIGRATIONS,
        STARTUP_NATS,
        STARTUP_CHECKS,
        STARTUP_DONE,
        STARTUP_CANCELLED,              /* stop signal before READY=1 */
        _STARTUP_STEP_MAX,
} StartupStep;

typedef struct StartupCallbacks {
        /* Every dependency is up: send READY=1. */
        void (*ready)(Startup *s, void *userdata);
        /* Cannot ever become ready (e.g. a changed migration): exit. */
        void (*fatal)(Startup *s, const char *error, void *userdata);
        /* The reason we wait changed: update STATUS=. */
        void (*progress)(Startup *s, const char *status, void *userdata);
} StartupCallbacks;

int startup_new(sd_event *event, Db *db, Bus *bus, Health *health, const MigrationSet *migrations,
                const StartupCallbacks *callbacks, void *userdata, Startup **ret);
Startup *startup_free(Startup *s);
DEFINE_POINTER_CLEANUP(Startup, startup_free);

void startup_set_timeouts(Startup *s, usec_t migration_lock_timeout_usec, usec_t backoff_max_usec);

/* Logs its failures. */
int startup_begin(Startup *s);

/* Stops where it is (a stop signal came first): no READY=1 follows, a
 * migration in flight is abandoned (the server rolls it back). */
void startup_cancel(Startup *s);
StartupStep startup_step(const Startup *s);

/* The owner forwards these events. */
void startup_on_database(Startup *s, bool connected);
void startup_on_bus(Startup *s, bool connected);
void startup_on_health_round(Startup *s);

/* "waiting for PostgreSQL: connection refused", ... */
const char *startup_status(const Startup *s);
