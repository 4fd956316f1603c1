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

/* Ready: running, and every enabled check is up. */
bool health_snapshot_ready(const HealthSnapshot *s);

/* {"status":"UP"|"DOWN", ["reason":...,] "checks":{"database":{...}[,"nats":{...}]}} */
json_t *health_snapshot_to_json(const HealthSnapshot *s);
