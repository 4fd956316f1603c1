/* SPDX-License-Identifier: MIT */
#pragma once

/* How long events are kept, decided in pure code (the pruner in
 * event-pruner.c carries it out): a global policy, EVENT_RETENTION_MAX_AGE
 * and EVENT_RETENTION_MAX_EVENTS, and per-topic overrides in
 * EVENT_RETENTION_TOPICS, a table of
 *
 *     PATTERN=AGE/COUNT, ...
 *
 * where PATTERN is a topic pattern (topic-pattern.h), AGE a duration or
 * "forever" and COUNT a number of events or "unlimited". The first
 * pattern that matches a topic decides for it; a topic no pattern matches
 * has the global policy. Pruning deletes only the oldest events of a
 * topic (a prefix of its ids), so what remains is always contiguous. */

#include <stdint.h>

#include "event-format.h"
#include "util.h"

typedef struct RetentionPolicy {
        usec_t max_age_usec;            /* 0: no limit by age */
        uint64_t max_events;            /* 0: no limit by count */
} RetentionPolicy;

#define RETENTION_RULES_MAX 64

typedef struct RetentionRule {
        char pattern[TOPIC_NAME_MAX + 1];
        RetentionPolicy policy;
} RetentionRule;

typedef struct RetentionTable {
        RetentionRule rules[RETENTION_RULES_MAX];
        size_t n;
} RetentionTable;

/* Parses EVENT_RETENTION_TOPICS ("" is an empty table). -EINVAL with a
 * sentence naming the entry in 'error'. */
int retention_table_parse(const char *s, RetentionTable *ret, char *error, size_t error_size);

/* The policy of a topic: its first matching rule's, else the default. */
RetentionPolicy retention_policy_for(const RetentionTable *table, const RetentionPolicy *defaults,
                                     const char *topic);

/* Whether a topic has events the policy no longer keeps: its oldest event
 * (oldest_id, 0 when it has none, oldest_age_usec old) is older than the
 * age limit, or it has more than max_events ids (last_id - oldest_id + 1,
 * an upper bound when rows were deleted by hand). */
bool retention_due(const RetentionPolicy *policy, uint64_t last_id, uint64_t oldest_id,
                   usec_t oldest_age_usec);
