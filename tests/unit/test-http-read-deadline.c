/* SPDX-License-Identifier: MIT */
/* Read deadlines on a real event loop and real sockets: a connection that
 * does not stop its deadline in time is shut down (its peer reads the end
 * of the stream); stopped, restarted and freed deadlines behave. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http-read-deadline.h"

#define TIMEOUT (400 * USEC_PER_MSEC)
#define LATE (80 * USEC_PER_MSEC)       /* the timer's accuracy (40 ms) and then some */

typedef struct Fixture {
        sd_event *event;
        ReadDeadlines *deadlines;
        int pair[3][2];                 /* [i][0] the server's end, [i][1] the client's */
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        assert_int_equal(sd_event_new(&f->event), 0);
        assert_int_equal(read_deadlines_new(f->event, TIMEOUT, &f->deadlines), 0);
        for (size_t i = 0; i < 3; i++)
                assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->pair[i]), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        read_deadlines_free(f->deadlines);
        sd_event_unref(f->event);
        for (size_t i = 0; i < 3; i++) {
                close(f->pair[i][0]);
                close(f->pair[i][1]);
        }
        free(f);
        return 0;
}

/* Runs the loop for about usec. */
static void run_for(Fixture *f, usec_t usec) {
        usec_t end = now_usec(CLOCK_MONOTONIC) + usec;

        for (usec_t now = now_usec(CLOCK_MONOTONIC); now < end; now = now_usec(CLOCK_MONOTONIC))
                assert_true(sd_event_run(f->event, end - now) >= 0);
}

/* The client's end has seen the server shut the connection down. */
static bool cut(Fixture *f, size_t i) {
        struct pollfd p = { .fd = f->pair[i][1], .events = POLLIN };
        char c;

        if (poll(&p, 1, 0) != 1)
                return false;
        return read(f->pair[i][1], &c, 1) == 0;
}

static void test_expired_connection_is_cut(void **state) {
        Fixture *f = *state;
        ReadDeadline *x = read_deadline_new(f->deadlines, f->pair[0][0]);

        assert_non_null(x);
        run_for(f, TIMEOUT / 2);
        assert_false(cut(f, 0));
        run_for(f, TIMEOUT / 2 + LATE);
        assert_true(cut(f, 0));
        assert_int_equal(read_deadlines_expired(f->deadlines), 1);
        read_deadline_free(x);
}

static void test_stopped_deadline_never_cuts(void **state) {
        Fixture *f = *state;
        ReadDeadline *x = read_deadline_new(f->deadlines, f->pair[0][0]);

        read_deadline_stop(x);
        run_for(f, 2 * TIMEOUT);
        assert_false(cut(f, 0));
        assert_int_equal(read_deadlines_expired(f->deadlines), 0);
        read_deadline_free(x);
}

/* Only the connections still waiting are cut, oldest first; a restart
 * counts from the restart; a freed one is forgotten. */
static void test_only_waiting_connections_are_cut(void **state) {
        Fixture *f = *state;
        ReadDeadline *a = read_deadline_new(f->deadlines, f->pair[0][0]);
        ReadDeadline *b = read_deadline_new(f->deadlines, f->pair[1][0]);
        ReadDeadline *c = read_deadline_new(f->deadlines, f->pair[2][0]);

        read_deadline_stop(a);          /* its request came in */
        read_deadline_free(c);          /* closed */
        run_for(f, TIMEOUT / 2);
        read_deadline_restart(a);       /* answered; waits for the next request */
        run_for(f, TIMEOUT / 2 + LATE);
        assert_true(cut(f, 1));
        assert_false(cut(f, 0));
        assert_int_equal(read_deadlines_expired(f->deadlines), 1);
        run_for(f, TIMEOUT / 2);
        assert_true(cut(f, 0));
        assert_false(cut(f, 2));
        assert_int_equal(read_deadlines_expired(f->deadlines), 2);
        read_deadline_free(a);
        read_deadline_free(b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_expired_connection_is_cut, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stopped_deadline_never_cuts, setup, teardown),
                cmocka_unit_test_setup_teardown(test_only_waiting_connections_are_cut, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
