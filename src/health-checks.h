/* SPDX-License-Identifier: MIT */
#pragma once

/* Readiness: dependency checks run in rounds, in the background, every
 * HEALTH_CHECK_INTERVAL: SELECT 1 on PostgreSQL and, when enabled, a
 * round trip through NATS, each bounded by HEALTH_CHECK_TIMEOUT. At most
 * one round is in flight, ever. Probes never start a check: they get the
 * latest round's result as a prebuilt response, so a flood of probes costs
 * no database query and a hung database cannot delay a probe. */

#include <systemd/sd-event.h>

#include "event-bus.h"
#include "db.h"
#include "health-report.h"
#include "http-response.h"
#include "metrics.h"

typedef struct Health Health;

/* Every check of one dependency so far, for /metrics. */
typedef struct CheckStats {
        uint64_t passed;
        uint64_t failed;
        Histogram duration;
} CheckStats;

typedef struct HealthSettings {
        usec_t timeout_usec;
        usec_t interval_usec;
} HealthSettings;

/* Runs after every round, and after every phase change. */
typedef void (*HealthChangeCallback)(Health *health, void *userdata);

/* bus is NULL when NATS is disabled. */
int health_new(sd_event *event, Db *db, Bus *bus, const HealthSettings *settings, Health **ret);
Health *health_free(Health *health);
DEFINE_POINTER_CLEANUP(Health, health_free);

void health_set_change_callback(Health *health, HealthChangeCallback cb, void *userdata);

/* The database check also requires this connection to be up (publishing,
 * reading, listening each have their own). name: "publish", ... */
int health_watch_connection(Health *health, const char *name, Db *db);
void health_set_settings(Health *health, const HealthSettings *settings);

void health_set_phase(Health *health, HealthPhase phase, const char *starting_reason);

/* Runs a round now (unless one runs) and keeps running them periodically. */
int health_start(Health *health);

/* True while running and every enabled check passed in the last round. */
bool health_ready(const Health *health);
const HealthSnapshot *health_snapshot(const Health *health);
/* Rounds completed so far (startup waits for one that began after it). */
uint64_t health_rounds(const Health *health);
const CheckStats *health_database_stats(const Health *health);
const CheckStats *health_nats_stats(const Health *health);

/* 200 or 503 with the snapshot as JSON (for /ready and /startup). */
void health_respond_ready(Health *health, HttpRequest *req);
