/* SPDX-License-Identifier: MIT */
/* The watchdog's probing on a real event loop, with the HTTP server and
 * systemd's notify socket replaced (--wrap): the test holds the server's
 * end of each self-probe and answers it, or does not, as a stuck or a
 * slow server would. Each sd_event_run() dispatches one source, so the
 * cases count timer turns, not time: nothing here depends on how fast the
 * machine is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>
#include <unistd.h>

#include "lifecycle-notify.h"
#include "lifecycle-watchdog.h"

#define WATCHDOG_USEC (300 * USEC_PER_MSEC)     /* a probe every 100 ms */
#define MAX_PROBES 8

static unsigned pings;
static int probes[MAX_PROBES];                  /* the server's ends, in order */
static size_t n_probes;

void __wrap_notify_watchdog(void);
void __wrap_notify_watchdog(void) {
        pings++;
}

usec_t __wrap_notify_watchdog_usec(void);
usec_t __wrap_notify_watchdog_usec(void) {
        return WATCHDOG_USEC;
}

/* Takes the connection and answers nothing until the case says so. */
int __wrap_http_server_add_connection(HttpServer *server, int fd);
int __wrap_http_server_add_connection(HttpServer *server, int fd) {
        assert_true(n_probes < MAX_PROBES);
        probes[n_probes++] = fd;
        return 0;
}

typedef struct Fixture {
        sd_event *event;
        Watchdog *watchdog;
} Fixture;

static int setup(void **state) {
        static int server;              /* never looked into: the wrap takes its place */
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        pings = 0;
        n_probes = 0;
        assert_int_equal(sd_event_new(&f->event), 0);
        assert_int_equal(watchdog_new(f->event, (HttpServer *) &server, &f->watchdog), 0);
        assert_int_equal(watchdog_start(f->watchdog), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        watchdog_free(f->watchdog);
        sd_event_unref(f->event);
        for (size_t i = 0; i < n_probes; i++)
                close(probes[i]);
        free(f);
        return 0;
}

static void dispatch_one(Fixture *f) {
        assert_true(sd_event_run(f->event, 5 * USEC_PER_SEC) > 0);
}

static void answer(size_t probe, const char *status_line) {
        ssize_t n = write(probes[probe], status_line, strlen(status_line));

        assert_int_equal(n, (ssize_t) strlen(status_line));
}

/* The probe's client end is closed: the server reads the end. */
static bool given_up(size_t probe) {
        char buf[256];
        ssize_t n;

        while ((n = read(probes[probe], buf, sizeof(buf))) > 0)
                ;
        return n == 0;
}

static void starting_pings_at_once_then_only_on_a_200(void **state) {
        Fixture *f = *state;

        assert_int_equal(pings, 1);             /* right after READY=1 */
        dispatch_one(f);                        /* the timer: a probe */
        assert_int_equal(n_probes, 1);
        assert_int_equal(pings, 1);
        answer(0, "HTTP/1.1 200 OK\r\n\r\n");
        dispatch_one(f);                        /* its answer */
        assert_int_equal(pings, 2);

        dispatch_one(f);
        answer(1, "HTTP/1.1 503 Service Unavailable\r\n\r\n");
        dispatch_one(f);
        assert_int_equal(pings, 2);             /* a refusal proves nothing */
}

/* One late probe costs one ping. It used to cost two: the turn that gave
 * it up sent none, and pings a third of WATCHDOG_USEC apart then left a
 * gap of the whole interval, so systemd killed a batond that had answered
 * again by then. */
static void a_late_probe_is_given_up_and_sent_again_at_once(void **state) {
        Fixture *f = *state;

        dispatch_one(f);                        /* probe 0, never answered */
        dispatch_one(f);                        /* the next turn gives it up... */
        assert_true(given_up(0));
        assert_int_equal(n_probes, 2);          /* ... and probes again in the same turn */
        answer(1, "HTTP/1.1 200 OK\r\n\r\n");
        dispatch_one(f);
        assert_int_equal(pings, 2);             /* two turns after the last ping, not three */
}

static void a_server_that_never_answers_gets_no_ping(void **state) {
        Fixture *f = *state;

        for (int turn = 0; turn < 5; turn++)
                dispatch_one(f);
        assert_int_equal(n_probes, 5);
        for (size_t i = 0; i < 4; i++)
                assert_true(given_up(i));
        assert_int_equal(pings, 1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(starting_pings_at_once_then_only_on_a_200, setup, teardown),
                cmocka_unit_test_setup_teardown(a_late_probe_is_given_up_and_sent_again_at_once, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(a_server_that_never_answers_gets_no_ping, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
