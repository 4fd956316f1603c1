/* SPDX-License-Identifier: MIT */
#pragma once

/* The systemd watchdog (WatchdogSec=). A ping must prove that requests are
 * served, not just that a timer fires: every third of the interval batond
 * sends itself GET /_/health/live through the real HTTP stack (a socketpair
 * handed to libmicrohttpd as if accepted, on a daemon of its own outside
 * MAX_CONNECTIONS: see http_server_add_connection()) and pings only when
 * the 200 comes back. Since handlers run on the main loop, a stuck handler, a stuck loop
 * or a wedged HTTP engine all stop the pings, and systemd restarts us. */

#include <systemd/sd-event.h>

#include "http-server.h"

typedef struct Watchdog Watchdog;

int watchdog_new(sd_event *event, HttpServer *http, Watchdog **ret);
Watchdog *watchdog_free(Watchdog *w);
DEFINE_POINTER_CLEANUP(Watchdog, watchdog_free);

/* Pings once now (right after READY=1) and then keeps probing. No-op when
 * systemd does not watch us (WATCHDOG_USEC unset). */
int watchdog_start(Watchdog *w);
