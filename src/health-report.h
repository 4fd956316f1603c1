/* SPDX-License-Identifier: MIT */
#pragma once

/* What the readiness probes report, as plain data: a snapshot of the
 * service's phase and its dependency checks, the rule that turns it into
 * UP or DOWN, and its JSON form. No I/O here (unit-tested). */

#include <jansson.h>

#include "util.h"

#define CHECK_ERROR_MAX 256

typedef enum HealthPhase {
        HEALTH_STARTING,        /* before READY=1: probes answer 503 */
        HEALTH_RUNNING,
        HEALTH_STOPPING,        /* after SIGTERM: ready answers 503 at once */
        _HEALTH_PHASE_MAX,
} HealthPhase;

typedef struct CheckResult {
        bool checked;                   /* false until the first check ends */
        bool up;
        usec_t duration_usec;
        char error[CHECK_ERROR_MAX];    /* "" when up */
} CheckResult;

typedef struct HealthSnapshot {
        HealthPhase phase;
        const char *starting_reason;    /* what startup waits for, while starting */
        CheckResult database;
        bool nats_enabled;
        CheckResult nats;
} HealthSnapshot;

void check_result_set(CheckResult *c, bool up, usec_t duration_usec, const char *error);

/* Every enabled check ran and is up, whatever the phase. */
bool health_snapshot_checks_pass(const HealthSnapshot *s);
/* Ready: running, and every enabled check is up. */
bool health_snapshot_ready(const HealthSnapshot *s);

/* {"status":"UP"|"DOWN", ["reason":...,] "checks":{"database":{...}[,"nats":{...}]}} */
json_t *health_snapshot_to_json(const HealthSnapshot *s);

/* --- The full report of GET /health --- */

/* Memory use above this share of the limit turns /health degraded. */
#define MEMORY_DEGRADED_PERCENT 90.0

typedef enum OverallHealth {
        OVERALL_HEALTHY,
        OVERALL_DEGRADED,               /* serving, but a dependency is down or memory is short */
        OVERALL_UNHEALTHY,              /* shutting down, or a check could not run: 503 */
} OverallHealth;

const char *overall_health_to_string(OverallHealth h);

typedef struct MemoryCheck {
        bool read;                      /* false: the figures could not be read */
        uint64_t used_bytes;
        uint64_t limit_bytes;
        const char *source;             /* "cgroup" or "physical" */
        char error[CHECK_ERROR_MAX];
} MemoryCheck;

typedef struct ServerCheck {
        bool draining;
        uint64_t connections, requests, streams;
} ServerCheck;

typedef struct FullHealth {
        const HealthSnapshot *snapshot;
        MemoryCheck memory;
        ServerCheck server;
        const char *version;
        const char *color;
        usec_t uptime_usec;
} FullHealth;

/* The verdict and, unless healthy, why ("database is down", ...). */
OverallHealth full_health_overall(const FullHealth *h, char *reason, size_t reason_size);

/* {"status":"healthy"|"degraded"|"unhealthy", ["reason":...,] "version", "color",
 *  "uptimeSeconds", "checks":{"database","nats","memory","server"}}; the
 * verdict in *ret_overall (may be NULL), so callers need not decide twice. */
json_t *full_health_to_json(const FullHealth *h, OverallHealth *ret_overall);

/* GET /health/db: the database check alone ({"status":"UP","responseTimeMs":...}). */
json_t *health_database_to_json(const HealthSnapshot *s);
