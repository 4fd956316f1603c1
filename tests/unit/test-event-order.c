/* SPDX-License-Identifier: MIT */
/* The delivery order of a topic on tables of arrival orders. Each case is
 * a script of inputs and the ids handed on, in order, and the plan after
 * the last input:
 *
 *   P5       the store says the topic is at 5
 *   R7       event 7 arrives (from this instance or the bus)
 *   H9       a hint: ids up to 9 exist
 *   F6,7,9   the read the last plan asked for returned rows 6, 7 and 9
 *   F        ... returned no rows
 *   X        ... failed
 *   +50      50 ms pass
 *   T        a timer fired (order_tick)
 *
 * Plans: "none", "fetch A..B" (ids in (A, B]), "wait +N" (ms from now). */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <inttypes.h>
#include <stdio.h>

#include "event-order.h"

typedef struct Run {
        char delivered[512];
        size_t n;
        int refs;                       /* items held by the order */
        char skipped[64];
} Run;

static void *ref_item(void *item) {
        return item;
}

static void unref_item(void *item) {
}

static void on_deliver(uint64_t id, void *item, void *userdata) {
        Run *run = userdata;

        assert_int_equal((uint64_t) (uintptr_t) item, id);     /* the item is its id */
        run->n += (size_t) snprintf(run->delivered + run->n, sizeof(run->delivered) - run->n, "%s%" PRIu64,
                                    run->n ? " " : "", id);
}

static const OrderOps ops = { .ref = ref_item, .unref = unref_item, .deliver = on_deliver };

static void format_plan(const OrderPlan *p, usec_t now, char *buf, size_t size) {
        switch (p->action) {
        case ORDER_NOTHING:
                snprintf(buf, size, "none");
                break;
        case ORDER_FETCH:
                snprintf(buf, size, "fetch %" PRIu64 "..%" PRIu64, p->fetch_after, p->fetch_up_to);
                break;
        case ORDER_WAIT:
                snprintf(buf, size, "wait +%" PRIu64, (p->at - now) / USEC_PER_MSEC);
                break;
        }
}

static size_t parse_rows(const char *s, OrderPending *rows, size_t max) {
        size_t n = 0;

        while (*s && *s != ' ' && n < max) {
                char *end;
                uint64_t id = strtoull(s, &end, 10);
                rows[n++] = (OrderPending) { .id = id, .item = (void *) (uintptr_t) id, .size = 100 };
                s = *end == ',' ? end + 1 : end;
        }
        return n;
}

/* Runs a script; returns the plan after its last input. */
static OrderPlan run_script(TopicOrder *o, Run *run, const char *script, usec_t *now) {
        OrderPlan p = { .action = ORDER_NOTHING };
        OrderPending rows[64];

        for (const char *s = script; *s; ) {
                char op = *s++;
                char *end;
                uint64_t v = 0;

                if (op == ' ')
                        continue;
                if (op != 'F' && op != 'X' && op != 'T')
                        v = strtoull(s, &end, 10), s = end;
                switch (op) {
                case 'P': p = order_positioned(o, v, *now); break;
                case 'R': p = order_receive(o, v, (void *) (uintptr_t) v, 100, *now); break;
                case 'H': p = order_hint(o, v, *now); break;
                case 'F': {
                        size_t n = parse_rows(s, rows, ELEMENTSOF(rows));
                        while (*s && *s != ' ')
                                s++;
                        p = order_fetched(o, rows, n, *now);
                        break;
                }
                case 'X': order_fetch_failed(o); p = (OrderPlan) { .action = ORDER_NOTHING }; break;
                case '+': *now += v * USEC_PER_MSEC; break;
                case 'T': p = order_tick(o, *now); break;
                default: fail_msg("bad script step '%c' in '%s'", op, script);
                }
                if (p.skipped_to > 0)
                        snprintf(run->skipped, sizeof(run->skipped), "%" PRIu64 "..%" PRIu64,
                                 p.skipped_from, p.skipped_to);
        }
        return p;
}

static const OrderLimits limits = {
        .pending_max = 8,
        .pending_bytes_max = 100000,
        .gap_wait_usec = 50 * USEC_PER_MSEC,
        .hole_wait_usec = 2000 * USEC_PER_MSEC,
};

