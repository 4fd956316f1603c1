/* SPDX-License-Identifier: MIT */
#pragma once

/* The request target (RFC 9112 3.2), as libmicrohttpd hands it over. Pure
 * logic, no I/O: which path an absolute-form target names. */

#include "util.h"

/* The path to route. An origin-form target ("/x") is its own path; an
 * absolute-form one ("http://host:8080/x", RFC 9112 3.2.2, which a server
 * must accept) names the path after its authority, or "/" when it has
 * none. Any other target (authority-form "host:443", asterisk-form "*")
 * is returned as it is: no route matches it. Returns a pointer into
 * 'target', or to a static "/". */
const char *http_target_path(const char *target);
