/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "health-report.h"

static HealthSnapshot running(bool db_up, bool nats_enabled, bool nats_up) {
        HealthSnapshot s = { .phase = HEALTH_RUNNING, .nats_enabled = nats_enabled };
        check_result_set(&s.database, db_up, 1500, db_up ? NULL : "connection refused");
        if (nats_enabled)
                check_result_set(&s.nats, nats_up, 800, nats_up ? NULL : "no round trip");
        return s;
}

static void test_ready_rules(void **state) {
        HealthSnapshot s = running(true, false, false);
        assert_true(health_snapshot_ready(&s));

        s = running(false, false, false);
        assert_false(health_snapshot_ready(&s));

        s = running(true, true, true);
        assert_true(health_snapshot_ready(&s));
        s = running(true, true, false);
        assert_false(health_snapshot_ready(&s));
        /* NATS down does not matter when NATS is disabled. */
        s = running(true, false, false);
        s.nats.up = false;
        assert_true(health_snapshot_ready(&s));

        s = running(true, false, false);
        s.phase = HEALTH_STARTING;
        assert_false(health_snapshot_ready(&s));
        s.phase = HEALTH_STOPPING;
        assert_false(health_snapshot_ready(&s));

        /* Never checked is not up. */
        HealthSnapshot fresh = { .phase = HEALTH_RUNNING };
        assert_false(health_snapshot_ready(&fresh));
}

static json_t *get(json_t *j, const char *path) {
        char copy[128];
        snprintf(copy, sizeof(copy), "%s", path);
        for (char *p = strtok(copy, "."); p && j; p = strtok(NULL, "."))
                j = json_object_get(j, p);
        return j;
}

static const char *get_str(json_t *j, const char *path) {
        json_t *v = get(j, path);
        return v ? json_string_value(v) : NULL;
}

static void test_json_up(void **state) {
        HealthSnapshot s = running(true, true, true);
        json_t *j = health_snapshot_to_json(&s);

        assert_non_null(j);
        assert_string_equal(get_str(j, "status"), "UP");
        assert_null(get(j, "reason"));
        assert_string_equal(get_str(j, "checks.database.status"), "UP");
        assert_true(json_real_value(get(j, "checks.database.durationMs")) == 1.5);
        assert_null(get(j, "checks.database.error"));
        assert_string_equal(get_str(j, "checks.nats.status"), "UP");
        json_decref(j);
}

static void test_json_down(void **state) {
        HealthSnapshot s = running(false, false, false);
        json_t *j = health_snapshot_to_json(&s);

        assert_string_equal(get_str(j, "status"), "DOWN");
        assert_string_equal(get_str(j, "checks.database.status"), "DOWN");
        assert_string_equal(get_str(j, "checks.database.error"), "connection refused");
        /* NATS is only reported when enabled. */
        assert_null(get(j, "checks.nats"));
        json_decref(j);
}

static void test_json_phases(void **state) {
        HealthSnapshot s = running(true, false, false);
        json_t *j;

        s.phase = HEALTH_STARTING;
        s.starting_reason = "waiting for PostgreSQL: connection refused";
        j = health_snapshot_to_json(&s);
        assert_string_equal(get_str(j, "status"), "DOWN");
        assert_string_equal(get_str(j, "reason"), "waiting for PostgreSQL: connection refused");
        json_decref(j);

        s.phase = HEALTH_STOPPING;
        j = health_snapshot_to_json(&s);
        assert_string_equal(get_str(j, "status"), "DOWN");
        assert_string_equal(get_str(j, "reason"), "shutting down");
        /* The checks still tell the truth about the dependencies. */
        assert_string_equal(get_str(j, "checks.database.status"), "UP");
        json_decref(j);

        HealthSnapshot fresh = { .phase = HEALTH_STARTING };
        j = health_snapshot_to_json(&fresh);
        assert_string_equal(get_str(j, "reason"), "starting");
        assert_string_equal(get_str(j, "checks.database.error"), "not checked yet");
        json_decref(j);
}

static void test_long_error_is_truncated_not_overflowed(void **state) {
        char long_error[1000];
        CheckResult c;

        memset(long_error, 'x', sizeof(long_error) - 1);
        long_error[sizeof(long_error) - 1] = '\0';
        check_result_set(&c, false, 0, long_error);
        assert_int_equal(strlen(c.error), CHECK_ERROR_MAX - 1);
        check_result_set(&c, false, 0, NULL);
        assert_string_equal(c.error, "failed");
}

