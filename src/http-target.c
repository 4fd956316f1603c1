/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <strings.h>

#include "http-target.h"

int http_target_check(const char *raw, size_t length) {
        assert(raw);

        for (size_t i = 0; i < length; i++) {
                unsigned char c = (unsigned char) raw[i];
                if (c <= 0x20 || c == 0x7f)
                        return -EBADMSG;
        }
        return 0;
}

/* RFC 3986 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). Only
 * http and https name something batond serves; other schemes stay as they
 * are and match no route. */
static size_t absolute_form_prefix(const char *target) {
        static const char *const schemes[] = { "http://", "https://" };

        for (size_t i = 0; i < ELEMENTSOF(schemes); i++) {
                size_t n = strlen(schemes[i]);
                if (strncasecmp(target, schemes[i], n) == 0)
                        return n;
        }
        return 0;
}

const char *http_target_path(const char *target) {
        size_t prefix;
        const char *path;

        assert(target);

        if (target[0] == '/')
                return target;
        prefix = absolute_form_prefix(target);
        if (prefix == 0)
                return target;
        /* The authority ends at the first '/' (the query was split off
         * already); userinfo and port are part of it. */
        path = strchr(target + prefix, '/');
        return path ? path : "/";
}
