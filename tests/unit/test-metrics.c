/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>
#include <jansson.h>

#include "metrics-exposition.h"
#include "metrics.h"

static void on_nothing(HttpRequest *req, void *userdata) {
}

static const Route routes[] = {
        { "health_live", "/_/health/live", HTTP_GET, 0, on_nothing, NULL },
        { "health_ready", "/_/health/ready", HTTP_GET, 0, on_nothing, NULL },
        { "health_live", "/live", HTTP_GET, 0, on_nothing, NULL },
        { "events_publish", "/api/v1/topics/{topic}/events", HTTP_POST, 0, on_nothing, NULL },
};

static void test_histogram_buckets(void **state) {
        Histogram h = { 0 };

        histogram_observe(&h, 0);               /* <= 0.5 ms */
        histogram_observe(&h, 500);             /* on the bound: still in it */
        histogram_observe(&h, 501);             /* next bucket (1 ms) */
        histogram_observe(&h, 60 * USEC_PER_SEC);       /* only +Inf */
        assert_int_equal(h.count, 4);
        assert_int_equal(h.sum_usec, 501 + 500 + 60 * USEC_PER_SEC);
        assert_int_equal(histogram_cumulative(&h, 0), 2);
        assert_int_equal(histogram_cumulative(&h, 1), 3);
        assert_int_equal(histogram_cumulative(&h, HISTOGRAM_N_BOUNDS - 1), 3);
        assert_int_equal(histogram_cumulative(&h, HISTOGRAM_N_BOUNDS), 4);
}

static void test_labels_are_bounded(void **state) {
        assert_string_equal(metrics_status_label(metrics_status_class(201)), "2xx");
        assert_string_equal(metrics_status_label(metrics_status_class(503)), "5xx");
        assert_string_equal(metrics_status_label(metrics_status_class(0)), "none");
        assert_string_equal(metrics_status_label(metrics_status_class(999)), "none");
        assert_string_equal(metrics_method_label(metrics_method_index(HTTP_POST)), "POST");
        assert_string_equal(metrics_method_label(metrics_method_index(HTTP_OTHER)), "OTHER");
        assert_string_equal(metrics_method_label(metrics_method_index((HttpMethod) 0)), "OTHER");
}

/* Route labels come from the route table's names: aliases share one, and
 * anything without a route is "unmatched", whatever its path. */
static void test_request_metrics_by_route_name(void **state) {
        RequestMetrics m;

        assert_int_equal(request_metrics_init(&m, routes, ELEMENTSOF(routes)), 0);
        assert_int_equal(m.n_labels, 4);
        assert_string_equal(m.labels[0], "health_live");
        assert_string_equal(m.labels[1], "health_ready");
        assert_string_equal(m.labels[2], "events_publish");
        assert_string_equal(m.labels[3], METRICS_UNMATCHED);

        request_metrics_observe(&m, 0, HTTP_GET, 200, 100);
        request_metrics_observe(&m, 2, HTTP_GET, 200, 100);    /* /live: the same label */
        request_metrics_observe(&m, 3, HTTP_POST, 503, 2000);
        request_metrics_observe(&m, SIZE_MAX, HTTP_GET, 404, 50);
        request_metrics_observe(&m, 99, HTTP_GET, 404, 50);     /* out of range: unmatched */

        size_t get = metrics_method_index(HTTP_GET), post = metrics_method_index(HTTP_POST);
        assert_int_equal(m.stats[0].requests[get][2], 2);
        assert_int_equal(m.stats[0].duration.count, 2);
        assert_int_equal(m.stats[2].requests[post][5], 1);
        assert_int_equal(m.stats[3].requests[get][4], 2);
        assert_int_equal(m.stats[1].duration.count, 0);
        request_metrics_done(&m);
}

static char *render(ExpositionFormat format, void (*fill)(Exposition *)) {
        Exposition *e = NULL;
        char *text = NULL;
        size_t size = 0;

        assert_int_equal(exposition_new(format, &e), 0);
        fill(e);
        assert_int_equal(exposition_finish(e, &text, &size), 0);
        assert_int_equal(strlen(text), size);
        exposition_free(e);
        return text;
}

