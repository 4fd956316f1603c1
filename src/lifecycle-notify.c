/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "lifecycle-notify.h"

static void send_message(const char *message) {
        int r = sd_notify(0, message);
        if (r < 0)
                log_debug_errno(r, "Failed to send sd_notify message '%s', ignoring: %m", message);
}

void notify_ready(void) {
        send_message("READY=1");
}

/* systemd 252 has no Type=notify-reload, but it honours RELOADING=1 for
 * Type=notify and waits for READY=1; MONOTONIC_USEC lets it order the reload
 * against the signal that caused it. */
void notify_reloading(void) {
        char message[64];

        snprintf(message, sizeof(message), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
                 now_usec(CLOCK_MONOTONIC));
        send_message(message);
}

void notify_stopping(void) {
        send_message("STOPPING=1");
}

void notify_watchdog(void) {
        send_message("WATCHDOG=1");
}

void notify_extend_timeout(usec_t usec) {
        char message[64];

        snprintf(message, sizeof(message), "EXTEND_TIMEOUT_USEC=%" PRIu64, usec);
        send_message(message);
}

void notify_status(const char *format, ...) {
        char message[512];
        int n;
        va_list ap;

        n = snprintf(message, sizeof(message), "STATUS=");
        va_start(ap, format);
        (void) vsnprintf(message + n, sizeof(message) - (size_t) n, format, ap);
        va_end(ap);
        /* STATUS= is a single line: a newline would start another assignment. */
        for (char *p = message; *p; p++)
                if (*p == '\n' || *p == '\r')
                        *p = ' ';
        send_message(message);
}

usec_t notify_watchdog_usec(void) {
        uint64_t usec = 0;

        if (sd_watchdog_enabled(0, &usec) <= 0)
                return 0;
        return usec;
}
