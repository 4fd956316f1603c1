/* SPDX-License-Identifier: MIT */
#pragma once

/* Writes metric families in one of two forms from the same calls, so that
 * /metrics and /metrics/json can never disagree:
 *
 *   Prometheus text exposition (version 0.0.4):
 *     # HELP baton_http_requests_total ...
 *     # TYPE baton_http_requests_total counter
 *     baton_http_requests_total{route="events_publish",method="POST",status="2xx"} 12
 *
 *   JSON:
 *     {"baton_http_requests_total": {"type": "counter", "help": "...",
 *       "samples": [{"labels": {"route": "events_publish", ...}, "value": 12}]}, ...}
 *     histogram samples: {"labels": {...}, "buckets": [{"le": "0.0005", "count": 3}, ...,
 *                         {"le": "+Inf", "count": 9}], "sum": 0.0123, "count": 9}
 *
 * Pure formatting, no I/O. An allocation failure is remembered and reported
 * by exposition_finish(); the calls in between need no checks. */

#include "metrics.h"

typedef enum ExpositionFormat {
        EXPOSITION_TEXT,
        EXPOSITION_JSON,
} ExpositionFormat;

typedef enum MetricType {
        METRIC_COUNTER,
        METRIC_GAUGE,
        METRIC_HISTOGRAM,
} MetricType;

typedef struct Exposition Exposition;

int exposition_new(ExpositionFormat format, Exposition **ret);
Exposition *exposition_free(Exposition *e);
DEFINE_POINTER_CLEANUP(Exposition, exposition_free);

/* Starts a family; the samples that follow belong to it. */
void exposition_family(Exposition *e, const char *name, MetricType type, const char *help);

/* labels: NULL, or a NULL-terminated list of name, value, name, value... */
void exposition_sample(Exposition *e, const char *const *labels, double value);
void exposition_histogram(Exposition *e, const char *const *labels, const Histogram *h);

/* A family of one unlabelled sample: most gauges and counters. */
void exposition_scalar(Exposition *e, const char *name, MetricType type, const char *help, double value);

/* The serialised result (malloc()ed, NUL-terminated); -ENOMEM if anything
 * failed on the way. */
int exposition_finish(Exposition *e, char **ret_text, size_t *ret_size);

/* The text form of a sample value: integers without a fraction, others with
 * up to 15 significant digits. buf: at least 32 bytes. */
const char *exposition_format_value(double value, char *buf, size_t size);
