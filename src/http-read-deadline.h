/* SPDX-License-Identifier: MIT */
#pragma once

/* A deadline for reading a whole request. A connection that waits for a
 * request (just accepted, or its previous answer done) has the timeout to
 * deliver the request line, headers and body; past it, its socket is shut
 * down and libmicrohttpd closes it. libmicrohttpd 0.9.75 times inactivity
 * only, so a client sending a byte now and then (slowloris) would otherwise
 * hold its connection slot for ever. Once a request is in, the deadline
 * stops: handlers, suspended publishes and streams take the time they need.
 *
 * Deadlines all have the same length, so they expire in the order they
 * were started: one list, oldest first, and one timer for its head. */

#include <systemd/sd-event.h>

#include "util.h"

typedef struct ReadDeadlines ReadDeadlines;     /* one per server */
typedef struct ReadDeadline ReadDeadline;       /* one per connection */

int read_deadlines_new(sd_event *event, usec_t timeout, ReadDeadlines **ret);
/* Every connection's deadline must have been freed first. */
ReadDeadlines *read_deadlines_free(ReadDeadlines *d);
DEFINE_POINTER_CLEANUP(ReadDeadlines, read_deadlines_free);

/* Connections cut so far. */
uint64_t read_deadlines_expired(const ReadDeadlines *d);

/* A connection on socket fd, waiting for its first request from now.
 * NULL when out of memory (the connection then has no deadline). */
ReadDeadline *read_deadline_new(ReadDeadlines *d, int fd);
void read_deadline_free(ReadDeadline *x);

/* The request is in: no deadline until the connection waits again. */
void read_deadline_stop(ReadDeadline *x);
/* The connection waits for its next request, from now. */
void read_deadline_restart(ReadDeadline *x);
