/* SPDX-License-Identifier: MIT */
#pragma once

/* Topic patterns: a topic name in which '*' stands for any run of
 * characters, the empty one included ("orders-*", "*-audit", "*").
 * Shared by the retention table and, later, authorization claims. Pure. */

#include <stdbool.h>
#include <stddef.h>

/* A topic's characters ([A-Za-z0-9_-]) and '*', 1 to 128 of them. */
bool topic_pattern_valid(const char *s, size_t length);

bool topic_pattern_match(const char *pattern, const char *topic);