static void test_arrival_orders(void **state) {
        static const struct {
                const char *name;
                const char *script;
                const char *delivered;
                const char *plan;
                const char *skipped;
        } cases[] = {
                { "in order", "P0 R1 R2 R3", "1 2 3", "none", "" },
                { "duplicates and echoes", "P0 R1 R1 R2 R1 R2", "1 2", "none", "" },
                { "old events after the position", "P5 R3 R5 R6", "6", "none", "" },
                { "out of order, within the gap wait", "P0 R2 R3 R1", "1 2 3", "none", "" },
                { "out of order: wait for the gap", "P0 R3", "", "wait +50", "" },
                { "the gap wait is not moved by more early events", "P0 R3 +30 R4", "", "wait +20", "" },
                { "the gap wait over: read the range", "P0 R3 +50 T", "", "fetch 0..3", "" },
                { "the range read fills the gap", "P0 R3 +50 T F1,2", "1 2 3", "none", "" },
                { "events before the position is known", "R6 R7 P5", "6 7", "none", "" },
                { "early events older than the position", "R4 R6 P5", "6", "none", "" },
                { "a gap behind early events after positioning", "R7 P5", "", "wait +50", "" },
                /* NATS down: nothing arrives live; hints (resyncs, NOTIFY)
                 * say what exists, and the store has it. */
                { "bus outage: a hint reads at once", "P0 H3", "", "fetch 0..3", "" },
                { "bus outage: the read delivers", "P0 H3 F1,2,3", "1 2 3", "none", "" },
                { "a long outage: page after page", "P0 H9 F1,2,3 F4,5,6 F7,8,9", "1 2 3 4 5 6 7 8 9",
                  "none", "" },
                { "an old hint changes nothing", "P5 H3", "", "none", "" },
                { "events arrive while a read is out", "P0 H2 R3 R4 F1,2", "1 2 3 4", "none", "" },
                { "a read fails: retried on the next tick", "P0 H2 X +100 T", "", "fetch 0..2", "" },
                /* Holes: ids the store does not have (deleted by hand). */
                { "a hole: wait, do not spin", "P0 H3 F2,3", "", "wait +2000", "" },
                { "a hole still there later: skipped once", "P0 H3 F2,3 +2000 T F2,3", "2 3", "none", "1..1" },
                { "a hole that fills meanwhile is not skipped", "P0 H3 F2,3 +2000 T F1,2,3", "1 2 3", "none",
                  "" },
                /* Hints are not trusted: the store says what exists. An id
                 * it lacks is read once more, then forgotten, never skipped. */
                { "ids at the end that the store lacks: read again later", "P0 H3 F1 F", "1", "wait +2000", "" },
                { "... then forgotten, not skipped", "P0 H3 F1 F +2000 T F", "1", "none", "" },
                { "... and the next event is delivered", "P0 H3 F1 F +2000 T F R2", "1 2", "none", "" },
                { "a hinted id the store shows a moment later is delivered", "P0 H1 F +2000 T F1", "1", "none",
                  "" },
                { "a forged hint far ahead skips nothing", "P5 H1000000 F +2000 T F R6 R7", "6 7", "none", "" },
                { "a forged hint while a read is out: read again at once", "P5 H7 H9 F", "", "fetch 5..9", "" },
                { "a hole before the end is still skipped", "P0 H3 F1 F +2000 T R4 F4", "1 4", "none", "2..3" },
                { "a hole between live events", "P5 R6 R8 +50 T F8 +2000 T F8", "6 8", "none", "7..7" },
                { "skipping stops where the read stopped", "P5 H8 R20 F +2000 T F9,10,11", "9 10 11",
                  "fetch 11..20", "6..8" },
                { "no live stall behind a hole", "P0 H2 F2 +2000 T F2 R3 R4", "2 3 4", "none", "1..1" },
                /* More early events than are held: the rest is read back. */
                { "past the holding limit", "P0 R2 R3 R4 R5 R6 R7 R8 R9 R10 R11 R12 +50 T F1,2,3,4,5,6,7,8,9,10",
                  "1 2 3 4 5 6 7 8 9 10", "fetch 10..12", "" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                TopicOrder o;
                Run run = { 0 };
                usec_t now = 1000 * USEC_PER_SEC;
                char plan[64];

                order_init(&o, &ops, &limits, &run);
                OrderPlan p = run_script(&o, &run, cases[i].script, &now);
                format_plan(&p, now, plan, sizeof(plan));
                if (!streq(run.delivered, cases[i].delivered) || !streq(plan, cases[i].plan) ||
                    !streq(run.skipped, cases[i].skipped))
                        fail_msg("%s (%s): delivered '%s' (want '%s'), plan '%s' (want '%s'), skipped '%s' "
                                 "(want '%s')", cases[i].name, cases[i].script, run.delivered,
                                 cases[i].delivered, plan, cases[i].plan, run.skipped, cases[i].skipped);
                order_done(&o);
        }
}

/* Replay racing live events: a subscriber that joins from an old id reads
 * pages from the store while the channel delivers live; it switches to
 * live in the same turn its cursor reaches the position, so that nothing
 * falls between and nothing comes twice. */
static void test_subscribers(void **state) {
        uint64_t cursor;

        /* No Last-Event-ID: live from the position on. */
        cursor = 99;
        assert_true(order_subscriber_start(40, false, &cursor));
        assert_int_equal(cursor, 40);
        /* At or past the position (from an instance further on): live, its
         * ids skipped as they arrive. */
        cursor = 40;
        assert_true(order_subscriber_start(40, true, &cursor));
        cursor = 45;
        assert_true(order_subscriber_start(40, true, &cursor));
        assert_int_equal(cursor, 45);
        /* Behind: replay. */
        cursor = 10;
        assert_false(order_subscriber_start(40, true, &cursor));
        assert_int_equal(cursor, 10);
}

/* After a replay page: live, the next page, or a wait, and where the
 * cursor is. */
static void test_replay_next(void **state) {
        static const struct {
                uint64_t position;
                size_t rows;
                uint64_t page_last_id, cursor;
                usec_t empty_since, now;
                ReplayNext next;
                uint64_t cursor_after;
                usec_t empty_since_after;
        } cases[] = {
                /* A page to 30 while the position is 40: more. */
                { 40, 20, 40, 30, 0, 1000, REPLAY_MORE, 30, 0 },
                /* Live events moved the position on meanwhile; the page reaches it. */
                { 45, 15, 45, 45, 0, 1000, REPLAY_LIVE, 45, 0 },
                /* A page past the position (read after live events came): live;
                 * the channel skips what the cursor passed. */
                { 45, 5, 50, 50, 0, 1000, REPLAY_LIVE, 50, 0 },
                /* Rows, all at or before the cursor (a shared page): more. */
                { 40, 3, 40, 30, 0, 1000, REPLAY_MORE, 30, 0 },
                /* Rows after an empty page: the wait is over. */
                { 40, 3, 40, 30, 500, 1000, REPLAY_MORE, 30, 0 },
                /* Nothing after the cursor although the position is further
                 * (deleted rows): live at the position, no spinning. */
                { 40, 0, 40, 30, 0, 1000, REPLAY_LIVE, 40, 0 },
                { 40, 0, 42, 30, 0, 1000, REPLAY_LIVE, 40, 0 },
                /* An empty page read just before event 294 committed, while
                 * the channel has 294 already: read again at once. */
                { 294, 0, 293, 293, 0, 1000, REPLAY_MORE, 293, 1000 },
                /* Still behind on the next read: read again after a backoff. */
                { 294, 0, 293, 293, 1000, 1000 + USEC_PER_SEC, REPLAY_WAIT, 293, 1000 },
                /* Behind for HOLE_WAIT (a failover lost commits): given up on. */
                { 294, 0, 293, 293, 1000, 1000 + ORDER_HOLE_WAIT_USEC, REPLAY_LIVE, 294, 0 },
                /* Holes up to the page's last id are passed, the rest read. */
                { 40, 0, 35, 30, 0, 1000, REPLAY_MORE, 35, 1000 },
                /* No topic row at all (deleted by hand): nothing to wait for. */
                { 40, 0, 0, 30, 0, 1000, REPLAY_LIVE, 40, 0 },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint64_t cursor = cases[i].cursor;
                usec_t empty_since = cases[i].empty_since;

                assert_int_equal(order_replay_next(cases[i].position, cases[i].rows, cases[i].page_last_id,
                                                   cases[i].now, &empty_since, &cursor), cases[i].next);
                assert_int_equal(cursor, cases[i].cursor_after);
                assert_int_equal(empty_since, cases[i].empty_since_after);
        }
}

/* A page read after 30 (rows up to 40) serves a waiting subscriber whose
 * next id it holds. */
static void test_page_sharing(void **state) {
        static const struct {
                uint64_t from;
                size_t rows;
                uint64_t last, cursor;
                bool serves;
        } cases[] = {
                { 30, 10, 40, 30, true },       /* the same start */
                { 30, 10, 40, 35, true },       /* within: from 36 on */
                { 30, 10, 40, 39, true },       /* the last row only */
                { 30, 10, 40, 40, false },      /* nothing past its cursor */
                { 30, 10, 40, 45, false },      /* further on already */
                { 30, 10, 40, 29, false },      /* would skip 30 */
                { 30, 10, 40, 0, false },       /* from the start: not this page */
                { 30, 0, 0, 30, false },        /* empty: only its reader's, events may */
                { 30, 0, 0, 31, false },        /* have come since it was read */
                { 30, 0, 0, 29, false },
                { 0, 3, 3, 0, true },           /* from the very start */
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                assert_int_equal(order_page_serves(cases[i].from, cases[i].rows, cases[i].last, cases[i].cursor),
                                 cases[i].serves);
}

/* What the order holds is what it gives back: every reference dropped. */
static int live_refs;

static void *counting_ref(void *item) {
        live_refs++;
        return item;
}

static void counting_unref(void *item) {
        live_refs--;
}

static void test_pruned(void **state) {
        static const struct {
                uint64_t cursor, oldest, last_id;
                bool pruned;
                uint64_t next;
        } cases[] = {
                { 10, 151, 250, true, 151 },    /* 11..150 deleted */
                { 150, 151, 250, false, 0 },    /* the next one is the oldest */
                { 200, 151, 250, false, 0 },
                { 0, 1, 250, false, 0 },        /* from the start, nothing deleted */
                { 0, 2, 250, true, 2 },
                { 5, 0, 30, true, 31 },         /* all deleted: what comes next */
                { 30, 0, 30, false, 0 },        /* caught up with nothing stored */
                { 0, 0, 0, false, 0 },          /* a topic nobody published to */
                { 40, 0, 30, false, 0 },        /* ahead of the topic (a restored database) */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t next = 0;
                bool pruned = order_pruned(cases[i].cursor, cases[i].oldest, cases[i].last_id, &next);
                if (pruned != cases[i].pruned || (pruned && next != cases[i].next))
                        fail_msg("case %zu: pruned %d next %" PRIu64, i, pruned, next);
        }
}

static void test_references(void **state) {
        static const OrderOps counting = { .ref = counting_ref, .unref = counting_unref, .deliver = on_deliver };
        TopicOrder o;
        Run run = { 0 };
        usec_t now = USEC_PER_SEC;

        order_init(&o, &counting, &limits, &run);
        (void) run_script(&o, &run, "P0 R3 R5 R4 R3", &now);
        assert_int_equal(live_refs, 3);
        (void) run_script(&o, &run, "R1 R2", &now);
        assert_string_equal(run.delivered, "1 2 3 4 5");
        assert_int_equal(live_refs, 0);
        (void) run_script(&o, &run, "R9 R8", &now);
        assert_int_equal(live_refs, 2);
        order_done(&o);
        assert_int_equal(live_refs, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_arrival_orders),
                cmocka_unit_test(test_subscribers),
                cmocka_unit_test(test_replay_next),
                cmocka_unit_test(test_page_sharing),
                cmocka_unit_test(test_pruned),
                cmocka_unit_test(test_references),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
