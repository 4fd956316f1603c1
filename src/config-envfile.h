/* SPDX-License-Identifier: MIT */
#pragma once

/* Parser for KEY=value files in the subset of systemd's EnvironmentFile=
 * syntax that both understand the same way, so one file can serve batond
 * (--config) and a unit (EnvironmentFile=):
 *
 *   # comment            ; comment           (blank lines are ignored)
 *   KEY=value            surrounding blanks trimmed
 *   KEY="value"          \" \\ \$ \` escapes inside double quotes
 *   KEY='value'          taken literally
 *
 * KEY is [A-Za-z_][A-Za-z0-9_]*. */

#include "util.h"

typedef int (*EnvFileCallback)(const char *key, const char *value, unsigned line, void *userdata);

/* Calls cb for every assignment in text, in order. Stops at the first
 * syntax error (returns -EINVAL and writes *ret_line and a reason to
 * *ret_reason, a static string) or at the first negative value cb returns. */
int envfile_parse(const char *text, EnvFileCallback cb, void *userdata,
                  unsigned *ret_line, const char **ret_reason);
