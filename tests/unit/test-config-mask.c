/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <libpq-fe.h>

#include "config-mask.h"
#include "util.h"

#define UNPARSEABLE "(unparseable connection string, not shown)"
#define AMBIGUOUS "(connection URI with an unencoded '@' or '/' in its user info, not shown)"

static void check(char *(*mask)(const char *), const char *input, const char *output) {
        _cleanup_free_ char *masked = mask(input);
        assert_non_null(masked);
        assert_string_equal(masked, output);
}

static void expect_nats(const char *input, const char *output) {
        check(mask_nats_urls, input, output);
}

typedef struct MaskCase {
        const char *input;
        const char *output;             /* the whole masked form, or NULL to check parts only */
        const char *secrets[4];         /* never in the output */
        const char *shown[5];           /* in the output */
} MaskCase;

/* The masked form, parsed again by libpq, holds every keyword the input
 * set, with the same value, passwords aside, which are "***". */
static void check_rebuilt(const char *input, const char *masked) {
        PQconninfoOption *in = PQconninfoParse(input, NULL);
        PQconninfoOption *out = PQconninfoParse(masked, NULL);

        assert_non_null(in);
        assert_non_null(out);
        for (size_t i = 0; in[i].keyword; i++) {
                assert_string_equal(in[i].keyword, out[i].keyword);
                if (!in[i].val)
                        assert_null(out[i].val);
                else if (strstr(in[i].keyword, "password"))
                        assert_string_equal(out[i].val, "***");
                else
                        assert_string_equal(out[i].val, in[i].val);
        }
        PQconninfoFree(in);
        PQconninfoFree(out);
}

static void check_cases(const MaskCase *cases, size_t n) {
        for (size_t i = 0; i < n; i++) {
                const MaskCase *t = &cases[i];
                _cleanup_free_ char *masked = mask_database_url(t->input);

                print_message("# %s -> %s\n", t->input, strempty(masked));
                assert_non_null(masked);
                if (t->output)
                        assert_string_equal(masked, t->output);
                for (size_t j = 0; j < ELEMENTSOF(t->secrets) && t->secrets[j]; j++)
                        assert_null(strstr(masked, t->secrets[j]));
                for (size_t j = 0; j < ELEMENTSOF(t->shown) && t->shown[j]; j++)
                        assert_non_null(strstr(masked, t->shown[j]));
                if (masked[0] != '(')
                        check_rebuilt(t->input, masked);
        }
}

/* Rebuilt from libpq's parse, so keywords come in libpq's own order. */
static void test_uri(void **state) {
        static const MaskCase cases[] = {
                { "postgres://baton:s3cret@db:5432/baton",
                  "user=baton password=*** dbname=baton host=db port=5432", { "s3cret" }, { 0 } },
                { "postgresql://baton@db/baton", "user=baton dbname=baton host=db", { 0 }, { 0 } },
                { "postgres://db/baton", "dbname=baton host=db", { 0 }, { 0 } },
                { "postgres://u:s3cret@[::1]:5432/x", "user=u password=*** dbname=x host=::1 port=5432",
                  { "s3cret" }, { 0 } },
                { "postgres://db/x?sslmode=require&password=s3cret&application_name=a",
                  "password=*** dbname=x host=db application_name=a sslmode=require", { "s3cret" }, { 0 } },
                /* Percent escapes are libpq's to decode: an encoded
                 * '#', ',', '@', '\'', ' ' and '\\' in a password. */
                { "postgres://u:p%23a%2Cs%40s%27w%20d%5Cx@db/x", "user=u password=*** dbname=x host=db",
                  { "p#a", "s@s", "w d", "%23" }, { 0 } },
                /* Unencoded, libpq reads them up to the '@' (as do '?' and ':'). */
                { "postgres://u:pa#ss,wd@db/x", "user=u password=*** dbname=x host=db", { "pa#ss", "ss,wd" }, { 0 } },
                { "postgresql://u:pa?ss:wd@db:5432/x", "user=u password=*** dbname=x host=db port=5432",
                  { "pa?ss", "ss:wd" }, { 0 } },
                { "postgres://u:s3cret@db/x?sslpassword=k3y&sslkey=/etc/k",
                  "user=u password=*** dbname=x host=db sslkey=/etc/k sslpassword=***", { "s3cret", "k3y" }, { 0 } },
        };

        check_cases(cases, ELEMENTSOF(cases));
}

