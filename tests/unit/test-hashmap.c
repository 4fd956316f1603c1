/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>

#include "hashmap.h"

typedef struct Item {
        HashmapEntry entry;
        char key[16];
        bool seen;
} Item;

/* The reference implementation's vectors.h: key 00..0f, message 00..(n-1). */
static void test_siphash_vectors(void **state) {
        static const uint64_t expected[] = {
                [0] = 0x726fdb47dd0e0e31ULL,
                [15] = 0xa129ca6149be45e5ULL,
        };
        const uint64_t key[2] = { 0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL };
        uint8_t msg[16];

        for (unsigned i = 0; i < sizeof(msg); i++)
                msg[i] = (uint8_t) i;
        assert_true(siphash24(msg, 0, key) == expected[0]);
        assert_true(siphash24(msg, 15, key) == expected[15]);
        /* Every length hashes differently (the length is part of the hash). */
        for (unsigned n = 1; n < sizeof(msg); n++)
                assert_true(siphash24(msg, n, key) != siphash24(msg, n - 1, key));
}

static void test_put_get_remove(void **state) {
        Hashmap h;
        Item a = { .key = "orders" }, b = { .key = "prices" }, dup = { .key = "orders" };

        assert_int_equal(hashmap_init(&h), 0);
        assert_null(hashmap_get(&h, "orders"));
        assert_int_equal(hashmap_put(&h, &a.entry, a.key), 0);
        assert_int_equal(hashmap_put(&h, &b.entry, b.key), 0);
        assert_int_equal(hashmap_put(&h, &dup.entry, dup.key), -EEXIST);
        assert_int_equal(hashmap_size(&h), 2);
        assert_ptr_equal(hashmap_get(&h, "orders"), &a.entry);
        assert_ptr_equal(container_of(hashmap_get(&h, "prices"), Item, entry), &b);
        assert_null(hashmap_get(&h, "order"));
        assert_null(hashmap_get(&h, ""));
        hashmap_remove(&h, &a.entry);
        assert_null(hashmap_get(&h, "orders"));
        assert_int_equal(hashmap_size(&h), 1);
        assert_int_equal(hashmap_put(&h, &dup.entry, dup.key), 0);
        assert_ptr_equal(hashmap_get(&h, "orders"), &dup.entry);
        hashmap_done(&h);
}

/* Through several doublings, with removals along the way: every key stays
 * findable, removed ones are gone, and iteration sees each entry once. */
static void test_growth_and_iteration(void **state) {
        enum { N = 5000 };
        Item *items = calloc(N, sizeof(Item));
        bool *in = calloc(N, sizeof(bool));
        Hashmap h;
        size_t seen = 0;

        assert_non_null(items);
        assert_non_null(in);
        assert_int_equal(hashmap_init(&h), 0);
        for (int i = 0; i < N; i++) {
                snprintf(items[i].key, sizeof(items[i].key), "topic-%d", i);
                assert_int_equal(hashmap_put(&h, &items[i].entry, items[i].key), 0);
                in[i] = true;
                /* Now and then one inserted earlier goes again. */
                if (i % 3 == 0 && in[i / 2]) {
                        hashmap_remove(&h, &items[i / 2].entry);
                        in[i / 2] = false;
                }
        }
        for (int i = 0; i < N; i++) {
                HashmapEntry *e = hashmap_get(&h, items[i].key);
                assert_ptr_equal(e, in[i] ? &items[i].entry : NULL);
                if (e)
                        seen++;
        }
        assert_int_equal(seen, hashmap_size(&h));
        assert_true(seen < N && seen > N / 2);
        assert_true(h.n_buckets >= hashmap_size(&h));

        /* Iterate, removing every other entry as it is returned. */
        HashmapIter it = HASHMAP_ITER_INIT;
        size_t visited = 0, removed = 0;
        for (HashmapEntry *e; (e = hashmap_iterate(&h, &it)); ) {
                Item *item = container_of(e, Item, entry);
                assert_false(item->seen);
                item->seen = true;
                if (visited++ % 2 == 0) {
                        hashmap_remove(&h, e);
                        removed++;
                }
        }
        assert_int_equal(visited, seen);
        assert_int_equal(hashmap_size(&h), seen - removed);
        hashmap_done(&h);
        free(items);
        free(in);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_siphash_vectors),
                cmocka_unit_test(test_put_get_remove),
                cmocka_unit_test(test_growth_and_iteration),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
