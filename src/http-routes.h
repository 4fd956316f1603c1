/* SPDX-License-Identifier: MIT */
#pragma once

/* The route table: every endpoint batond serves, in one place. Handlers
 * receive the Manager as userdata. */

#include "manager.h"
#include "http-router.h"

const Route *routes_table(size_t *ret_n);

/* The constant bodies, built once at startup. */
int routes_build_static_responses(Manager *m);