static FullHealth full(const HealthSnapshot *s, uint64_t used, uint64_t limit) {
        FullHealth h = {
                .snapshot = s,
                .memory = { .read = true, .used_bytes = used, .limit_bytes = limit, .source = "cgroup" },
                .server = { .connections = 3, .requests = 2, .streams = 1 },
                .version = "1.2.3",
                .color = "blue",
                .uptime_usec = 90 * USEC_PER_SEC + 500000,
        };
        return h;
}

static OverallHealth verdict(const FullHealth *h) {
        char reason[256];
        return full_health_overall(h, reason, sizeof(reason));
}

static void test_full_report_rules(void **state) {
        HealthSnapshot s = running(true, true, true);
        FullHealth h = full(&s, 100, 1000);

        assert_int_equal(verdict(&h), OVERALL_HEALTHY);
        /* A dependency down: degraded (the service recovers by itself). */
        s = running(false, true, true);
        assert_int_equal(verdict(&h), OVERALL_DEGRADED);
        s = running(true, true, false);
        assert_int_equal(verdict(&h), OVERALL_DEGRADED);
        /* ... unless it is disabled. */
        s = running(true, false, false);
        assert_int_equal(verdict(&h), OVERALL_HEALTHY);
        /* Memory: above 90% of the limit is degraded, 90% itself is not. */
        h.memory.used_bytes = 900;
        assert_int_equal(verdict(&h), OVERALL_HEALTHY);
        h.memory.used_bytes = 901;
        assert_int_equal(verdict(&h), OVERALL_DEGRADED);
        /* A check that cannot run: unhealthy. */
        h.memory.read = false;
        assert_int_equal(verdict(&h), OVERALL_UNHEALTHY);
        h.memory.read = true;
        h.memory.used_bytes = 1;
        /* Shutting down: unhealthy, whatever the checks say. */
        s.phase = HEALTH_STOPPING;
        assert_int_equal(verdict(&h), OVERALL_UNHEALTHY);
        /* Starting: degraded, with what it waits for. */
        s.phase = HEALTH_STARTING;
        s.starting_reason = "waiting for PostgreSQL";
        char reason[256];
        assert_int_equal(full_health_overall(&h, reason, sizeof(reason)), OVERALL_DEGRADED);
        assert_string_equal(reason, "starting: waiting for PostgreSQL");
}

static void test_full_report_json(void **state) {
        HealthSnapshot s = running(false, false, false);
        FullHealth h = full(&s, 950, 1000);
        OverallHealth overall = OVERALL_HEALTHY;
        json_t *j = full_health_to_json(&h, &overall);

        assert_non_null(j);
        assert_string_equal(get_str(j, "status"), "degraded");
        assert_int_equal(overall, OVERALL_DEGRADED);
        assert_string_equal(get_str(j, "reason"), "database is down");
        assert_string_equal(get_str(j, "version"), "1.2.3");
        assert_string_equal(get_str(j, "color"), "blue");
        assert_int_equal(json_integer_value(get(j, "uptimeSeconds")), 90);
        assert_string_equal(get_str(j, "checks.database.status"), "DOWN");
        assert_string_equal(get_str(j, "checks.database.error"), "connection refused");
        assert_true(json_real_value(get(j, "checks.database.responseTimeMs")) == 1.5);
        assert_string_equal(get_str(j, "checks.nats.status"), "DISABLED");
        assert_string_equal(get_str(j, "checks.memory.status"), "WARN");
        assert_int_equal(json_integer_value(get(j, "checks.memory.usedBytes")), 950);
        assert_int_equal(json_integer_value(get(j, "checks.memory.limitBytes")), 1000);
        assert_true(json_real_value(get(j, "checks.memory.usedPercent")) == 95.0);
        assert_string_equal(get_str(j, "checks.memory.limitSource"), "cgroup");
        assert_string_equal(get_str(j, "checks.server.status"), "UP");
        assert_int_equal(json_integer_value(get(j, "checks.server.activeStreams")), 1);
        json_decref(j);

        s = running(true, false, false);
        h = full(&s, 1, 1000);
        j = full_health_to_json(&h, &overall);
        assert_string_equal(get_str(j, "status"), "healthy");
        assert_null(get(j, "reason"));
        json_decref(j);

        j = health_database_to_json(&s);
        assert_string_equal(get_str(j, "status"), "UP");
        assert_true(json_real_value(get(j, "responseTimeMs")) == 1.5);
        json_decref(j);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ready_rules),
                cmocka_unit_test(test_json_up),
                cmocka_unit_test(test_json_down),
                cmocka_unit_test(test_json_phases),
                cmocka_unit_test(test_long_error_is_truncated_not_overflowed),
                cmocka_unit_test(test_full_report_rules),
                cmocka_unit_test(test_full_report_json),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
