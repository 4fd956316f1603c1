/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config-mask.h"
#include "util.h"

static void check(char *(*mask)(const char *), const char *input, const char *output) {
        _cleanup_free_ char *masked = mask(input);
        assert_non_null(masked);
        assert_string_equal(masked, output);
}

static void expect(const char *input, const char *output) {
        check(mask_database_url, input, output);
}

static void expect_nats(const char *input, const char *output) {
        check(mask_nats_urls, input, output);
}

static void test_uri(void **state) {
        expect("postgres://baton:s3cret@db:5432/baton", "postgres://baton:***@db:5432/baton");
        expect("postgresql://baton@db/baton", "postgresql://baton@db/baton");
        expect("postgres://db/baton", "postgres://db/baton");
        expect("postgres://u:p%40ss@db/x?sslmode=require", "postgres://u:***@db/x?sslmode=require");
        expect("postgres://db/x?sslmode=require&password=s3cret&application_name=a",
               "postgres://db/x?sslmode=require&password=***&application_name=a");
        expect("postgres://u:s3cret@[::1]:5432/x", "postgres://u:***@[::1]:5432/x");
        /* '@' inside the password: the last '@' ends the user info. */
        expect("postgres://u:p@ss@db/x", "postgres://u:***@db/x");
        expect("postgres://u@s3cret:x@db/x", "postgres://***@db/x");
        /* An unencoded '/' in a password must not leak its tail. */
        expect("postgres://u:pa/ss@db/x", "postgres://u:***@db/x");
        /* Nor a '?', '#' or ',' (libpq reads up to the '@'; found by fuzz-config). */
        expect("postgresql://u:pa?ss@db:5432/x", "postgresql://u:***@db:5432/x");
        expect("postgres://u:pa#ss@db/x", "postgres://u:***@db/x");
        expect("postgres://u:pa,ss@db/x", "postgres://u:***@db/x");
        /* Several hosts in one URI. */
        expect("postgres://u:s3cret@h1:5432,h2:5432/x", "postgres://u:***@h1:5432,h2:5432/x");
}

static void test_nats_list(void **state) {
        expect_nats("nats://127.0.0.1:4222", "nats://127.0.0.1:4222");
        expect_nats("nats://a:b@h1:4222,nats://c:d@h2:4222", "nats://a:***@h1:4222,nats://c:***@h2:4222");
        expect_nats("nats://a:pa?ss@h1:4222,nats://h2", "nats://a:***@h1:4222,nats://h2");
        /* User info with no ':' is a token to nats.c, so a secret. */
        expect_nats("nats://s3cret@h1:4222, tls://h2:4222", "nats://***@h1:4222, tls://h2:4222");
        /* An '@' before the ':' leaves the user name unclear: all masked. */
        expect_nats("nats://s3cret@h1:4222@h2:4222", "nats://***@h2:4222");
}

/* Rebuilt from libpq's parse, so keywords come in libpq's own order. */
static void test_keyword_form(void **state) {
        expect("host=db user=baton password=s3cret dbname=baton",
               "user=baton password=*** dbname=baton host=db");
        expect("host=db password='with space' dbname=baton", "password=*** dbname=baton host=db");
        expect("host=db application_name='a b'", "host=db application_name='a b'");
        /* "://" in a value does not make it a URI (libpq looks at the start
         * only; found by fuzz-config). */
        expect("host=/run/postgres://x password=s3cret", "password=*** host=/run/postgres://x");
}

static void test_unparseable_is_hidden(void **state) {
        _cleanup_free_ char *masked = mask_database_url("host=db password='unterminated");
        assert_non_null(masked);
        assert_null(strstr(masked, "unterminated"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_uri),
                cmocka_unit_test(test_nats_list),
                cmocka_unit_test(test_keyword_form),
                cmocka_unit_test(test_unparseable_is_hidden),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
