/* SPDX-License-Identifier: MIT */
#include <assert.h>

#include "metrics.h"

const usec_t histogram_bounds_usec[HISTOGRAM_N_BOUNDS] = HISTOGRAM_BOUNDS_USEC;

void histogram_observe(Histogram *h, usec_t usec) {
        size_t i = 0;

        assert(h);

        while (i < HISTOGRAM_N_BOUNDS && usec > histogram_bounds_usec[i])
                i++;
        h->buckets[i]++;
        h->count++;
        h->sum_usec += usec;
}

uint64_t histogram_cumulative(const Histogram *h, size_t i) {
        uint64_t n = 0;

        assert(h);

        for (size_t j = 0; j <= i && j <= HISTOGRAM_N_BOUNDS; j++)
                n += h->buckets[j];
        return n;
}

static const struct {
        HttpMethod method;
        const char *label;
} methods[METRICS_N_METHODS] = {
        { HTTP_GET, "GET" },         { HTTP_HEAD, "HEAD" },     { HTTP_POST, "POST" },
        { HTTP_PUT, "PUT" },         { HTTP_DELETE, "DELETE" }, { HTTP_PATCH, "PATCH" },
        { HTTP_OPTIONS, "OPTIONS" }, { HTTP_OTHER, "OTHER" },
};

const char *metrics_method_label(size_t i) {
        return i < METRICS_N_METHODS ? methods[i].label : "OTHER";
}

size_t metrics_method_index(HttpMethod method) {
        for (size_t i = 0; i < METRICS_N_METHODS; i++)
                if (methods[i].method == method)
                        return i;
        return METRICS_N_METHODS - 1;
}

static const char *const status_labels[METRICS_N_STATUS_CLASSES] = {
        "none", "1xx", "2xx", "3xx", "4xx", "5xx",
};

const char *metrics_status_label(size_t i) {
        return i < METRICS_N_STATUS_CLASSES ? status_labels[i] : "none";
}

size_t metrics_status_class(unsigned status) {
        return status >= 100 && status <= 599 ? status / 100 : 0;
}

static size_t find_label(const char **labels, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (streq(labels[i], name))
                        return i;
        return SIZE_MAX;
}

int request_metrics_init(RequestMetrics *m, const Route *routes, size_t n_routes) {
        assert(m && routes);

        *m = (RequestMetrics) { 0 };
        m->labels = calloc(n_routes + 1, sizeof(char *));
        m->label_of_route = calloc(n_routes ? n_routes : 1, sizeof(size_t));
        if (!m->labels || !m->label_of_route) {
                request_metrics_done(m);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n_routes; i++) {
                size_t label = find_label(m->labels, m->n_labels, routes[i].name);
                if (label == SIZE_MAX) {
                        label = m->n_labels++;
                        m->labels[label] = routes[i].name;
                }
                m->label_of_route[i] = label;
        }
        m->n_routes = n_routes;
        m->labels[m->n_labels++] = METRICS_UNMATCHED;
        m->stats = calloc(m->n_labels, sizeof(RouteStats));
        if (!m->stats) {
                request_metrics_done(m);
                return -ENOMEM;
        }
        return 0;
}

void request_metrics_done(RequestMetrics *m) {
        free(m->labels);
        free(m->label_of_route);
        free(m->stats);
        *m = (RequestMetrics) { 0 };
}

void request_metrics_observe(RequestMetrics *m, size_t route_index, HttpMethod method,
                             unsigned status, usec_t duration_usec) {
        assert(m);

        /* The last label is "unmatched"; an index past the table (a bug)
         * lands there too rather than out of bounds. */
        size_t label = m->n_labels - 1;
        RouteStats *s;

        if (route_index < m->n_routes)
                label = m->label_of_route[route_index];
        s = &m->stats[label];
        s->requests[metrics_method_index(method)][metrics_status_class(status)]++;
        histogram_observe(&s->duration, duration_usec);
}
