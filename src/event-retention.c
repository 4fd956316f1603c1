/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "event-retention.h"
#include "parse-util.h"
#include "topic-pattern.h"

static int parse_age(const char *s, usec_t *ret) {
        if (streq(s, "forever")) {
                *ret = 0;
                return 0;
        }
        if (parse_duration(s, ret) < 0 || *ret < USEC_PER_SEC)
                return -EINVAL;
        return 0;
}

static int parse_count(const char *s, uint64_t *ret) {
        if (streq(s, "unlimited")) {
                *ret = 0;
                return 0;
        }
        if (parse_uint64(s, ret) < 0 || *ret == 0)
                return -EINVAL;
        return 0;
}

/* One "PATTERN=AGE/COUNT", blanks around it already gone. */
static int parse_rule(char *entry, RetentionRule *ret, char *error, size_t error_size) {
        char *eq = strchr(entry, '='), *slash;

        if (!eq || !(slash = strchr(eq + 1, '/'))) {
                snprintf(error, error_size, "'%.140s' is not PATTERN=AGE/COUNT", entry);
                return -EINVAL;
        }
        *eq = *slash = '\0';
        if (!topic_pattern_valid(entry, strlen(entry))) {
                snprintf(error, error_size, "'%.140s' is not a topic pattern (A-Z, a-z, 0-9, '_', '-' and '*')",
                         entry);
                return -EINVAL;
        }
        if (parse_age(eq + 1, &ret->policy.max_age_usec) < 0) {
                snprintf(error, error_size, "'%.40s' (for %.128s) is not a duration of 1s or more, nor \"forever\"",
                         eq + 1, entry);
                return -EINVAL;
        }
        if (parse_count(slash + 1, &ret->policy.max_events) < 0) {
                snprintf(error, error_size, "'%.40s' (for %.128s) is not a count of 1 or more, nor \"unlimited\"",
                         slash + 1, entry);
                return -EINVAL;
        }
        snprintf(ret->pattern, sizeof(ret->pattern), "%s", entry);
        return 0;
}

static char *strip(char *s) {
        char *end;

        s += strspn(s, " \t");
        end = s + strlen(s);
        while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
                *--end = '\0';
        return s;
}

int retention_table_parse(const char *s, RetentionTable *ret, char *error, size_t error_size) {
        _cleanup_free_ char *copy = NULL;
        RetentionTable t = { 0 };
        char *state = NULL;
        int r;

        assert(s && ret && error);

        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        for (char *entry = strtok_r(copy, ",", &state); entry; entry = strtok_r(NULL, ",", &state)) {
                entry = strip(entry);
                if (*entry == '\0')
                        continue;
                if (t.n >= RETENTION_RULES_MAX) {
                        snprintf(error, error_size, "more than %d entries", RETENTION_RULES_MAX);
                        return -EINVAL;
                }
                r = parse_rule(entry, &t.rules[t.n], error, error_size);
                if (r < 0)
                        return r;
                t.n++;
        }
        *ret = t;
        return 0;
}

RetentionPolicy retention_policy_for(const RetentionTable *table, const RetentionPolicy *defaults,
                                     const char *topic) {
        assert(table && defaults && topic);

        for (size_t i = 0; i < table->n; i++)
                if (topic_pattern_match(table->rules[i].pattern, topic))
                        return table->rules[i].policy;
        return *defaults;
}

bool retention_due(const RetentionPolicy *policy, uint64_t last_id, uint64_t oldest_id,
                   usec_t oldest_age_usec) {
        assert(policy);

        if (oldest_id == 0 || oldest_id > last_id)
                return false;           /* nothing stored */
        if (policy->max_events > 0 && last_id - oldest_id + 1 > policy->max_events)
                return true;
        return policy->max_age_usec > 0 && oldest_age_usec > policy->max_age_usec;
}