static void fill_sample(Exposition *e) {
        Histogram h = { 0 };

        exposition_family(e, "x_requests_total", METRIC_COUNTER, "Requests.\nSecond line \\ here.");
        exposition_sample(e, (const char *const[]) { "route", "a\"b\\c\nd", "status", "2xx", NULL }, 12);
        exposition_family(e, "x_up", METRIC_GAUGE, "Up.");
        exposition_sample(e, NULL, 1);
        exposition_family(e, "x_seconds", METRIC_HISTOGRAM, "Durations.");
        histogram_observe(&h, 700);
        histogram_observe(&h, 3 * USEC_PER_SEC);
        exposition_histogram(e, (const char *const[]) { "route", "r", NULL }, &h);
        exposition_family(e, "x_start_time_seconds", METRIC_GAUGE, "Start.");
        exposition_sample(e, NULL, 1763700000.125);
}

static void test_text_format(void **state) {
        _cleanup_free_ char *t = render(EXPOSITION_TEXT, fill_sample);

        assert_non_null(strstr(t, "# HELP x_requests_total Requests.\\nSecond line \\\\ here.\n"
                                  "# TYPE x_requests_total counter\n"));
        /* Label values escaped as the format demands. */
        assert_non_null(strstr(t, "x_requests_total{route=\"a\\\"b\\\\c\\nd\",status=\"2xx\"} 12\n"));
        assert_non_null(strstr(t, "# TYPE x_up gauge\nx_up 1\n"));
        /* Cumulative buckets, +Inf, sum in seconds, count. */
        assert_non_null(strstr(t, "x_seconds_bucket{route=\"r\",le=\"0.0005\"} 0\n"));
        assert_non_null(strstr(t, "x_seconds_bucket{route=\"r\",le=\"0.001\"} 1\n"));
        assert_non_null(strstr(t, "x_seconds_bucket{route=\"r\",le=\"2.5\"} 1\n"));
        assert_non_null(strstr(t, "x_seconds_bucket{route=\"r\",le=\"5\"} 2\n"));
        assert_non_null(strstr(t, "x_seconds_bucket{route=\"r\",le=\"+Inf\"} 2\n"));
        assert_non_null(strstr(t, "x_seconds_sum{route=\"r\"} 3.0007\n"));
        assert_non_null(strstr(t, "x_seconds_count{route=\"r\"} 2\n"));
        /* A timestamp keeps its fraction. */
        assert_non_null(strstr(t, "x_start_time_seconds 1763700000.125\n"));
}

static void test_json_format_has_the_same_figures(void **state) {
        _cleanup_free_ char *t = render(EXPOSITION_JSON, fill_sample);
        json_t *j = json_loads(t, 0, NULL), *s, *b;

        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "x_requests_total"), "type")),
                            "counter");
        s = json_array_get(json_object_get(json_object_get(j, "x_requests_total"), "samples"), 0);
        assert_int_equal(json_integer_value(json_object_get(s, "value")), 12);
        assert_string_equal(json_string_value(json_object_get(json_object_get(s, "labels"), "route")),
                            "a\"b\\c\nd");
        s = json_array_get(json_object_get(json_object_get(j, "x_seconds"), "samples"), 0);
        assert_int_equal(json_integer_value(json_object_get(s, "count")), 2);
        assert_true(json_real_value(json_object_get(s, "sum")) == 3.0007);
        b = json_object_get(s, "buckets");
        assert_int_equal(json_array_size(b), HISTOGRAM_N_BOUNDS + 1);
        assert_string_equal(json_string_value(json_object_get(json_array_get(b, 1), "le")), "0.001");
        assert_int_equal(json_integer_value(json_object_get(json_array_get(b, 1), "count")), 1);
        assert_string_equal(json_string_value(json_object_get(json_array_get(b, HISTOGRAM_N_BOUNDS), "le")),
                            "+Inf");
        s = json_array_get(json_object_get(json_object_get(j, "x_start_time_seconds"), "samples"), 0);
        assert_true(json_real_value(json_object_get(s, "value")) == 1763700000.125);
        json_decref(j);
}

static void test_value_format(void **state) {
        char buf[32];

        assert_string_equal(exposition_format_value(0, buf, sizeof(buf)), "0");
        assert_string_equal(exposition_format_value(18446744073709.0, buf, sizeof(buf)), "18446744073709");
        assert_string_equal(exposition_format_value(0.25, buf, sizeof(buf)), "0.25");
        assert_string_equal(exposition_format_value(1.0 / 0.0, buf, sizeof(buf)), "+Inf");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_histogram_buckets),
                cmocka_unit_test(test_labels_are_bounded),
                cmocka_unit_test(test_request_metrics_by_route_name),
                cmocka_unit_test(test_text_format),
                cmocka_unit_test(test_json_format_has_the_same_figures),
                cmocka_unit_test(test_value_format),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
