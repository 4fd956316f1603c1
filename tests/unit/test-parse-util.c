/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>

#include "parse-util.h"

static void test_bool(void **state) {
        static const char *const yes[] = { "1", "true", "TRUE", "yes", "On" };
        static const char *const no[] = { "0", "false", "No", "off" };
        static const char *const bad[] = { "", "2", "y", "truee", " true" };
        bool b;

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                b = false;
                assert_int_equal(parse_bool(yes[i], &b), 0);
                assert_true(b);
        }
        for (size_t i = 0; i < ELEMENTSOF(no); i++) {
                b = true;
                assert_int_equal(parse_bool(no[i], &b), 0);
                assert_false(b);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(parse_bool(bad[i], &b), -EINVAL);
}

static void test_uint64(void **state) {
        uint64_t v = 7;

        assert_int_equal(parse_uint64("0", &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(parse_uint64("18446744073709551615", &v), 0);
        assert_true(v == UINT64_MAX);
        assert_int_equal(parse_uint64("18446744073709551616", &v), -ERANGE);
        assert_int_equal(parse_uint64("-1", &v), -EINVAL);
        assert_int_equal(parse_uint64("12a", &v), -EINVAL);
        assert_int_equal(parse_uint64("", &v), -EINVAL);
        assert_int_equal(parse_uint64("+5", &v), -EINVAL);
}

static void test_duration(void **state) {
        static const struct {
                const char *text;
                usec_t usec;
        } good[] = {
                { "5", 5 * USEC_PER_SEC },
                { "5s", 5 * USEC_PER_SEC },
                { "5sec", 5 * USEC_PER_SEC },
                { "500ms", 500 * USEC_PER_MSEC },
                { "2m", 120 * USEC_PER_SEC },
                { "2min", 120 * USEC_PER_SEC },
                { "1h", 3600 * USEC_PER_SEC },
                { "0", 0 },
                { "10S", 10 * USEC_PER_SEC },
        };
        static const char *const bad[] = { "", "s", "5 s", "5x", "1.5s", "-1s", "5ss", "ms" };
        usec_t u;

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                assert_int_equal(parse_duration(good[i].text, &u), 0);
                assert_true(u == good[i].usec);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(parse_duration(bad[i], &u), -EINVAL);
        assert_int_equal(parse_duration("99999999999999999h", &u), -ERANGE);
}

static void test_size(void **state) {
        uint64_t v;

        assert_int_equal(parse_size("64", &v), 0);
        assert_true(v == 64);
        assert_int_equal(parse_size("8K", &v), 0);
        assert_true(v == 8192);
        assert_int_equal(parse_size("8KiB", &v), 0);
        assert_true(v == 8192);
        assert_int_equal(parse_size("1M", &v), 0);
        assert_true(v == 1048576);
        assert_int_equal(parse_size("2GiB", &v), 0);
        assert_true(v == 2ULL << 30);
        assert_int_equal(parse_size("1T", &v), -EINVAL);
        assert_int_equal(parse_size("K", &v), -EINVAL);
        assert_int_equal(parse_size("99999999999999G", &v), -ERANGE);
}

static void test_format_duration(void **state) {
        char buf[FORMAT_DURATION_MAX];

        assert_string_equal(format_duration(buf, sizeof(buf), 0), "0s");
        assert_string_equal(format_duration(buf, sizeof(buf), 250 * USEC_PER_MSEC), "250ms");
        assert_string_equal(format_duration(buf, sizeof(buf), 1500 * USEC_PER_MSEC), "1500ms");
        assert_string_equal(format_duration(buf, sizeof(buf), 90 * USEC_PER_SEC), "90s");
        assert_string_equal(format_duration(buf, sizeof(buf), 120 * USEC_PER_SEC), "2m");
        assert_string_equal(format_duration(buf, sizeof(buf), 7200 * USEC_PER_SEC), "2h");
        assert_string_equal(format_duration(buf, sizeof(buf), USEC_INFINITY), "infinity");
}

static void test_constant_time_compare(void **state) {
        assert_true(streq_constant_time("s3cret-token", "s3cret-token"));
        assert_false(streq_constant_time("s3cret-tokeN", "s3cret-token"));
        assert_false(streq_constant_time("s3cret", "s3cret-token"));
        assert_false(streq_constant_time("s3cret-token-and-more", "s3cret-token"));
        assert_false(streq_constant_time("", "s3cret-token"));
        /* An empty secret never matches: "no token configured" is not "any token". */
        assert_false(streq_constant_time("", ""));
}

static void test_utf8_scrub(void **state) {
        static const struct {
                const char *in, *out;
                size_t replaced;
        } cases[] = {
                { "/api/v1/topics/orders", "/api/v1/topics/orders", 0 },
                { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\x89", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\x89", 0 },
                { "/\xff\xfe", "/??", 2 },
                { "/\xc0\xae\xc0\xae", "/????", 4 },           /* overlong '.' */
                { "\xe0\x80\xaf", "???", 3 },                   /* overlong '/' */
                { "\xed\xa0\x80", "???", 3 },                   /* a surrogate */
                { "\xf4\x90\x80\x80", "????", 4 },             /* past U+10FFFF */
                { "\x80x", "?x", 1 },                             /* stray continuation */
                { "ab\xc3", "ab?", 1 },                           /* cut short at the end */
                { "\xe2\x82x", "??x", 2 },                       /* cut short inside */
                { "", "", 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char buf[64];
                snprintf(buf, sizeof(buf), "%s", cases[i].in);
                assert_int_equal(utf8_scrub(buf), cases[i].replaced);
                assert_string_equal(buf, cases[i].out);
        }
}

static void test_list(void **state) {
        static const struct {
                const char *in;
                const char *out[4];
        } cases[] = {
                { "nats://a:1", { "nats://a:1" } },
                { "nats://a:1,nats://b:2", { "nats://a:1", "nats://b:2" } },
                { "nats://a:1, nats://b:2 ,\tnats://c:3", { "nats://a:1", "nats://b:2", "nats://c:3" } },
                { " , ,a,,", { "a" } },
                { "", { NULL } },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(list_freep) char **list = NULL;
                size_t n = 99, want = 0;
                assert_int_equal(parse_list(cases[i].in, &list, &n), 0);
                while (want < 4 && cases[i].out[want])
                        want++;
                assert_int_equal(n, want);
                for (size_t j = 0; j < want; j++)
                        assert_string_equal(list[j], cases[i].out[j]);
                assert_null(list[n]);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_list),
                cmocka_unit_test(test_bool),
                cmocka_unit_test(test_uint64),
                cmocka_unit_test(test_duration),
                cmocka_unit_test(test_size),
                cmocka_unit_test(test_format_duration),
                cmocka_unit_test(test_constant_time_compare),
                cmocka_unit_test(test_utf8_scrub),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
