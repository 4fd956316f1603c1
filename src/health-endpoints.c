/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <microhttpd.h>

#include "event-api.h"
#include "health-endpoints.h"
#include "lifecycle.h"
#include "metrics-process.h"
#include "version.h"

static MemoryCheck memory_check(void) {
        MemoryCheck mc = { 0 };
        MemoryUsage mu;
        int r = memory_usage_read(&mu);

        if (r < 0) {
                snprintf(mc.error, sizeof(mc.error), "cannot read memory use: %s", strerror(-r));
                return mc;
        }
        mc.read = true;
        mc.used_bytes = mu.used_bytes;
        mc.limit_bytes = mu.limit_bytes;
        mc.source = memory_source_to_string(mu.source);
        return mc;
}

/* Counts without the request asking (and its connection): a drain helper
 * polling an idle instance must read zero. */
static HttpCounters counters_without_self(const Manager *m) {
        HttpCounters c = http_server_counters(m->http);

        if (c.active_requests > 0)
                c.active_requests--;
        if (c.active_connections > 0)
                c.active_connections--;
        return c;
}

static usec_t uptime_usec(const Manager *m) {
        return now_usec(CLOCK_MONOTONIC) - m->start_monotonic_usec;
}

void health_handle_health(Manager *m, HttpRequest *req) {
        assert(m && req);

        HttpCounters c = counters_without_self(m);
        FullHealth h = {
                .snapshot = health_snapshot(m->health),
                .memory = memory_check(),
                .server = {
                        .draining = drain_active(m->drain),
                        .connections = c.active_connections,
                        .requests = c.active_requests,
                        .streams = c.active_streams,
                },
                .version = BATON_VERSION,
                .color = m->config->deployment_color,
                .uptime_usec = uptime_usec(m),
        };
        OverallHealth overall = OVERALL_UNHEALTHY;
        json_t *body = full_health_to_json(&h, &overall);

        http_respond_json(req, overall == OVERALL_UNHEALTHY ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK,
                          body);
}

void health_handle_health_db(Manager *m, HttpRequest *req) {
        assert(m && req);

        const HealthSnapshot *s = health_snapshot(m->health);
        bool up = s->database.checked && s->database.up;

        http_respond_json(req, up ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                          health_database_to_json(s));
}

const char *health_deployment_status(bool started, bool ready, bool draining) {
        if (draining)
                return "draining";
        if (!started)
                return "starting";
        return ready ? "ready" : "not_ready";
}

void health_handle_deployment(Manager *m, HttpRequest *req) {
        assert(m && req);

        const char *token = m->config->deployment_token;
        bool draining = drain_active(m->drain);
        HttpCounters c;

        if (isempty(token)) {
                http_respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "not_configured",
                                   "the deployment endpoint is off: set DEPLOYMENT_TOKEN, or the "
                                   "credential deployment-token");
                return;
        }
        if (!event_api_authorized(http_request_header(req, MHD_HTTP_HEADER_AUTHORIZATION), token)) {
                http_respond_error(req, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                                   "the deployment endpoint needs Authorization: Bearer <DEPLOYMENT_TOKEN>");
                http_request_add_response_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
                return;
        }
        c = counters_without_self(m);
        http_respond_json(req, MHD_HTTP_OK, json_pack(
                "{s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:b, s:b}",
                "status", health_deployment_status(lifecycle_state(m->lifecycle) != LIFECYCLE_STARTING &&
                                                   lifecycle_state(m->lifecycle) != LIFECYCLE_FAILED,
                                                   health_ready(m->health), draining),
                "version", BATON_VERSION,
                "deploymentColor", m->config->deployment_color,
                "port", (int) http_server_public_port(m->http),
                "uptimeSeconds", (json_int_t) (uptime_usec(m) / USEC_PER_SEC),
                "activeRequests", (json_int_t) c.active_requests,
                "activeStreams", (json_int_t) c.active_streams,
                "activeConnections", (json_int_t) c.active_connections,
                "draining", draining,
                /* Nothing would be cut by a stop now; idle keep-alive
                 * connections do not count (closing them loses nothing). */
                "readyForShutdown", c.active_requests == 0 && c.active_streams == 0));
}
