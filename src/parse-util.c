/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <strings.h>

#include "parse-util.h"

int parse_bool(const char *s, bool *ret) {
        assert(s && ret);

        static const char *const yes[] = { "1", "true", "yes", "on" };
        static const char *const no[] = { "0", "false", "no", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcasecmp(s, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

/* Reads the leading digits of s into *ret and points *end past them. */
static int parse_digits(const char *s, uint64_t *ret, const char **end) {
        uint64_t v = 0;
        const char *p = s;

        if (!isdigit((unsigned char) *p))
                return -EINVAL;
        for (; isdigit((unsigned char) *p); p++) {
                unsigned digit = (unsigned) (*p - '0');
                if (v > (UINT64_MAX - digit) / 10)
                        return -ERANGE;
                v = v * 10 + digit;
        }
        *ret = v;
        *end = p;
        return 0;
}

int parse_uint64(const char *s, uint64_t *ret) {
        const char *end;
        uint64_t v;
        int r;

        assert(s && ret);

        r = parse_digits(s, &v, &end);
        if (r < 0)
                return r;
        if (*end != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

typedef struct UnitSuffix {
        const char *suffix;
        uint64_t factor;
} UnitSuffix;

/* Parses "<digits><suffix>" where suffix is one of units (an empty suffix
 * must be listed to allow a bare number). */
static int parse_with_units(const char *s, const UnitSuffix *units, size_t n_units, uint64_t *ret) {
        const char *end;
        uint64_t v;
        int r;

        r = parse_digits(s, &v, &end);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_units; i++) {
                if (strcasecmp(end, units[i].suffix) != 0)
                        continue;
                if (units[i].factor != 0 && v > UINT64_MAX / units[i].factor)
                        return -ERANGE;
                *ret = v * units[i].factor;
                return 0;
        }
        return -EINVAL;
}

int parse_duration(const char *s, usec_t *ret) {
        assert(s && ret);

        static const UnitSuffix units[] = {
                { "",    USEC_PER_SEC },
                { "ms",  USEC_PER_MSEC },
                { "s",   USEC_PER_SEC },
                { "sec", USEC_PER_SEC },
                { "m",   60 * USEC_PER_SEC },
                { "min", 60 * USEC_PER_SEC },
                { "h",   3600 * USEC_PER_SEC },
                { "d",   24 * 3600 * USEC_PER_SEC },
        };
        uint64_t v;
        int r;

        r = parse_with_units(s, units, ELEMENTSOF(units), &v);
        if (r < 0)
                return r;
        if (v == USEC_INFINITY)
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        assert(s && ret);

        static const UnitSuffix units[] = {
                { "",    1 },
                { "B",   1 },
                { "K",   1024ULL },
                { "KiB", 1024ULL },
                { "M",   1024ULL * 1024 },
                { "MiB", 1024ULL * 1024 },
                { "G",   1024ULL * 1024 * 1024 },
                { "GiB", 1024ULL * 1024 * 1024 },
        };

        return parse_with_units(s, units, ELEMENTSOF(units), ret);
}

const char *format_duration(char *buf, size_t size, usec_t usec) {
        uint64_t ms = usec / USEC_PER_MSEC;

        assert(buf);

        if (usec == USEC_INFINITY)
                snprintf(buf, size, "infinity");
        else if (usec == 0)
                snprintf(buf, size, "0s");
        else if (ms < MSEC_PER_SEC || ms % MSEC_PER_SEC != 0)
                snprintf(buf, size, "%" PRIu64 "ms", ms);
        else {
                uint64_t sec = ms / MSEC_PER_SEC;
                if (sec < 60 || sec % 60 != 0)
                        snprintf(buf, size, "%" PRIu64 "s", sec);
                else if (sec % 3600 != 0)
                        snprintf(buf, size, "%" PRIu64 "m", sec / 60);
                else
                        snprintf(buf, size, "%" PRIu64 "h", sec / 3600);
        }
        return buf;
}

char **list_free(char **list) {
        if (!list)
                return NULL;
        for (char **p = list; *p; p++)
                free(*p);
        return mfree(list);
}

int parse_list(const char *s, char ***ret, size_t *ret_n) {
        _cleanup_(list_freep) char **list = NULL;
        size_t n = 0;

        assert(s && ret && ret_n);

        list = calloc(strlen(s) / 2 + 2, sizeof(char *));       /* at most one item per two bytes */
        if (!list)
                return -ENOMEM;
        for (const char *p = s; *p; ) {
                size_t len = strcspn(p, ",");
                const char *start = p, *end = p + len;
                while (start < end && (*start == ' ' || *start == '\t'))
                        start++;
                while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
                        end--;
                if (end > start) {
                        list[n] = strndup(start, (size_t) (end - start));
                        if (!list[n])
                                return -ENOMEM;
                        n++;
                }
                p += len;
                if (*p == ',')
                        p++;
        }
        *ret = TAKE_PTR(list);
        *ret_n = n;
        return 0;
}
