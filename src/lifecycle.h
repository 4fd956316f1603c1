/* SPDX-License-Identifier: MIT */
#pragma once

/* The one owner of batond's lifecycle: one state, and one transition
 * function that drives everything the state decides, so that nothing else
 * keeps a copy of it:
 *
 *   - the sd_notify messages READY=1, RELOADING=1, STOPPING=1 and STATUS=
 *     (nothing else writes STATUS=);
 *   - what the probes answer (the health phase);
 *   - the HTTP server's mode (held until ready, serving, draining);
 *   - the status file, $RUNTIME_DIRECTORY/status: the same state and
 *     counts as name=value lines for baton-deploy (README: "The status
 *     file"), rewritten once a second and at every transition.
 *
 *   starting --> ready <--> degraded      (degraded: a dependency check fails)
 *      |           |  \        |
 *      |           |   reloading (and back to ready or degraded)
 *      |           v           v
 *      +------> draining <-----+
 *      v
 *    failed
 *
 * What each transition does is pure (lifecycle_effects(), unit-tested on
 * the table of all pairs); lifecycle_set() carries it out. */

#include <stdbool.h>
#include <stdint.h>

#include "health-checks.h"
#include "http-server.h"

typedef enum LifecycleState {
        LIFECYCLE_STARTING,
        LIFECYCLE_READY,
        LIFECYCLE_DEGRADED,
        LIFECYCLE_RELOADING,
        LIFECYCLE_DRAINING,
        LIFECYCLE_FAILED,
        _LIFECYCLE_STATE_MAX,
} LifecycleState;

/* "starting", "ready", ...: the status file's STATE. */
const char *lifecycle_state_name(LifecycleState state);

typedef struct LifecycleEffects {
        bool valid;                     /* a transition batond makes */
        bool notify_ready;              /* READY=1 */
        bool notify_reloading;          /* RELOADING=1 */
        bool notify_stopping;           /* STOPPING=1 */
        bool http_ready;                /* requests held for readiness go on */
        bool http_drain;                /* no new connections; Connection: close */
        HealthPhase phase;              /* what the probes answer */
} LifecycleEffects;

/* What going from one state to another does; !valid for a transition that
 * must not happen (it is then refused, and logged as a bug). Setting the
 * state it is in is valid and does nothing but refresh the status. */
LifecycleEffects lifecycle_effects(LifecycleState from, LifecycleState to);

/* What the status reports besides the state. */
typedef struct LifecycleCounts {
        HttpCounters http;
        size_t streams;                 /* open now */
        uint64_t streams_resumed;       /* opened with Last-Event-ID */
        uint64_t streams_told_to_reconnect;
        uint64_t events_replayed;       /* sent to streams catching up */
        uint64_t publish_failures;      /* publishes answered 5xx */
        usec_t draining_for;            /* while draining */
        const char *not_ready_reason;   /* while degraded */
} LifecycleCounts;

typedef struct Lifecycle Lifecycle;

/* listen: "127.0.0.1:8080, ..." and color ("" when none), for STATUS=.
 * status_dir: where the status file goes (NULL: none). */
int lifecycle_new(HttpServer *http, Health *health, const char *listen, const char *color,
                  const char *status_dir, Lifecycle **ret);
Lifecycle *lifecycle_free(Lifecycle *l);
DEFINE_POINTER_CLEANUP(Lifecycle, lifecycle_free);

LifecycleState lifecycle_state(const Lifecycle *l);
bool lifecycle_running(const Lifecycle *l);     /* ready or degraded */

/* The transition, with its effects; detail is the startup step or the
 * failure (NULL otherwise). The status is refreshed with the counts given
 * last. -EPERM for an invalid transition (nothing happens). */
int lifecycle_set(Lifecycle *l, LifecycleState to, const char *detail);

/* The counts STATUS= and the status file report from now on; published by
 * the next lifecycle_set() or lifecycle_refresh(). */
void lifecycle_set_counts(Lifecycle *l, const LifecycleCounts *counts);

/* STATUS= (only when it changed) and the status file, with these counts
 * (NULL: the last ones). */
void lifecycle_refresh(Lifecycle *l, const LifecycleCounts *counts);
