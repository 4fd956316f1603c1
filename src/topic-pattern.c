/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <string.h>

#include "event-format.h"
#include "topic-pattern.h"

bool topic_pattern_valid(const char *s, size_t length) {
        assert(s);

        if (length < 1 || length > TOPIC_NAME_MAX)
                return false;
        for (size_t i = 0; i < length; i++)
                if (s[i] != '*' && !topic_name_valid(s + i, 1))
                        return false;
        return true;
}

/* Iterative, with one backtracking point (the last '*'): linear in the
 * topic for each star, never exponential. */
bool topic_pattern_match(const char *pattern, const char *topic) {
        const char *p = pattern, *t = topic, *star = NULL, *resume = NULL;

        assert(pattern && topic);

        while (*t) {
                if (*p == '*') {
                        star = p++;
                        resume = t;
                } else if (*p == *t) {
                        p++;
                        t++;
                } else if (star) {
                        p = star + 1;
                        t = ++resume;
                } else
                        return false;
        }
        while (*p == '*')
                p++;
        return *p == '\0';
}
