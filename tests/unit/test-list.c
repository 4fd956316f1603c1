/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>

#include "list.h"
#include "util.h"

typedef struct Item {
        int value;
        ListNode node;
        ListNode other;                 /* a second list the item can be on */
} Item;

/* The values in order, as "1 2 3", checking the links both ways. */
static const char *values(const ListNode *head, char *buf, size_t size) {
        size_t n = 0, forward = 0, backward = 0;

        buf[0] = '\0';
        LIST_FOREACH(i, head, Item, node) {
                n += (size_t) snprintf(buf + n, size - n, "%s%d", n ? " " : "", i->value);
                forward++;
        }
        for (const ListNode *p = head->prev; p != head; p = p->prev) {
                assert_ptr_equal(p->next->prev, p);
                backward++;
        }
        assert_int_equal(forward, backward);
        return buf;
}

static void test_append_prepend_remove(void **state) {
        Item items[5] = { { .value = 1 }, { .value = 2 }, { .value = 3 }, { .value = 4 }, { .value = 5 } };
        ListNode head;
        char buf[64];

        list_init(&head);
        assert_true(list_empty(&head));
        assert_null(list_first(&head, Item, node));
        assert_null(list_last(&head, Item, node));
        assert_string_equal(values(&head, buf, sizeof(buf)), "");

        /* Zeroed nodes (calloc) count as on no list. */
        assert_false(list_linked(&items[0].node));
        list_append(&head, &items[1].node);
        list_append(&head, &items[2].node);
        list_prepend(&head, &items[0].node);
        list_append(&head, &items[3].node);
        assert_string_equal(values(&head, buf, sizeof(buf)), "1 2 3 4");
        assert_ptr_equal(list_first(&head, Item, node), &items[0]);
        assert_ptr_equal(list_last(&head, Item, node), &items[3]);
        assert_true(list_linked(&items[2].node));

        list_remove(&items[2].node);           /* the middle */
        assert_false(list_linked(&items[2].node));
        assert_string_equal(values(&head, buf, sizeof(buf)), "1 2 4");
        list_remove(&items[2].node);           /* twice: harmless */
        list_remove(&items[4].node);           /* never on one: harmless */
        assert_string_equal(values(&head, buf, sizeof(buf)), "1 2 4");
        list_remove(&items[0].node);           /* the first */
        list_remove(&items[3].node);           /* the last */
        assert_string_equal(values(&head, buf, sizeof(buf)), "2");
        list_remove(&items[1].node);
        assert_true(list_empty(&head));

        /* A removed node can go onto a list again. */
        list_append(&head, &items[2].node);
        assert_string_equal(values(&head, buf, sizeof(buf)), "3");
}

static void test_foreach_safe_removes_while_walking(void **state) {
        static const struct {
                const char *remove;             /* values to remove on the walk */
                const char *left;
        } cases[] = {
                { "", "1 2 3 4 5 6" },
                { "1", "2 3 4 5 6" },
                { "6", "1 2 3 4 5" },
                { "2 4 6", "1 3 5" },
                { "1 2 3 4 5 6", "" },
        };

        for (size_t c = 0; c < ELEMENTSOF(cases); c++) {
                Item items[6] = { 0 };
                ListNode head;
                char buf[64], walked[64];
                size_t n = 0;

                list_init(&head);
                for (int i = 0; i < 6; i++) {
                        items[i].value = i + 1;
                        list_append(&head, &items[i].node);
                }
                walked[0] = '\0';
                LIST_FOREACH_SAFE(i, next, &head, Item, node) {
                        char v[8];
                        n += (size_t) snprintf(walked + n, sizeof(walked) - n, "%d", i->value);
                        snprintf(v, sizeof(v), "%d", i->value);
                        if (strstr(cases[c].remove, v))
                                list_remove(&i->node);
                }
                assert_string_equal(walked, "123456");  /* every one visited once */
                assert_string_equal(values(&head, buf, sizeof(buf)), cases[c].left);
        }
}

static void test_two_lists_and_splice(void **state) {
        Item items[4] = { { .value = 1 }, { .value = 2 }, { .value = 3 }, { .value = 4 } };
        ListNode a, b, others;
        char buf[64];
        int sum = 0;

        list_init(&a);
        list_init(&b);
        list_init(&others);
        list_append(&a, &items[0].node);
        list_append(&a, &items[1].node);
        list_append(&b, &items[2].node);
        list_append(&b, &items[3].node);
        for (int i = 0; i < 4; i++)
                list_append(&others, &items[i].other);
        list_splice(&a, &b);
        assert_true(list_empty(&b));
        assert_string_equal(values(&a, buf, sizeof(buf)), "1 2 3 4");
        list_splice(&a, &b);                    /* an empty one: nothing */
        assert_string_equal(values(&a, buf, sizeof(buf)), "1 2 3 4");
        list_splice(&b, &a);
        assert_string_equal(values(&b, buf, sizeof(buf)), "1 2 3 4");
        /* The other list never noticed. */
        LIST_FOREACH(i, &others, Item, other)
                sum += i->value;
        assert_int_equal(sum, 10);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_append_prepend_remove),
                cmocka_unit_test(test_foreach_safe_removes_while_walking),
                cmocka_unit_test(test_two_lists_and_splice),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
