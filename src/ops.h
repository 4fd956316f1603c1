/* SPDX-License-Identifier: MIT */
#pragma once

/* The operator's endpoints beyond the probes: the full health report
 * (/health, /health/db), the deployment status the drain helper polls
 * (/health/deployment) and the metrics (/metrics, /metrics/json). */

#include "manager.h"

void ops_handle_health(Manager *m, HttpRequest *req);
void ops_handle_health_db(Manager *m, HttpRequest *req);
void ops_handle_deployment(Manager *m, HttpRequest *req);
void ops_handle_metrics(Manager *m, HttpRequest *req);
void ops_handle_metrics_json(Manager *m, HttpRequest *req);

/* The deployment endpoint's "status": starting, ready, not_ready, draining. */
const char *ops_deployment_status(bool started, bool ready, bool draining);
