/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdio.h>

#include "health-report.h"

void check_result_set(CheckResult *c, bool up, usec_t duration_usec, const char *error) {
        assert(c);

        c->checked = true;
        c->up = up;
        c->duration_usec = duration_usec;
        snprintf(c->error, sizeof(c->error), "%s", up ? "" : (isempty(error) ? "failed" : error));
}

bool health_snapshot_checks_pass(const HealthSnapshot *s) {
        assert(s);

        if (!s->database.checked || !s->database.up)
                return false;
        if (s->nats_enabled && (!s->nats.checked || !s->nats.up))
                return false;
        return true;
}

bool health_snapshot_ready(const HealthSnapshot *s) {
        assert(s);

        return s->phase == HEALTH_RUNNING && health_snapshot_checks_pass(s);
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
        assert(s);

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

/* --- The full report --- */

const char *overall_health_to_string(OverallHealth h) {
        static const char *const names[] = {
                [OVERALL_HEALTHY] = "healthy",
                [OVERALL_DEGRADED] = "degraded",
                [OVERALL_UNHEALTHY] = "unhealthy",
        };
        return names[h];
}

static double memory_percent(const MemoryCheck *m) {
        return m->limit_bytes > 0 ? 100.0 * (double) m->used_bytes / (double) m->limit_bytes : 0.0;
}

static bool memory_high(const MemoryCheck *m) {
        return m->read && memory_percent(m) > MEMORY_DEGRADED_PERCENT;
}

static bool dependency_down(const CheckResult *c) {
        return !c->checked || !c->up;
}

OverallHealth full_health_overall(const FullHealth *h, char *reason, size_t size) {
        assert(h && reason);

        const HealthSnapshot *s = h->snapshot;

        if (s->phase == HEALTH_STOPPING) {
                snprintf(reason, size, "shutting down");
                return OVERALL_UNHEALTHY;
        }
        if (!h->memory.read) {
                snprintf(reason, size, "memory check failed: %s", h->memory.error);
                return OVERALL_UNHEALTHY;
        }
        if (s->phase == HEALTH_STARTING)
                snprintf(reason, size, "starting: %s", isempty(s->starting_reason) ? "" : s->starting_reason);
        else if (dependency_down(&s->database))
                snprintf(reason, size, "database is down");
        else if (s->nats_enabled && dependency_down(&s->nats))
                snprintf(reason, size, "NATS is down");
        else if (memory_high(&h->memory))
                snprintf(reason, size, "memory use is above %.0f%% of the limit", MEMORY_DEGRADED_PERCENT);
        else {
                snprintf(reason, size, "%s", "");
                return OVERALL_HEALTHY;
        }
        return OVERALL_DEGRADED;
}

static double rounded_msec(usec_t usec) {
        return round(usec_to_msec(usec) * 1000.0) / 1000.0;
}

static json_t *dependency_to_json(const CheckResult *c) {
        json_t *j;

        if (!c->checked)
                return json_pack("{s:s, s:s}", "status", "DOWN", "error", "not checked yet");
        j = json_pack("{s:s, s:f}", "status", c->up ? "UP" : "DOWN", "responseTimeMs",
                      rounded_msec(c->duration_usec));
        if (j && !c->up && json_object_set_new(j, "error", json_string(c->error)) < 0) {
                json_decref(j);
                return NULL;
        }
        return j;
}

static json_t *memory_to_json(const MemoryCheck *m) {
        if (!m->read)
                return json_pack("{s:s, s:s}", "status", "ERROR", "error", m->error);
        return json_pack("{s:s, s:I, s:I, s:f, s:s}",
                         "status", memory_high(m) ? "WARN" : "UP",
                         "usedBytes", (json_int_t) m->used_bytes,
                         "limitBytes", (json_int_t) m->limit_bytes,
                         "usedPercent", round(memory_percent(m) * 10.0) / 10.0,
                         "limitSource", m->source);
}

static json_t *server_to_json(const ServerCheck *s) {
        return json_pack("{s:s, s:I, s:I, s:I}",
                         "status", s->draining ? "DRAINING" : "UP",
                         "activeConnections", (json_int_t) s->connections,
                         "activeRequests", (json_int_t) s->requests,
                         "activeStreams", (json_int_t) s->streams);
}

json_t *full_health_to_json(const FullHealth *h, OverallHealth *ret_overall) {
        assert(h);

        char reason[CHECK_ERROR_MAX + 64];
        OverallHealth overall = full_health_overall(h, reason, sizeof(reason));
        json_t *nats = h->snapshot->nats_enabled ? dependency_to_json(&h->snapshot->nats)
                                                 : json_pack("{s:s}", "status", "DISABLED");
        json_t *root;

        root = json_pack("{s:s, s:s, s:s, s:I, s:{s:o?, s:o?, s:o?, s:o?}}",
                         "status", overall_health_to_string(overall),
                         "version", h->version,
                         "color", strempty(h->color),
                         "uptimeSeconds", (json_int_t) (h->uptime_usec / USEC_PER_SEC),
                         "checks",
                         "database", dependency_to_json(&h->snapshot->database),
                         "nats", nats,
                         "memory", memory_to_json(&h->memory),
                         "server", server_to_json(&h->server));
        if (root && overall != OVERALL_HEALTHY &&
            json_object_set_new(root, "reason", json_string(reason)) < 0) {
                json_decref(root);
                return NULL;
        }
        if (ret_overall)
                *ret_overall = overall;
        return root;
}

json_t *health_database_to_json(const HealthSnapshot *s) {
        assert(s);

        return dependency_to_json(&s->database);
}
