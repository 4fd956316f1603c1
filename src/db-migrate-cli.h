/* SPDX-License-Identifier: MIT */
#pragma once

/* "batond migrate", "batond migrate --status" and "batond migrate
 * --plan": the same migration code the daemon runs, driven by a
 * short-lived event loop. Returns 0, or -errno when it failed, --status
 * found problems or --plan found that this batond would refuse to start
 * (logged, or printed). */

#include "config.h"

typedef enum MigrateCliMode {
        MIGRATE_CLI_APPLY,
        MIGRATE_CLI_STATUS,
        MIGRATE_CLI_PLAN,
} MigrateCliMode;

int migrate_cli(const Config *config, MigrateCliMode mode);
