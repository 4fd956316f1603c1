/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <microhttpd.h>

#include "event-api.h"
#include "health-endpoints.h"
#include "metrics-endpoints.h"
#include "http-routes.h"
#include "sse-ticker.h"
#include "version.h"

static void on_live(HttpRequest *req, void *userdata) {
        Manager *m = userdata;
        /* Never depends on PostgreSQL or NATS: answering proves the process
         * serves, which is all liveness means. */
        http_respond_shared(req, m->live_response);
}

static void on_ready(HttpRequest *req, void *userdata) {
        Manager *m = userdata;
        health_respond_ready(m->health, req);
}

static void on_summary(HttpRequest *req, void *userdata) {
        Manager *m = userdata;
        http_respond_shared(req, m->summary_response);
}

static void on_health(HttpRequest *req, void *userdata) {
        health_handle_health(userdata, req);
}

static void on_health_db(HttpRequest *req, void *userdata) {
        health_handle_health_db(userdata, req);
}

static void on_deployment(HttpRequest *req, void *userdata) {
        health_handle_deployment(userdata, req);
}

static void on_metrics(HttpRequest *req, void *userdata) {
        metrics_handle_metrics(userdata, req);
}

static void on_metrics_json(HttpRequest *req, void *userdata) {
        metrics_handle_metrics_json(userdata, req);
}

static void on_stream_test(HttpRequest *req, void *userdata) {
        Manager *m = userdata;
        sse_ticker_handle(m->streams, req, m->config->stream_test_max_duration_usec,
                           m->config->deployment_color);
}

static void on_publish(HttpRequest *req, void *userdata) {
        Manager *m = userdata;
        event_api_handle_publish(m->publisher, m->config->max_event_bytes, req);
}

static EventAuth event_auth(const Manager *m) {
        return (EventAuth) {
                .api_token = m->config->api_token,
                .jwt_keys = m->jwt_keys,
                .anonymous_subscribe = m->config->anonymous_subscribe,
        };
}

static void on_publish_admit(HttpRequest *req, void *userdata) {
        Manager *m = userdata;
        EventAuth auth = event_auth(m);
        event_api_admit_publish(&auth, req);
}

static void on_history(HttpRequest *req, void *userdata) {
        Manager *m = userdata;
        EventAuth auth = event_auth(m);
        event_api_handle_history(&auth, m->db_read, m->config->database_query_timeout_usec, req);
}

static void on_stream(HttpRequest *req, void *userdata) {
        Manager *m = userdata;
        EventAuth auth = event_auth(m);
        event_api_handle_stream(&auth, m->fanout, req);
}

static void on_api_unknown(HttpRequest *req, void *userdata) {
        http_respond_error(req, MHD_HTTP_NOT_FOUND, "not_found", "no such resource: %s",
                           http_request_path(req));
}

/* Probes and reports answer 503 as a verdict, not as a failure. */
#define PROBE (ROUTE_OPS | ROUTE_QUIET)

static const Route routes[] = {
        /* Probes: /_/health/... is batond's own namespace; the short
         * aliases suit other ecosystems' defaults (Kubernetes, Spring). */
        { "health_live",       "/_/health/live",     HTTP_GET, PROBE, on_live, NULL },
        { "health_ready",      "/_/health/ready",    HTTP_GET, PROBE, on_ready, NULL },
        /* 503 until the first READY=1, then the same as ready. */
        { "health_startup",    "/_/health/startup",  HTTP_GET, PROBE, on_ready, NULL },
        { "health_summary",    "/_/health",          HTTP_GET, PROBE, on_summary, NULL },
        { "health_live",       "/live",              HTTP_GET, PROBE, on_live, NULL },
        { "health_ready",      "/ready",             HTTP_GET, PROBE, on_ready, NULL },
        { "health_live",       "/health/live",       HTTP_GET, PROBE, on_live, NULL },
        { "health_ready",      "/health/ready",      HTTP_GET, PROBE, on_ready, NULL },

        /* Reports for operators and the drain helper. */
        { "health",            "/health",            HTTP_GET, PROBE, on_health, NULL },
        { "health_db",         "/health/db",         HTTP_GET, PROBE, on_health_db, NULL },
        { "health_deployment", "/health/deployment", HTTP_GET, PROBE, on_deployment, NULL },
        { "metrics",           "/metrics",           HTTP_GET, ROUTE_OPS, on_metrics, NULL },
        { "metrics_json",      "/metrics/json",      HTTP_GET, ROUTE_OPS, on_metrics_json, NULL },

        { "stream_test",    "/stream/test",      HTTP_GET, ROUTE_NEEDS_READY | ROUTE_EVENT_STREAM,
          on_stream_test, NULL },

        /* The event API, which browser pages on other origins may call
         * (CORS_ORIGINS: their preflights are answered for these paths). */
        { "events_publish", "/api/v1/topics/{topic}/events", HTTP_POST,
          ROUTE_NEEDS_READY | ROUTE_ACCEPTS_BODY | ROUTE_EVENT_BODY | ROUTE_CORS, on_publish, on_publish_admit },
        { "events_history", "/api/v1/topics/{topic}/events", HTTP_GET, ROUTE_NEEDS_READY | ROUTE_CORS,
          on_history, NULL },
        { "events_stream",  "/api/v1/topics/{topic}/stream", HTTP_GET,
          ROUTE_NEEDS_READY | ROUTE_EVENT_STREAM | ROUTE_CORS, on_stream, NULL },

        /* Everything under /api answers 503 until ready, then 404 unless a
         * more precise route above takes it. */
        { "api_unknown",    "/api/*",            HTTP_ANY_METHOD, ROUTE_NEEDS_READY, on_api_unknown, NULL },
};

const Route *routes_table(size_t *ret_n) {
        assert(ret_n);

        *ret_n = ELEMENTSOF(routes);
        return routes;
}

int routes_build_static_responses(Manager *m) {
        int r;

        assert(m);

        r = http_shared_response_new(MHD_HTTP_OK, json_pack("{s:s}", "status", "UP"), &m->live_response);
        if (r < 0)
                return r;
        /* The legacy summary: always 200 while the process is up. */
        return http_shared_response_new(MHD_HTTP_OK,
                                        json_pack("{s:s, s:s, s:s, s:{s:b, s:b}}",
                                                  "status", "UP",
                                                  "version", BATON_VERSION,
                                                  "color", m->config->deployment_color,
                                                  "components",
                                                  "database", 1,
                                                  "nats", m->config->nats_enabled),
                                        &m->summary_response);
}
