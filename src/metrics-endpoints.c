/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <microhttpd.h>

#include "metrics-endpoints.h"
#include "metrics-report.h"

/* The prometheus text format's content type, version included: scrapers
 * negotiate on it. */
#define PROMETHEUS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

static void respond_metrics(Manager *m, HttpRequest *req, ExpositionFormat format) {
        char *text = NULL;
        size_t size = 0;
        int r = metrics_report(m, format, &text, &size);

        if (r < 0) {
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                                   "cannot collect the metrics: %s", strerror(-r));
                return;
        }
        if (format == EXPOSITION_TEXT)
                http_respond_text(req, MHD_HTTP_OK, PROMETHEUS_CONTENT_TYPE, text, size);
        else
                http_respond_json_text(req, MHD_HTTP_OK, text, size);
}

void metrics_handle_metrics(Manager *m, HttpRequest *req) {
        assert(m && req);

        respond_metrics(m, req, EXPOSITION_TEXT);
}

void metrics_handle_metrics_json(Manager *m, HttpRequest *req) {
        assert(m && req);

        respond_metrics(m, req, EXPOSITION_JSON);
}
