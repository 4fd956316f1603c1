/* SPDX-License-Identifier: MIT */
#pragma once

/* The request target (RFC 9112 3.2), as libmicrohttpd hands it over. Pure
 * logic, no I/O: which targets batond refuses before routing, and which
 * path an absolute-form target names. */

#include "util.h"

/* The target as sent, before libmicrohttpd splits off the query and
 * decodes it: refused (-EBADMSG) when it holds a byte that no URI may
 * contain unencoded (RFC 3986 2: space, other controls, DEL). Bytes past
 * 0x7f are left to the router (an unknown path is a 404, not a 400).
 * libmicrohttpd, told not to be strict, takes "GET /a b HTTP/1.1" with
 * "/a b" as the target, so that batond can answer it with its own 400. */
int http_target_check(const char *raw, size_t length);

/* The path to route. An origin-form target ("/x") is its own path; an
 * absolute-form one ("http://host:8080/x", RFC 9112 3.2.2, which a server
 * must accept) names the path after its authority, or "/" when it has
 * none. Any other target (authority-form "host:443", asterisk-form "*")
 * is returned as it is: no route matches it. Returns a pointer into
 * 'target', or to a static "/". */
const char *http_target_path(const char *target);
