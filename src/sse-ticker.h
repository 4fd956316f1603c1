/* SPDX-License-Identifier: MIT */
#pragma once

/* The ticker behind GET /stream/test?duration=N (a shipped endpoint, not a
 * test of batond): a "tick" event every second for N seconds,
 * then an "end" event and a normal end of stream. For testing deploys with
 * long-lived streams. Ticks carry ids 1..N; a client reconnecting with
 * Last-Event-ID: K (or ?lastEventId=K) continues at tick K+1, so a test can
 * check that a stream moved to another instance without losing a tick. */

#include "http-response.h"
#include "sse-stream.h"

void sse_ticker_handle(StreamHub *hub, HttpRequest *req, usec_t max_duration_usec,
                        const char *color);
