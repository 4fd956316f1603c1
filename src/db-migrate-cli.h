/* SPDX-License-Identifier: MIT */
#pragma once

/* "batond migrate" and "batond migrate --status": the same migration code
 * the daemon runs, driven by a short-lived event loop. Returns the exit
 * code (0 done, 1 failed or problems found). */

#include "config.h"

int migrate_cli(const Config *config, bool status_only);
