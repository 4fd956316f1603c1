/* SPDX-License-Identifier: MIT */
#pragma once

/* "batond migrate" and "batond migrate --status": the same migration code
 * the daemon runs, driven by a short-lived event loop. Returns 0, or
 * -errno when it failed or --status found problems (logged, or for
 * --status printed). */

#include "config.h"

int migrate_cli(const Config *config, bool status_only);
