/* SPDX-License-Identifier: MIT */
#pragma once

/* The figures batond keeps about its own work, as plain data: histograms
 * and the per-route request counters that the HTTP server updates on every
 * request. Updating costs a few array increments (no allocation, no lock:
 * everything runs on the one event loop); rendering lives in
 * metrics-exposition.c, collecting in metrics-report.c. */

#include "http-router.h"
#include "util.h"

/* Upper bounds shared by every duration histogram, in microseconds: from
 * half a millisecond (a probe) to ten seconds (a query timeout). */
#define HISTOGRAM_BOUNDS_USEC                                                   \
        { 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,   \
          1000000, 2500000, 5000000, 10000000 }
#define HISTOGRAM_N_BOUNDS 14

typedef struct Histogram {
        uint64_t buckets[HISTOGRAM_N_BOUNDS + 1];       /* per bucket, the last is +Inf */
        uint64_t count;
        usec_t sum_usec;
} Histogram;

extern const usec_t histogram_bounds_usec[HISTOGRAM_N_BOUNDS];

void histogram_observe(Histogram *h, usec_t usec);
/* Observations at or below bound i (Prometheus buckets are cumulative). */
uint64_t histogram_cumulative(const Histogram *h, size_t i);

/* Methods and status classes are fixed, small sets: label values can never
 * grow with traffic. */
#define METRICS_N_METHODS 8             /* GET ... OPTIONS, OTHER */
#define METRICS_N_STATUS_CLASSES 6      /* none, 1xx ... 5xx */

const char *metrics_method_label(size_t method_index);
size_t metrics_method_index(HttpMethod method);
/* "2xx" ...; "none" when no answer was sent (the client went away first).
 * Requests libmicrohttpd rejects itself (malformed) are not counted. */
const char *metrics_status_label(size_t class_index);
size_t metrics_status_class(unsigned status);

typedef struct RouteStats {
        uint64_t requests[METRICS_N_METHODS][METRICS_N_STATUS_CLASSES];
        Histogram duration;
} RouteStats;

/* Per route *name* of the route table (several patterns may share one, as
 * the probe aliases do), plus "unmatched" for 404s: the route label never
 * comes from a raw path. */
typedef struct RequestMetrics {
        const char **labels;            /* the route names, then "unmatched" */
        size_t n_labels;
        size_t *label_of_route;         /* route table index -> label index */
        size_t n_routes;
        RouteStats *stats;              /* per label */
} RequestMetrics;

#define METRICS_UNMATCHED "unmatched"

int request_metrics_init(RequestMetrics *m, const Route *routes, size_t n_routes);
void request_metrics_done(RequestMetrics *m);

/* route_index: into the route table, or SIZE_MAX for no route. */
void request_metrics_observe(RequestMetrics *m, size_t route_index, HttpMethod method,
                             unsigned status, usec_t duration_usec);
