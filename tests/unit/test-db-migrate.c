/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "db-migrate.h"

static void test_parse_filename(void **state) {
        static const char *const bad[] = {
                "create.sql", "0001create.sql", "0001_.sql", "0000_zero.sql", "0001_x.SQL",
                "0001_x.sql.bak", "0001_x y.sql", "_0001_x.sql", "0001_x", "12345678_x.sql",
        };
        unsigned version;
        char *name;

        assert_int_equal(migration_parse_filename("0001_create_topics.sql", &version, &name), 0);
        assert_int_equal(version, 1);
        assert_string_equal(name, "create_topics");
        free(name);
        assert_int_equal(migration_parse_filename("42_add-index.sql", &version, &name), 0);
        assert_int_equal(version, 42);
        assert_string_equal(name, "add-index");
        free(name);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (migration_parse_filename(bad[i], &version, &name) != -EINVAL)
                        fail_msg("accepted '%s'", bad[i]);
}

static void test_set_is_sorted(void **state) {
        const EmbeddedMigration e[] = {
                { "0003_c.sql", "c3", "C" },
                { "0001_a.sql", "c1", "A" },
                { "0002_b.sql", "c2", "B" },
        };
        MigrationSet set;
        char *error = NULL;

        assert_int_equal(migration_set_load(e, ELEMENTSOF(e), &set, &error), 0);
        assert_int_equal(set.n_items, 3);
        for (unsigned i = 0; i < 3; i++)
                assert_int_equal(set.items[i].version, i + 1);
        assert_string_equal(set.items[0].name, "a");
        assert_string_equal(set.items[2].sql, "C");
        migration_set_done(&set);
}

static void expect_set_error(const EmbeddedMigration *e, size_t n, const char *text) {
        MigrationSet set;
        char *error = NULL;

        assert_int_equal(migration_set_load(e, n, &set, &error), -EINVAL);
        assert_non_null(error);
        if (!strstr(error, text))
                fail_msg("'%s' does not mention '%s'", error, text);
        free(error);
}

static void test_set_errors(void **state) {
        const EmbeddedMigration gap[] = { { "0001_a.sql", "1", "" }, { "0003_c.sql", "3", "" } };
        const EmbeddedMigration dup[] = { { "0001_a.sql", "1", "" }, { "0001_b.sql", "2", "" } };
        const EmbeddedMigration start[] = { { "0002_b.sql", "2", "" } };
        const EmbeddedMigration name[] = { { "create.sql", "1", "" } };

        expect_set_error(gap, ELEMENTSOF(gap), "version 3 is out of sequence");
        expect_set_error(dup, ELEMENTSOF(dup), "two migrations have version 1");
        expect_set_error(start, ELEMENTSOF(start), "version 2");
        expect_set_error(name, ELEMENTSOF(name), "create.sql");
}

static const EmbeddedMigration known_files[] = {
        { "0001_a.sql", "aaaa", "A" },
        { "0002_b.sql", "bbbb", "B" },
        { "0003_c.sql", "cccc", "C" },
};

static void plan(const AppliedMigration *applied, size_t n, int expect, size_t first, const char *text) {
        MigrationSet set;
        char *error = NULL;
        size_t pending = 999;

        assert_int_equal(migration_set_load(known_files, ELEMENTSOF(known_files), &set, &error), 0);
        assert_int_equal(migration_plan(&set, applied, n, &pending, &error), expect);
        if (expect == 0)
                assert_int_equal(pending, first);
        else if (!error || !strstr(error, text))
                fail_msg("error '%s' does not mention '%s'", error ? error : "(null)", text);
        free(error);
        migration_set_done(&set);
}

static void test_plan(void **state) {
        const AppliedMigration two[] = { { 1, "a", "aaaa", "t" }, { 2, "b", "bbbb", "t" } };
        const AppliedMigration all[] = { { 1, "a", "aaaa", "t" }, { 2, "b", "bbbb", "t" },
                                         { 3, "c", "cccc", "t" } };

        plan(NULL, 0, 0, 0, NULL);              /* fresh database: everything */
        plan(two, 2, 0, 2, NULL);               /* one pending */
        plan(all, 3, 0, 3, NULL);               /* nothing to do */
}

static void test_plan_refusals(void **state) {
        const AppliedMigration changed[] = { { 1, "a", "aaaa", "t" }, { 2, "b", "XXXX", "t" } };
        const AppliedMigration newer[] = { { 1, "a", "aaaa", "t" }, { 2, "b", "bbbb", "t" },
                                           { 3, "c", "cccc", "t" }, { 4, "d", "dddd", "t" } };
        const AppliedMigration hole[] = { { 1, "a", "aaaa", "t" }, { 3, "c", "cccc", "t" } };

        plan(changed, 2, -EPROTO, 0, "0002_b.sql changed after it was applied");
        plan(newer, 4, -EPROTO, 0, "has migration 4 (d), which this batond does not know");
        plan(hole, 2, -EPROTO, 0, "lacks migration 2");
}

static void test_embedded_migrations_are_valid(void **state) {
        MigrationSet set;
        char *error = NULL;

        /* What ships in the binary must load: a bad file name fails the build's tests. */
        assert_int_equal(migration_set_load(embedded_migrations, n_embedded_migrations, &set, &error), 0);
        assert_true(set.n_items >= 1);
        for (size_t i = 0; i < set.n_items; i++) {
                assert_int_equal(strlen(set.items[i].checksum), 64);
                assert_non_null(strstr(set.items[0].sql, "CREATE TABLE"));
        }
        migration_set_done(&set);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_filename),
                cmocka_unit_test(test_set_is_sorted),
                cmocka_unit_test(test_set_errors),
                cmocka_unit_test(test_plan),
                cmocka_unit_test(test_plan_refusals),
                cmocka_unit_test(test_embedded_migrations_are_valid),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
