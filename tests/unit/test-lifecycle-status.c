/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "health-endpoints.h"
#include "lifecycle-status.h"

static void test_running_status(void **state) {
        char buf[256];
        RunningStatus s = {
                .listen = "127.0.0.1:8080",
                .color = "blue",
                .ready = true,
                .counters = { .active_connections = 3, .active_requests = 1, .active_streams = 2,
                              .requests_total = 1234 },
        };

        status_format_running(&s, buf, sizeof(buf));
        assert_string_equal(buf, "Ready on 127.0.0.1:8080, colour blue: 1 request, 2 streams, "
                                 "3 connections, 1234 served");
        s.color = "";
        s.ready = false;
        s.not_ready_reason = "database check fails: connection refused";
        s.counters = (HttpCounters) { 0 };
        status_format_running(&s, buf, sizeof(buf));
        assert_string_equal(buf, "Not ready: 0 requests, 0 streams, 0 connections, 0 served; "
                                 "database check fails: connection refused");
        /* Never overflows, however long the reason. */
        char small[16];
        status_format_running(&s, small, sizeof(small));
        assert_int_equal(strlen(small), sizeof(small) - 1);
}

static void test_deployment_status(void **state) {
        assert_string_equal(health_deployment_status(false, false, false), "starting");
        assert_string_equal(health_deployment_status(true, true, false), "ready");
        assert_string_equal(health_deployment_status(true, false, false), "not_ready");
        assert_string_equal(health_deployment_status(true, true, true), "draining");
        assert_string_equal(health_deployment_status(false, false, true), "draining");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_running_status),
                cmocka_unit_test(test_deployment_status),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
