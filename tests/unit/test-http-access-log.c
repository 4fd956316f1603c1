/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "http-access-log.h"

/* Paths go into journal messages: nothing in them may forge a line or a
 * field, and a huge one is cut. */
static void test_path_is_escaped_and_cut(void **state) {
        char buf[1024], longpath[600];

        access_log_format_path("/api/v1/topics/orders/events", buf, sizeof(buf));
        assert_string_equal(buf, "/api/v1/topics/orders/events");
        access_log_format_path("/a\nb\r\"c\\d\x01\xc3\xa9", buf, sizeof(buf));
        assert_string_equal(buf, "/a\\x0ab\\x0d\\x22c\\x5cd\\x01\\xc3\\xa9");

        memset(longpath, 'x', sizeof(longpath) - 1);
        longpath[sizeof(longpath) - 1] = '\0';
        access_log_format_path(longpath, buf, sizeof(buf));
        assert_int_equal(strlen(buf), 203);
        assert_string_equal(buf + 200, "...");

        /* A small buffer is never overrun. */
        char small[8];
        access_log_format_path("/\x01\x01\x01\x01", small, sizeof(small));
        assert_true(strlen(small) < sizeof(small));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_path_is_escaped_and_cut),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
