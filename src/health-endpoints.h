/* SPDX-License-Identifier: MIT */
#pragma once

/* The operator's health endpoints beyond the probes: the full report
 * (/health), the database's (/health/db) and the deployment status the
 * drain helper polls (/health/deployment). */

#include "manager.h"

void health_handle_health(Manager *m, HttpRequest *req);
void health_handle_health_db(Manager *m, HttpRequest *req);
void health_handle_deployment(Manager *m, HttpRequest *req);

/* The deployment endpoint's "status": starting, ready, not_ready, draining. */
const char *health_deployment_status(bool started, bool ready, bool draining);
