/* SPDX-License-Identifier: MIT */
#pragma once

/* Parsers for configuration values. Each returns 0 and writes *ret only on
 * success; on failure it returns -EINVAL (bad syntax) or -ERANGE (too big)
 * and leaves *ret untouched. None of them log: the caller knows the key. */

#include "util.h"

/* "true/false", "yes/no", "on/off", "1/0", case-insensitive. */
int parse_bool(const char *s, bool *ret);

/* Decimal unsigned integer, no sign, no trailing garbage. */
int parse_uint64(const char *s, uint64_t *ret);

/* A duration: a bare number is seconds; suffixes ms, s, m/min, h, d. */
int parse_duration(const char *s, usec_t *ret);

/* A byte count: a bare number is bytes; suffixes K/KiB, M/MiB, G/GiB (1024). */
int parse_size(const char *s, uint64_t *ret);

/* Splits "a, b ,c" at commas into a NULL-ended array of new strings,
 * blanks around each item dropped and empty items skipped (*ret_n of
 * them). Free with list_free(). -ENOMEM. */
int parse_list(const char *s, char ***ret, size_t *ret_n);
char **list_free(char **list);
DEFINE_POINTER_CLEANUP(char *, list_free);

/* Formats a duration for humans in the largest unit that divides it exactly
 * ("250ms", "90s", "2m", "1h"). */
const char *format_duration(char *buf, size_t size, usec_t usec);
#define FORMAT_DURATION_MAX 32
