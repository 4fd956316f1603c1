/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "http-target.h"

static void test_path(void **state) {
        static const struct {
                const char *target;
                const char *path;
        } cases[] = {
                /* origin-form: itself */
                { "/", "/" },
                { "/_/health/live", "/_/health/live" },
                { "//x", "//x" },
                /* absolute-form (RFC 9112 3.2.2): the path after the authority */
                { "http://x/_/health/live", "/_/health/live" },
                { "HTTP://x/_/health/live", "/_/health/live" },
                { "https://x:8443/api/v1/topics/a/events", "/api/v1/topics/a/events" },
                { "http://user:pw@x:80/a", "/a" },
                { "http://x", "/" },
                { "http://", "/" },
                { "http:///a", "/a" },
                /* neither: left alone, no route matches */
                { "ftp://x/a", "ftp://x/a" },
                { "*", "*" },
                { "x:443", "x:443" },
                { "http:/x", "http:/x" },
                { "", "" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_string_equal(http_target_path(cases[i].target), cases[i].path);
}

static void test_check(void **state) {
        static const char *const good[] = { "/", "/a?b=c", "/%20", "/\xc3\xa9", "/\xff", "http://x/a" };
        static const char *const bad[] = { "/a b", "/a\tb", "/a\rb", "/\x01", "/\x7f", " /" };

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                assert_int_equal(http_target_check(good[i], strlen(good[i])), 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(http_target_check(bad[i], strlen(bad[i])), -EBADMSG);
        /* Only the bytes named count: MHD's copy may end in a NUL. */
        assert_int_equal(http_target_check("/a\0b", 4), -EBADMSG);
        assert_int_equal(http_target_check("/a\0b", 2), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_path),
                cmocka_unit_test(test_check),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
