/* SPDX-License-Identifier: MIT */
#pragma once

/* Collects every figure batond exposes (requests, streams, events,
 * dependency checks, readiness, the process) from the running subsystems
 * into an exposition: /metrics (Prometheus text) and /metrics/json use the
 * same collection, so they always agree. Costs no I/O beyond /proc/self;
 * nothing in it grows with the number of streams or topics. */

#include "metrics-exposition.h"
#include "manager.h"

int metrics_report(Manager *m, ExpositionFormat format, char **ret_text, size_t *ret_size);
