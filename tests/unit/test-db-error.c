/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "db-error.h"
#include "util.h"

static void test_error_codes(void **state) {
        static const struct {
                const char *sqlstate;
                const char *code;
        } cases[] = {
                { NULL, "database_unreachable" },       /* not from the server */
                { "", "database_unreachable" },
                { "08006", "database_unreachable" },    /* connection_failure */
                { "57014", "query_timeout" },           /* statement_timeout, before class 57 */
                { "57P01", "database_shutting_down" },  /* admin_shutdown */
                { "57P03", "database_shutting_down" },  /* cannot_connect_now */
                { "53300", "database_overloaded" },     /* too_many_connections */
                { "55P03", "database_busy" },
                { "40001", "database_conflict" },
                { "40P01", "database_conflict" },
                { "25006", "database_read_only" },
                { "3D000", "database_missing" },
                { "28P01", "database_auth_failed" },
                { "42P01", "database_error" },          /* undefined_table: a bug or a schema */
                { "23505", "database_error" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_string_equal(db_error_code(cases[i].sqlstate), cases[i].code);
}

static void test_transient(void **state) {
        assert_true(db_sqlstate_transient(NULL));
        assert_true(db_sqlstate_transient("08006"));
        assert_true(db_sqlstate_transient("53300"));
        assert_true(db_sqlstate_transient("57014"));
        assert_true(db_sqlstate_transient("40P01"));
        assert_false(db_sqlstate_transient("42P01"));
        assert_false(db_sqlstate_transient("23505"));
}

static void test_one_line(void **state) {
        char buf[32];

        assert_string_equal(db_one_line("FATAL:  no\n\tsuch  thing\n", buf, sizeof(buf)), "FATAL: no such thing");
        assert_string_equal(db_one_line(NULL, buf, sizeof(buf)), "");
        assert_string_equal(db_one_line("0123456789012345678901234567890123456789", buf, 8), "0123456");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_error_codes),
                cmocka_unit_test(test_transient),
                cmocka_unit_test(test_one_line),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
