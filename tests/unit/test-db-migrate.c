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

/* 0001 and 0003 breaking, 0002 additive. */
static const EmbeddedMigration known_files[] = {
        { "0001_a.sql", "aaaa", "CREATE TABLE a ()" },
        { "0002_b.sql", "bbbb", MIGRATION_ADDITIVE_MARK "\nCREATE TABLE b ()" },
        { "0003_c.sql", "cccc", "ALTER TABLE a RENAME TO c" },
};

#define A { 1, "a", "aaaa", "t", false }
#define B { 2, "b", "bbbb", "t", true }
#define C { 3, "c", "cccc", "t", false }

typedef struct PlanCase {
        const char *what;
        AppliedMigration applied[6];
        size_t n_applied;
        int result;
        size_t first_pending, first_breaking, n_unknown, first_unknown;
        const char *error;              /* a part of it */
} PlanCase;

static void test_plan(void **state) {
        static const PlanCase cases[] = {
                { "a fresh database: everything, breaking from the first", { { 0 } }, 0, 0, 0, 0, 0, 0, NULL },
                { "the additive one next, then a breaking one", { A }, 1, 0, 1, 2, 0, 0, NULL },
                { "a breaking one next", { A, B }, 2, 0, 2, 2, 0, 0, NULL },
                { "nothing to do", { A, B, C }, 3, 0, 3, 3, 0, 0, NULL },
                { "a newer schema, all additive: runs on it", { A, B, C, { 4, "d", "dddd", "t", true },
                  { 5, "e", "eeee", "t", true } }, 5, 0, 3, 3, 2, 3, NULL },
                { "a newer schema with a breaking one: refused, naming it",
                  { A, B, C, { 4, "d", "dddd", "t", true }, { 5, "e", "eeee", "t", false } }, 5, -EPROTO,
                  0, 0, 0, 0, "has migration 0005_e, which this batond does not know (it knows up to 3) "
                  "and which is breaking" },
                { "an applied file changed", { A, { 2, "b", "XXXX", "t", true } }, 2, -EPROTO, 0, 0, 0, 0,
                  "0002_b.sql changed after it was applied" },
                { "a hole", { A, C }, 2, -EPROTO, 0, 0, 0, 0, "lacks migration 2" },
        };
        MigrationSet set;
        char *error = NULL;

        assert_int_equal(migration_set_load(known_files, ELEMENTSOF(known_files), &set, &error), 0);
        assert_false(set.items[0].additive);
        assert_true(set.items[1].additive);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const PlanCase *c = &cases[i];
                MigrationPlan plan = { 999, 999, 999, 999 };
                int r = migration_plan(&set, c->applied, c->n_applied, &plan, &error);

                if (r != c->result)
                        fail_msg("%s: %d, not %d (%s)", c->what, r, c->result, error ? error : "");
                if (r == 0 && (plan.first_pending != c->first_pending || plan.first_breaking != c->first_breaking ||
                               plan.n_unknown != c->n_unknown ||
                               (c->n_unknown > 0 && plan.first_unknown != c->first_unknown)))
                        fail_msg("%s: pending from %zu, breaking from %zu, %zu unknown from %zu", c->what,
                                 plan.first_pending, plan.first_breaking, plan.n_unknown, plan.first_unknown);
                if (r < 0 && (!error || !strstr(error, c->error)))
                        fail_msg("%s: error '%s' does not say '%s'", c->what, error ? error : "(null)", c->error);
                free(error);
                error = NULL;
        }
        migration_set_done(&set);
}

static void test_the_additive_mark_is_the_exact_first_line(void **state) {
        static const struct {
                const char *sql;
                bool additive;
        } cases[] = {
                { "-- baton:additive\nCREATE TABLE x ()", true },
                { "-- baton:additive", true },
                { "-- baton:additive\r\nCREATE TABLE x ()", true },
                { "CREATE TABLE x ()", false },
                { " -- baton:additive\n", false },
                { "-- baton:additive \n", false },
                { "-- baton:additives\n", false },
                { "-- Baton:additive\n", false },
                { "\n-- baton:additive\n", false },
                { "-- baton:additive\r", false },
                { "", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (migration_sql_is_additive(cases[i].sql) != cases[i].additive)
                        fail_msg("'%s' is %sadditive", cases[i].sql, cases[i].additive ? "not " : "");
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
                cmocka_unit_test(test_the_additive_mark_is_the_exact_first_line),
                cmocka_unit_test(test_embedded_migrations_are_valid),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