/* Several hosts: the password anywhere in the URI, the hosts all shown. */
static void test_multi_host(void **state) {
        static const MaskCase cases[] = {
                { "postgres://u@h1,h2/db?password=s3cret",
                  "user=u password=*** dbname=db host=h1,h2 port=,", { "s3cret" }, { 0 } },
                { "postgres://u:s3cret@h1:5432,h2:5433/x?target_session_attrs=read-write", NULL,
                  { "s3cret" }, { "host=h1,h2", "port=5432,5433", "user=u", "dbname=x" } },
                { "postgres://u:se%23cr,et@h1:5432,h2:5433/db?sslpassword=k3y&application_name=a",
                  "user=u password=*** dbname=db host=h1,h2 port=5432,5433 application_name=a sslpassword=***",
                  { "se#cr", "cr,et", "se%23", "k3y" }, { 0 } },
                { "postgres://u@h1,h2,h3/db?password=a%23b%2Cc&sslpassword=d%26e", NULL,
                  { "a#b", "b,c", "d&e", "%26" }, { "host=h1,h2,h3", "dbname=db", "user=u" } },
        };

        check_cases(cases, ELEMENTSOF(cases));
}

static void test_keyword_form(void **state) {
        static const MaskCase cases[] = {
                { "host=db user=baton password=s3cret dbname=baton",
                  "user=baton password=*** dbname=baton host=db", { "s3cret" }, { 0 } },
                /* Quoted, a password may hold blanks, quotes and backslashes. */
                { "host=db password='p#a,s@s\\'w d\\\\x' dbname=baton", "password=*** dbname=baton host=db",
                  { "p#a", "s@s", "w d", "\\" }, { 0 } },
                { "host=h1,h2 port=5432,5433 user=u sslpassword=k3y password=s3cret",
                  "user=u password=*** host=h1,h2 port=5432,5433 sslpassword=***", { "s3cret", "k3y" }, { 0 } },
                { "host=db sslpassword='k 3y'", "host=db sslpassword=***", { "k 3y" }, { 0 } },
                /* No password: the same settings, values quoted as needed. */
                { "host=db application_name='a b'", "host=db application_name='a b'", { 0 }, { 0 } },
                { "host=db application_name='it\\'s a\\\\b' options=''",
                  "host=db options='' application_name='it\\'s a\\\\b'", { 0 }, { 0 } },
                /* "://" in a value does not make it a URI (libpq looks at the
                 * start only; found by fuzz-config). */
                { "host=/run/postgres://x password=s3cret", "password=*** host=/run/postgres://x", { "s3cret" }, { 0 } },
                { "", "", { 0 }, { 0 } },
        };

        check_cases(cases, ELEMENTSOF(cases));
}

/* What cannot be parsed, or where libpq does not read the password as
 * written, is not shown at all. */
static void test_hidden_as_a_whole(void **state) {
        static const MaskCase cases[] = {
                { "host=db password='unterminated", UNPARSEABLE, { "unterminated" }, { 0 } },
                { "host=db password=s3cret dbname", UNPARSEABLE, { "s3cret" }, { 0 } },
                { "postgres://u:s3cret@db/x?bogus", UNPARSEABLE, { "s3cret" }, { 0 } },
                { "postgres://u:s3cret@db/x?sslpassword=k3y&nosuchkey=1", UNPARSEABLE, { "s3cret", "k3y" }, { 0 } },
                /* An unencoded '@' or '/' in the password: libpq would take
                 * part of it for the host, the port or the database. */
                { "postgres://u:s3@cr3t@db/x", AMBIGUOUS, { "s3", "cr3t" }, { 0 } },
                { "postgres://u@s3cret:x@db/x", AMBIGUOUS, { "s3cret" }, { 0 } },
                { "postgres://u:s3/cr3t@db/x", AMBIGUOUS, { "s3", "cr3t" }, { 0 } },
                { "postgres://u:s3cret@h1,u:s3cret@h2/x", AMBIGUOUS, { "s3cret" }, { 0 } },
        };

        check_cases(cases, ELEMENTSOF(cases));
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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_uri),
                cmocka_unit_test(test_multi_host),
                cmocka_unit_test(test_keyword_form),
                cmocka_unit_test(test_hidden_as_a_whole),
                cmocka_unit_test(test_nats_list),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
