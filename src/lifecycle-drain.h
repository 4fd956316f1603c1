/* SPDX-License-Identifier: MIT */
#pragma once

/* Graceful shutdown, once the lifecycle is draining (lifecycle.h: it sent
 * STOPPING=1, put the HTTP server in drain mode and reports the progress
 * in STATUS=). SIGTERM: let requests in flight finish (up to SHUTDOWN_TIMEOUT) and streams end by themselves (up
 * to DRAIN_TIMEOUT, 0 = for ever); then each remaining stream gets a
 * "reconnect" event. SIGINT: the same, but streams are told to reconnect at
 * once. A second signal, or SHUTDOWN_TIMEOUT with requests still open,
 * forces the end. Meanwhile EXTEND_TIMEOUT_USEC= keeps systemd from killing
 * a long drain. */

#include <systemd/sd-event.h>

#include "http-server.h"
#include "sse-stream.h"

typedef enum DrainMode {
        DRAIN_GRACEFUL,                 /* SIGTERM */
        DRAIN_FAST,                     /* SIGINT */
} DrainMode;

typedef struct Drain Drain;

/* forced: requests were abandoned (timeout or second signal). */
typedef void (*DrainDoneCallback)(Drain *drain, bool forced, void *userdata);

int drain_new(sd_event *event, HttpServer *http, StreamHub *streams, Drain **ret);
Drain *drain_free(Drain *drain);
DEFINE_POINTER_CLEANUP(Drain, drain_free);

/* Timeouts may change (SIGHUP) until the drain starts. */
void drain_set_timeouts(Drain *drain, usec_t shutdown_timeout_usec, usec_t drain_timeout_usec);

/* First call starts the drain; a later call forces it to end now. */
void drain_begin(Drain *drain, DrainMode mode, DrainDoneCallback cb, void *userdata);
bool drain_active(const Drain *drain);
/* Since the drain began; 0 before. */
usec_t drain_elapsed(const Drain *drain);

/* Re-evaluates after a request or stream ended. */
void drain_check(Drain *drain);
