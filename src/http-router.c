/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdio.h>

#include "http-router.h"

static const struct {
        HttpMethod method;
        const char *name;
} method_names[] = {
        { HTTP_GET, "GET" },       { HTTP_HEAD, "HEAD" },       { HTTP_POST, "POST" },
        { HTTP_PUT, "PUT" },       { HTTP_DELETE, "DELETE" },   { HTTP_PATCH, "PATCH" },
        { HTTP_OPTIONS, "OPTIONS" },
};

HttpMethod http_method_from_string(const char *method) {
        assert(method);

        for (size_t i = 0; i < ELEMENTSOF(method_names); i++)
                if (streq(method, method_names[i].name))
                        return method_names[i].method;
        return HTTP_OTHER;
}

const char *router_format_allow(unsigned mask, char *buf, size_t size) {
        size_t len = 0;

        assert(buf);

        buf[0] = '\0';
        if (mask & HTTP_GET)
                mask |= HTTP_HEAD;
        for (size_t i = 0; i < ELEMENTSOF(method_names); i++) {
                if (!(mask & method_names[i].method))
                        continue;
                int n = snprintf(buf + len, size - len, "%s%s", len ? ", " : "", method_names[i].name);
                if (n < 0 || (size_t) n >= size - len)
                        break;
                len += (size_t) n;
        }
        return buf;
}

typedef enum MatchKind {
        MATCH_NONE,
        MATCH_WILDCARD,
        MATCH_EXACT,            /* literal and parameter segments */
} MatchKind;

/* Matches path against pattern segment by segment. */
static MatchKind match_pattern(const char *pattern, const char *path, RouteMatch *m) {
        const char *p = pattern, *s = path;

        m->n_params = 0;
        for (;;) {
                if (p[0] == '*' && p[1] == '\0')
                        return MATCH_WILDCARD;
                if (*p == '{') {
                        const char *close = strchr(p, '}');
                        size_t n = strcspn(s, "/");
                        if (!close || n == 0 || m->n_params >= ROUTE_PARAMS_MAX)
                                return MATCH_NONE;
                        m->params[m->n_params++] = (RouteParam) { .value = s, .length = n };
                        p = close + 1;
                        s += n;
                        continue;
                }
                if (*p != *s)
                        return MATCH_NONE;
                if (*p == '\0')
                        return MATCH_EXACT;
                p++;
                s++;
        }
}

static bool route_takes(const Route *r, HttpMethod method) {
        unsigned methods = r->methods;
        if (methods & HTTP_GET)
                methods |= HTTP_HEAD;
        return (methods & method) != 0;
}

int router_match(const Route *routes, size_t n_routes, const char *path, HttpMethod method,
                 RouteMatch *ret) {
        RouteMatch m = { 0 };
        unsigned allowed = 0, cors_methods = 0;
        bool seen = false;

        assert(routes && path && ret);

        /* Exact and parameter patterns first; a wildcard only when none of
         * them matched the path at all (a 405 beats a catch-all). */
        static const MatchKind passes[] = { MATCH_EXACT, MATCH_WILDCARD };
        for (size_t pass = 0; pass < ELEMENTSOF(passes) && !seen; pass++) {
                for (size_t i = 0; i < n_routes; i++) {
                        if (match_pattern(routes[i].pattern, path, &m) != passes[pass])
                                continue;
                        seen = true;
                        if (route_takes(&routes[i], method)) {
                                m.route = &routes[i];
                                *ret = m;
                                return 0;
                        }
                        allowed |= routes[i].methods;
                        if (routes[i].flags & ROUTE_CORS)
                                cors_methods |= routes[i].methods;
                }
        }
        if (!seen)
                return -ENOENT;
        ret->route = NULL;
        ret->allowed = allowed;
        ret->cors_methods = cors_methods;
        return -EMETHOD;
}
