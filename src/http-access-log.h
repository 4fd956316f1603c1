/* SPDX-License-Identifier: MIT */
#pragma once

/* One journal record per finished request: always for errors (5xx), for
 * every request when ACCESS_LOG=true. Records carry BATON_EVENT=http_request,
 * BATON_REQUEST_ID, BATON_ROUTE, BATON_METHOD, BATON_STATUS and
 * BATON_DURATION_MS, so "journalctl -u batond@blue BATON_STATUS=503" finds
 * them.
 *
 * Error records are limited to ACCESS_LOG_ERROR_BURST per second: a
 * database outage under load answers thousands of 503s a second, and the
 * journal should get the news, not the flood. What was held back is
 * counted and reported once the second is over. */

#include <systemd/sd-event.h>

#include "http-server.h"

#define ACCESS_LOG_ERROR_BURST 50

typedef struct AccessLog AccessLog;

int access_log_new(sd_event *event, AccessLog **ret);
AccessLog *access_log_free(AccessLog *a);
DEFINE_POINTER_CLEANUP(AccessLog, access_log_free);

void access_log_set_enabled(AccessLog *a, bool enabled);

/* An HttpRequestLogCallback; userdata is the AccessLog. */
void access_log_request(const HttpRequestRecord *record, void *userdata);

/* The path as it may appear in a log line: control characters, quotes and
 * non-ASCII bytes as \xNN, cut at 200 bytes ("..." appended). */
void access_log_format_path(const char *path, char *buf, size_t size);
