/* SPDX-License-Identifier: MIT */
#pragma once

/* The sd_notify protocol, one function per message batond sends. Without
 * NOTIFY_SOCKET (not started by systemd) every call is a no-op. Failures are
 * logged at debug level and otherwise ignored: a missing notification must
 * never stop the service. */

#include "util.h"

void notify_ready(void);
void notify_reloading(void);            /* RELOADING=1 with MONOTONIC_USEC= */
void notify_stopping(void);
void notify_watchdog(void);
void notify_extend_timeout(usec_t usec);
void notify_status(const char *format, ...) _printf_(1, 2);

/* WATCHDOG_USEC for this process, or 0 when systemd does not watch us. */
usec_t notify_watchdog_usec(void);
