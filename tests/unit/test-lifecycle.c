/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lifecycle.h"

enum { S = LIFECYCLE_STARTING, R = LIFECYCLE_READY, D = LIFECYCLE_DEGRADED, L = LIFECYCLE_RELOADING,
       N = LIFECYCLE_DRAINING, F = LIFECYCLE_FAILED };

/* Every transition batond makes, with what it must do; every pair not
 * listed must be refused. */
typedef struct Expected {
        int from, to;
        const char *effects;            /* r: READY=1, l: RELOADING=1, s: STOPPING=1, h: HTTP ready, d: HTTP drains */
        HealthPhase phase;
} Expected;

static const Expected table[] = {
        { S, S, "", HEALTH_STARTING },          /* a new startup step */
        { S, R, "rh", HEALTH_RUNNING },         /* started, checks pass */
        { S, D, "rh", HEALTH_RUNNING },         /* started as a check failed meanwhile */
        { S, N, "sd", HEALTH_STOPPING },        /* stopped before ready: no READY=1 */
        { S, F, "", HEALTH_STARTING },          /* a fatal start */
        { R, R, "", HEALTH_RUNNING },
        { R, D, "", HEALTH_RUNNING },           /* systemd does not track degraded */
        { R, L, "l", HEALTH_RUNNING },
        { R, N, "sd", HEALTH_STOPPING },
        { D, D, "", HEALTH_RUNNING },
        { D, R, "", HEALTH_RUNNING },
        { D, L, "l", HEALTH_RUNNING },
        { D, N, "sd", HEALTH_STOPPING },
        { L, L, "", HEALTH_RUNNING },
        { L, R, "r", HEALTH_RUNNING },          /* READY=1 ends a reload */
        { L, D, "r", HEALTH_RUNNING },
        { L, N, "sd", HEALTH_STOPPING },
        { N, N, "", HEALTH_STOPPING },          /* a second stop signal */
        { F, F, "", HEALTH_STARTING },
};

static const Expected *expected(int from, int to) {
        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
                if (table[i].from == from && table[i].to == to)
                        return &table[i];
        return NULL;
}

static void test_every_pair_of_states(void **state) {
        for (int from = 0; from < _LIFECYCLE_STATE_MAX; from++)
                for (int to = 0; to < _LIFECYCLE_STATE_MAX; to++) {
                        const Expected *x = expected(from, to);
                        LifecycleEffects e = lifecycle_effects(from, to);
                        char got[8] = "";
                        size_t n = 0;

                        if (!x) {
                                if (e.valid)
                                        fail_msg("%s -> %s is allowed", lifecycle_state_name(from),
                                                 lifecycle_state_name(to));
                                if (e.notify_ready || e.notify_reloading || e.notify_stopping || e.http_ready ||
                                    e.http_drain)
                                        fail_msg("refused %s -> %s still has effects", lifecycle_state_name(from),
                                                 lifecycle_state_name(to));
                                continue;
                        }
                        if (!e.valid)
                                fail_msg("%s -> %s is refused", lifecycle_state_name(from), lifecycle_state_name(to));
                        if (e.notify_ready)
                                got[n++] = 'r';
                        if (e.notify_reloading)
                                got[n++] = 'l';
                        if (e.notify_stopping)
                                got[n++] = 's';
                        if (e.http_ready)
                                got[n++] = 'h';
                        if (e.http_drain)
                                got[n++] = 'd';
                        if (strcmp(got, x->effects) != 0 || e.phase != x->phase)
                                fail_msg("%s -> %s: effects '%s' phase %d, wanted '%s' phase %d",
                                         lifecycle_state_name(from), lifecycle_state_name(to), got, e.phase,
                                         x->effects, x->phase);
                }
}

static void test_names_are_the_status_file_words(void **state) {
        static const char *const names[] = { "starting", "ready", "degraded", "reloading", "draining", "failed" };

        for (int s = 0; s < _LIFECYCLE_STATE_MAX; s++)
                assert_string_equal(lifecycle_state_name(s), names[s]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_pair_of_states),
                cmocka_unit_test(test_names_are_the_status_file_words),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
