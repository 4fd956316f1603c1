/* SPDX-License-Identifier: MIT */
/* The mailbox on a real event loop, posted to from another thread: its
 * bound refuses sized messages past it and never state changes (size 0),
 * delivery gives the room back, order is kept, and freeing releases what
 * is left exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>

#include "event-bus-mailbox.h"

#define BOUND 1000

typedef struct Received {
        int values[64];
        size_t n;
        size_t discarded;
} Received;

static void on_message(void *userdata, void *payload, bool discarded) {
        Received *r = userdata;
        int *value = payload;

        if (discarded)
                r->discarded++;
        else if (r->n < ELEMENTSOF(r->values))
                r->values[r->n++] = *value;
        free(value);
}

static int post(Mailbox *m, Received *r, int value, size_t size) {
        int *payload = malloc(sizeof(int)), ret;

        assert_non_null(payload);
        *payload = value;
        ret = mailbox_post(m, on_message, r, payload, size);
        if (ret < 0)
                free(payload);
        return ret;
}

/* Runs the loop until it has nothing more to do right now. */
static void drain(sd_event *event) {
        while (sd_event_run(event, 0) > 0)
                ;
}

static void test_bound(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        Mailbox *m = NULL;
        Received r = { 0 };

        assert_int_equal(sd_event_new(&event), 0);
        assert_int_equal(mailbox_new(event, BOUND, &m), 0);

        assert_int_equal(post(m, &r, 1, 600), 0);
        assert_int_equal(post(m, &r, 2, 400), 0);       /* exactly the bound */
        assert_int_equal(post(m, &r, 3, 1), -ENOBUFS);
        assert_int_equal(post(m, &r, 4, 0), 0);         /* state changes always go */
        drain(event);
        assert_int_equal(r.n, 3);
        assert_int_equal(r.values[0], 1);
        assert_int_equal(r.values[1], 2);
        assert_int_equal(r.values[2], 4);
        /* Delivered: all the room is back. */
        assert_int_equal(post(m, &r, 5, BOUND), 0);
        assert_int_equal(post(m, &r, 6, BOUND + 1), -ENOBUFS);
        mailbox_free(m);
        /* What was still queued is released, marked discarded. */
        assert_int_equal(r.n, 3);
        assert_int_equal(r.discarded, 1);
}

typedef struct Poster {
        Mailbox *m;
        Received *r;
        int refused;
} Poster;

static void *poster(void *userdata) {
        Poster *p = userdata;

        for (int i = 0; i < 50; i++)
                if (post(p->m, p->r, i, 100) == -ENOBUFS)
                        p->refused++;
        return NULL;
}

static void test_from_another_thread(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        Mailbox *m = NULL;
        Received r = { 0 };
        pthread_t thread;

        assert_int_equal(sd_event_new(&event), 0);
        assert_int_equal(mailbox_new(event, BOUND, &m), 0);
        Poster p = { .m = m, .r = &r };
        assert_int_equal(pthread_create(&thread, NULL, poster, &p), 0);
        assert_int_equal(pthread_join(thread, NULL), 0);
        /* Nobody took any: ten fit, forty were refused, in posting order. */
        assert_int_equal(p.refused, 40);
        drain(event);
        assert_int_equal(r.n, 10);
        for (int i = 0; i < 10; i++)
                assert_int_equal(r.values[i], i);
        mailbox_free(m);
        assert_int_equal(r.discarded, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_bound),
                cmocka_unit_test(test_from_another_thread),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
