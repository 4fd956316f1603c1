/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event-replay-cache.h"

static const char owner_a[] = "a", owner_b[] = "b";

/* A page read after `from` with the ids first..first+n-1, each frame
 * frame_bytes long. */
static ReplayPage page_of(uint64_t from, uint64_t first, size_t n, size_t frame_bytes) {
        ReplayPage p = { .from = from, .n = n };
        char *data = calloc(1, frame_bytes + 1);

        assert_non_null(data);
        memset(data, 'x', frame_bytes);
        p.ids = calloc(n + 1, sizeof(uint64_t));
        p.frames = calloc(n + 1, sizeof(Frame *));
        assert_true(p.ids && p.frames);
        for (size_t i = 0; i < n; i++) {
                p.ids[i] = first + i;
                p.frames[i] = frame_new(data, frame_bytes);
                assert_non_null(p.frames[i]);
        }
        free(data);
        return p;
}

/* Adds the page as the fan-out does: the cache shares the frames, the
 * caller lets go of its own. */
static void add(ReplayCache *c, const void *owner, uint64_t from, uint64_t first, size_t n, size_t bytes) {
        ReplayPage p = page_of(from, first, n, bytes);

        assert_int_equal(replay_cache_add(c, owner, &p), 0);
        replay_page_free(&p);
}

typedef struct FindCase {
        const char *what;
        const void *owner;
        uint64_t cursor;
        int64_t from;                   /* of the page found; -1: none */
} FindCase;

/* Pages of owner a: after 0 (1..10), after 10 (11..20), after 4 (5..30,
 * overlapping both), after 40 (41..45, a stretch with a hole before it);
 * of owner b: after 0 (1..100). */
static void test_find_serves_only_a_page_that_holds_the_next_event(void **state) {
        static const FindCase cases[] = {
                { "from the start", owner_a, 0, 0 },
                { "inside the first, the overlapping one reaches further", owner_a, 5, 4 },
                { "at the end of the first page", owner_a, 10, 4 },
                { "inside the overlapping one only", owner_a, 25, 4 },
                { "at the last id of every page: nothing after it", owner_a, 30, -1 },
                { "inside the hole: the page after 40 would skip 31..40", owner_a, 35, -1 },
                { "at the page's start", owner_a, 40, 40 },
                { "past every page", owner_a, 45, -1 },
                { "another topic's pages are not a's", owner_b, 50, 0 },
                { "a topic with none", owner_b + 1, 0, -1 },
        };
        ReplayCache c;

        replay_cache_init(&c, 1 << 20, 16);
        add(&c, owner_a, 0, 1, 10, 10);
        add(&c, owner_a, 10, 11, 10, 10);
        add(&c, owner_a, 4, 5, 26, 10);
        add(&c, owner_a, 40, 41, 5, 10);
        add(&c, owner_b, 0, 1, 100, 10);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const ReplayPage *p = replay_cache_find(&c, cases[i].owner, cases[i].cursor);

                if (cases[i].from < 0) {
                        if (p)
                                fail_msg("%s: found the page after %" PRIu64, cases[i].what, p->from);
                } else if (!p || p->from != (uint64_t) cases[i].from)
                        fail_msg("%s: wanted the page after %" PRId64, cases[i].what, cases[i].from);
        }
        replay_cache_done(&c);
}

static void test_an_empty_page_is_never_kept(void **state) {
        ReplayCache c;

        /* "Nothing after 7" holds only until the next publish. */
        replay_cache_init(&c, 1 << 20, 16);
        add(&c, owner_a, 7, 8, 0, 10);
        assert_int_equal(c.n_pages, 0);
        assert_null(replay_cache_find(&c, owner_a, 7));
        replay_cache_done(&c);
}

