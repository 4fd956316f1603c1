/* SPDX-License-Identifier: MIT */
#pragma once

/* The STATUS= text (what "systemctl status" shows) of a running instance:
 * where it serves, for which colour, and what it is doing right now.
 * Startup and the drain write their own. Pure formatting (unit-tested);
 * the manager sends it at most once a second, and only when it changed. */

#include "http-server.h"

/* How often the running status is refreshed at most. */
#define STATUS_REFRESH_USEC USEC_PER_SEC

typedef struct RunningStatus {
        const char *listen;             /* "127.0.0.1:8080, 127.0.0.1:9090 (metrics)" */
        const char *color;              /* "" when none */
        bool ready;
        const char *not_ready_reason;   /* when !ready: "database check fails: ..." */
        HttpCounters counters;
} RunningStatus;

/* "Ready on 127.0.0.1:8080, colour blue: 2 requests, 1 stream, 3 connections, 1234 served"
 * "Not ready, colour blue: 0 requests, ...; database check fails: ..." */
void status_format_running(const RunningStatus *s, char *buf, size_t size);
