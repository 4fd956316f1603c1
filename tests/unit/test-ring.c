/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "ring.h"

typedef struct Ring {
        uint64_t *items;
        size_t head, count, capacity;
} Ring;

static void push(Ring *r, uint64_t v) {
        if (r->count == r->capacity)
                assert_int_equal(ring_grow((void **) &r->items, sizeof(*r->items), &r->head, r->count,
                                           &r->capacity, 2), 0);
        r->items[(r->head + r->count) % r->capacity] = v;
        r->count++;
}

static uint64_t pop(Ring *r) {
        uint64_t v = r->items[r->head];

        r->head = (r->head + 1) % r->capacity;
        r->count--;
        return v;
}

/* Whatever the interleaving of pushes and pops, and however often the
 * ring grows while it wraps around, it gives back what it got, in order. */
static void test_fifo_across_growth_and_wrapping(void **state) {
        static const char *const scripts[] = {
                "+++++",                /* grows 2 -> 4 -> 8 from empty */
                "++-++-++-++-",         /* grows while the head is not at 0 */
                "++--++--++",           /* never grows past 2, wraps */
                "+++-+-+-++++++------", /* grows with the live part wrapped */
        };

        for (size_t s = 0; s < sizeof(scripts) / sizeof(scripts[0]); s++) {
                Ring r = { 0 };
                uint64_t next_in = 1, next_out = 1;

                for (const char *c = scripts[s]; *c; c++) {
                        if (*c == '+')
                                push(&r, next_in++);
                        else
                                assert_int_equal(pop(&r), next_out++);
                }
                while (r.count > 0)
                        assert_int_equal(pop(&r), next_out++);
                assert_int_equal(next_out, next_in);
                free(r.items);
        }
}

static void test_grows_by_doubling_from_the_first_capacity(void **state) {
        Ring r = { 0 };

        push(&r, 1);
        assert_int_equal(r.capacity, 2);
        push(&r, 2);
        push(&r, 3);
        assert_int_equal(r.capacity, 4);
        assert_int_equal(r.head, 0);
        free(r.items);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fifo_across_growth_and_wrapping),
                cmocka_unit_test(test_grows_by_doubling_from_the_first_capacity),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
