/* SPDX-License-Identifier: MIT */
#pragma once

/* Logging. Under systemd (JOURNAL_STREAM names our stderr) records go to the
 * journal natively, with a priority and structured fields; otherwise one
 * plain line per record goes to stderr. Safe to call from any thread: the
 * level is atomic and each record is written with a single call.
 *
 * The log_* macros check the level before formatting anything, and return
 * -abs(error) so that "return log_error_errno(r, ...)" logs and propagates.
 * "%m" in the format is strerror(error) (errno itself when error is 0), as
 * in systemd: log_error_errno(r, "Failed to bind %s: %m", address). */

#include <stdlib.h>
#include <syslog.h>

#include "util.h"

void log_open(void);

void log_set_max_level(int level);
int log_get_max_level(void);

/* Added to every record as BATON_COLOR=; set once at startup. */
void log_set_color(const char *color);

/* "debug", "info", "notice", "warning"/"warn", "error"/"err"; -EINVAL otherwise. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);

/* fields: NULL or a NULL-terminated array of "KEY=value" journal fields. */
int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *const *fields, const char *format, ...) _printf_(7, 8);

/* __extension__: "%m" is a glibc extension, which -Wpedantic would flag at
 * every call; the format is still checked otherwise. */
#define log_full(level, error, fields, ...)                                             \
        (__extension__ (log_get_max_level() >= (level)                                  \
                 ? log_internal((level), (error), __FILE__, __LINE__, __func__, (fields), \
                                __VA_ARGS__)                                            \
                 : -abs(error)))

/* A record that marks a step of the service's life, with BATON_EVENT=<event>
 * for "journalctl BATON_EVENT=ready"; event must be a string literal. */
#define log_event(level, event, ...)                                                    \
        log_full((level), 0, ((const char *const[]) { "BATON_EVENT=" event, NULL }), __VA_ARGS__)

#define log_debug(...)              log_full(LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...)               log_full(LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_notice(...)             log_full(LOG_NOTICE, 0, NULL, __VA_ARGS__)
#define log_warning(...)            log_full(LOG_WARNING, 0, NULL, __VA_ARGS__)
#define log_error(...)              log_full(LOG_ERR, 0, NULL, __VA_ARGS__)
#define log_debug_errno(e, ...)     log_full(LOG_DEBUG, (e), NULL, __VA_ARGS__)
#define log_warning_errno(e, ...)   log_full(LOG_WARNING, (e), NULL, __VA_ARGS__)
#define log_error_errno(e, ...)     log_full(LOG_ERR, (e), NULL, __VA_ARGS__)

/* For allocation failures with nothing more to say; returns -ENOMEM. */
#define log_oom()                   log_error_errno(-ENOMEM, "Out of memory.")
