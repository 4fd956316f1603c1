/* SPDX-License-Identifier: MIT */
#pragma once

/* /metrics (Prometheus text) and /metrics/json, from one report. */

#include "manager.h"

void metrics_handle_metrics(Manager *m, HttpRequest *req);
void metrics_handle_metrics_json(Manager *m, HttpRequest *req);