static void test_the_least_recently_used_page_goes_first(void **state) {
        ReplayCache c;

        replay_cache_init(&c, 3 * 100, 16);     /* room for three pages of 100 B */
        add(&c, owner_a, 0, 1, 10, 10);
        add(&c, owner_a, 10, 11, 10, 10);
        add(&c, owner_a, 20, 21, 10, 10);
        assert_non_null(replay_cache_find(&c, owner_a, 0));     /* the first is used again */
        add(&c, owner_a, 30, 31, 10, 10);
        assert_int_equal(c.n_pages, 3);
        assert_int_equal(c.bytes, 300);
        assert_non_null(replay_cache_find(&c, owner_a, 0));
        assert_null(replay_cache_find(&c, owner_a, 10));        /* the one nobody asked for */
        assert_non_null(replay_cache_find(&c, owner_a, 20));
        assert_non_null(replay_cache_find(&c, owner_a, 30));
        replay_cache_done(&c);
}

static void test_bounds_in_pages_in_bytes_and_on_resize(void **state) {
        ReplayCache c;

        replay_cache_init(&c, 1 << 20, 2);
        add(&c, owner_a, 0, 1, 1, 10);
        add(&c, owner_a, 1, 2, 1, 10);
        add(&c, owner_a, 2, 3, 1, 10);
        assert_int_equal(c.n_pages, 2);
        assert_null(replay_cache_find(&c, owner_a, 0));
        replay_cache_done(&c);

        replay_cache_init(&c, 1000, 16);
        add(&c, owner_a, 0, 1, 101, 10);        /* 1,010 B: larger than the whole cache */
        assert_int_equal(c.n_pages, 0);
        add(&c, owner_a, 0, 1, 50, 10);
        add(&c, owner_a, 50, 51, 40, 10);
        assert_int_equal(c.bytes, 900);
        replay_cache_resize(&c, 500);
        assert_int_equal(c.bytes, 400);
        assert_null(replay_cache_find(&c, owner_a, 0));
        assert_non_null(replay_cache_find(&c, owner_a, 50));
        replay_cache_done(&c);
}

static void test_a_page_already_covered_is_not_kept_twice(void **state) {
        ReplayCache c;

        replay_cache_init(&c, 1 << 20, 16);
        add(&c, owner_a, 0, 1, 20, 10);
        add(&c, owner_a, 5, 6, 10, 10);         /* 6..15: inside 1..20 */
        add(&c, owner_b, 5, 6, 10, 10);         /* another topic's */
        assert_int_equal(c.n_pages, 2);
        add(&c, owner_a, 5, 6, 20, 10);         /* 6..25 reaches further: kept */
        assert_int_equal(c.n_pages, 3);
        replay_cache_done(&c);
}

static void test_forget_drops_one_topic_and_lets_go_of_its_frames(void **state) {
        ReplayPage mine = page_of(0, 1, 3, 10);
        ReplayCache c;

        replay_cache_init(&c, 1 << 20, 16);
        assert_int_equal(replay_cache_add(&c, owner_a, &mine), 0);
        add(&c, owner_b, 0, 1, 3, 10);
        assert_int_equal(mine.frames[0]->n_ref, 2);     /* shared, not copied */
        replay_cache_forget(&c, owner_a);
        assert_int_equal(mine.frames[0]->n_ref, 1);
        assert_int_equal(c.n_pages, 1);
        assert_int_equal(c.bytes, 30);
        assert_null(replay_cache_find(&c, owner_a, 0));
        assert_non_null(replay_cache_find(&c, owner_b, 0));
        replay_cache_done(&c);
        assert_int_equal(c.bytes, 0);
        replay_page_free(&mine);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_find_serves_only_a_page_that_holds_the_next_event),
                cmocka_unit_test(test_an_empty_page_is_never_kept),
                cmocka_unit_test(test_the_least_recently_used_page_goes_first),
                cmocka_unit_test(test_bounds_in_pages_in_bytes_and_on_resize),
                cmocka_unit_test(test_a_page_already_covered_is_not_kept_twice),
                cmocka_unit_test(test_forget_drops_one_topic_and_lets_go_of_its_frames),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
