/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>

#include "health-report.h"

void check_result_set(CheckResult *c, bool up, usec_t duration_usec, const char *error) {
        c->checked = true;
        c->up = up;
        c->duration_usec = duration_usec;
        snprintf(c->error, sizeof(c->error), "%s", up ? "" : (isempty(error) ? "failed" : error));
}

bool health_snapshot_ready(const HealthSnapshot *s) {
        if (s->phase != HEALTH_RUNNING)
                return false;
        if (!s->database.checked || !s->database.up)
                return false;
        if (s->nats_enabled && (!s->nats.checked || !s->nats.up))
                return false;
        return true;
}

static json_t *check_to_json(const CheckResult *c) {
        /* Milliseconds with microsecond precision, rounded for readability. */
        double ms = round(usec_to_msec(c->duration_usec) * 1000.0) / 1000.0;
        json_t *j;

        if (!c->checked)
                return json_pack("{s:s, s:f, s:s}", "status", "DOWN", "durationMs", 0.0,
                                 "error", "not checked yet");
        j = json_pack("{s:s, s:f}", "status", c->up ? "UP" : "DOWN", "durationMs", ms);
        if (j && !c->up && json_object_set_new(j, "error", json_string(c->error)) < 0) {
                json_decref(j);
                return NULL;
        }
        return j;
}

static const char *phase_reason(const HealthSnapshot *s) {
        switch (s->phase) {
        case HEALTH_STARTING:
                return isempty(s->starting_reason) ? "starting" : s->starting_reason;
        case HEALTH_STOPPING:
                return "shutting down";
        default:
                return NULL;
        }
}

json_t *health_snapshot_to_json(const HealthSnapshot *s) {
        json_t *checks, *root;
        const char *reason = phase_reason(s);

        checks = json_pack("{s:o}", "database", check_to_json(&s->database));
        if (checks && s->nats_enabled &&
            json_object_set_new(checks, "nats", check_to_json(&s->nats)) < 0) {
                json_decref(checks);
                return NULL;
        }
        root = json_pack("{s:s, s:o}", "status", health_snapshot_ready(s) ? "UP" : "DOWN",
                         "checks", checks);
        if (root && reason && json_object_set_new(root, "reason", json_string(reason)) < 0) {
                json_decref(root);
                return NULL;
        }
        return root;
}
