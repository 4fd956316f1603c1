/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "event-retention.h"
#include "topic-pattern.h"
#include "util.h"

#define HOUR (3600 * USEC_PER_SEC)

static void test_patterns(void **state) {
        static const struct {
                const char *pattern, *topic;
                bool match;
        } cases[] = {
                { "orders", "orders", true },
                { "orders", "orders2", false },
                { "orders-*", "orders-eu", true },
                { "orders-*", "orders-", true },        /* '*' matches the empty run */
                { "orders-*", "orders", false },
                { "*-audit", "billing-audit", true },
                { "*-audit", "billing-audit-2", false },
                { "*", "anything", true },
                { "a*b*c", "aXbYc", true },
                { "a*b*c", "abc", true },
                { "a*b*c", "acb", false },
                { "a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false },      /* no blow-up */
                { "Orders", "orders", false },          /* names are case-sensitive */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (topic_pattern_match(cases[i].pattern, cases[i].topic) != cases[i].match)
                        fail_msg("'%s' on '%s': want %d", cases[i].pattern, cases[i].topic, cases[i].match);
        assert_true(topic_pattern_valid("a-*_Z9", 6));
        assert_false(topic_pattern_valid("a.b", 3));
        assert_false(topic_pattern_valid("", 0));
        assert_false(topic_pattern_valid("a>", 2));
}

static void test_table(void **state) {
        static const struct {
                const char *text;
                size_t n;               /* rules; (size_t) -1: refused */
                const char *error;      /* a piece of the message */
        } cases[] = {
                { "", 0, NULL },
                { " , ,", 0, NULL },
                { "audit-*=forever/unlimited", 1, NULL },
                { "chat-*=1h/1000, metrics-*=7d/unlimited ,orders=30m/5", 3, NULL },
                { "chat-*=1h", (size_t) -1, "is not PATTERN=AGE/COUNT" },
                { "chat.*=1h/1", (size_t) -1, "is not a topic pattern" },
                { "chat-*=soon/1", (size_t) -1, "is not a duration" },
                { "chat-*=500ms/1", (size_t) -1, "is not a duration of 1s or more" },
                { "chat-*=1h/0", (size_t) -1, "is not a count of 1 or more" },
                { "chat-*=1h/-5", (size_t) -1, "is not a count" },
                { "=1h/5", (size_t) -1, "is not a topic pattern" },
        };
        char error[256];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                RetentionTable t;
                int r = retention_table_parse(cases[i].text, &t, error, sizeof(error));
                if (cases[i].n == (size_t) -1) {
                        if (r != -EINVAL || !strstr(error, cases[i].error))
                                fail_msg("'%s': r=%d, error '%s'", cases[i].text, r, r < 0 ? error : "");
                        continue;
                }
                assert_int_equal(r, 0);
                assert_int_equal(t.n, cases[i].n);
        }
}

static void test_policy_for(void **state) {
        const RetentionPolicy defaults = { .max_age_usec = 168 * HOUR, .max_events = 0 };
        RetentionTable t;
        char error[256];
        RetentionPolicy p;

        assert_int_equal(retention_table_parse("audit-*=forever/unlimited, chat-*=1h/1000, *-eu=2d/50, "
                                               "chat-eu=1s/1", &t, error, sizeof(error)), 0);
        p = retention_policy_for(&t, &defaults, "audit-2026");
        assert_true(p.max_age_usec == 0 && p.max_events == 0);
        p = retention_policy_for(&t, &defaults, "chat-eu");             /* the first match decides */
        assert_true(p.max_age_usec == HOUR && p.max_events == 1000);
        p = retention_policy_for(&t, &defaults, "orders-eu");
        assert_true(p.max_age_usec == 48 * HOUR && p.max_events == 50);
        p = retention_policy_for(&t, &defaults, "orders");
        assert_true(p.max_age_usec == defaults.max_age_usec && p.max_events == 0);
}

static void test_due(void **state) {
        static const struct {
                RetentionPolicy policy;
                uint64_t last_id, oldest_id;
                usec_t age;
                bool due;
        } cases[] = {
                { { HOUR, 0 }, 100, 1, 2 * HOUR, true },       /* too old */
                { { HOUR, 0 }, 100, 1, HOUR, false },          /* exactly the limit: kept */
                { { 0, 100 }, 100, 1, 1000 * HOUR, false },    /* 100 ids, 100 kept, no age limit */
                { { 0, 100 }, 101, 1, 0, true },
                { { 0, 100 }, 150, 51, 0, false },
                { { HOUR, 10 }, 5, 1, 0, false },
                { { HOUR, 10 }, 0, 0, 9 * HOUR, false },       /* nothing stored */
                { { 0, 0 }, 1000000, 1, 1000 * HOUR, false },  /* kept for ever */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (retention_due(&cases[i].policy, cases[i].last_id, cases[i].oldest_id, cases[i].age) !=
                    cases[i].due)
                        fail_msg("case %zu: want %d", i, cases[i].due);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_patterns),
                cmocka_unit_test(test_table),
                cmocka_unit_test(test_policy_for),
                cmocka_unit_test(test_due),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
