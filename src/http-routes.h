/* SPDX-License-Identifier: MIT */
#pragma once

/* batond's endpoints, in one table: name, path pattern, methods, flags and
 * handler (matched by http-router.h). Handlers receive the Manager as
 * userdata and hand over to the module that answers. */

#include "manager.h"
#include "http-router.h"

const Route *routes_table(size_t *ret_n);

/* The constant bodies, built once at startup. */
int routes_build_static_responses(Manager *m);
