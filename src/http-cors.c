/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <strings.h>

#include "http-cors.h"

CorsPolicy *cors_policy_free(CorsPolicy *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_origins; i++)
                free(p->origins[i]);
        free(p->origins);
        return mfree(p);
}

#define NOT_AN_ORIGIN "is not an origin: scheme://host or scheme://host:port, without a path " \
                      "(not even a trailing slash)"

static bool is_scheme_char(char c) {
        return isalnum((unsigned char) c) || c == '+' || c == '-' || c == '.';
}

static bool is_host_char(char c) {
        return isalnum((unsigned char) c) || c == '-' || c == '.' || c == '_';
}

/* A port as a browser serialises it: 1 to 65535, no leading zero. */
static bool parse_port(const char *s, size_t n, unsigned *ret) {
        unsigned v = 0;

        if (n == 0 || n > 5 || s[0] == '0')
                return false;
        for (size_t i = 0; i < n; i++) {
                if (!isdigit((unsigned char) s[i]))
                        return false;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        if (v > 65535)
                return false;
        *ret = v;
        return true;
}

static bool default_port(const char *scheme, size_t n, unsigned port) {
        if ((n == 4 && strncasecmp(scheme, "http", n) == 0) || (n == 2 && strncasecmp(scheme, "ws", n) == 0))
                return port == 80;
        if ((n == 5 && strncasecmp(scheme, "https", n) == 0) || (n == 3 && strncasecmp(scheme, "wss", n) == 0))
                return port == 443;
        return false;
}

/* Checks one origin of the list, n bytes at s (RFC 6454 serialisation:
 * scheme "://" host [":" port]); NULL when it is one, else why not. */
static const char *origin_check(const char *s, size_t n) {
        size_t i = 0, scheme_length, host;
        unsigned port;

        if (n == 4 && strncasecmp(s, "null", 4) == 0)
                return "is not allowed: 'null' is the origin of sandboxed pages, local files and "
                       "some redirects, which any page can arrange";
        if (!isalpha((unsigned char) s[0]))
                return NOT_AN_ORIGIN;
        while (i < n && is_scheme_char(s[i]))
                i++;
        scheme_length = i;
        if (n - i < 3 || memcmp(s + i, "://", 3) != 0)
                return NOT_AN_ORIGIN;
        i += 3;
        host = i;
        if (i < n && s[i] == '[') {             /* an IPv6 literal */
                while (++i < n && (isxdigit((unsigned char) s[i]) || s[i] == ':' || s[i] == '.'))
                        ;
                if (i >= n || s[i] != ']' || i == host + 1)
                        return NOT_AN_ORIGIN;
                i++;
        } else
                while (i < n && is_host_char(s[i]))
                        i++;
        if (i == host)
                return NOT_AN_ORIGIN;
        if (i < n && s[i] == ':') {
                if (!parse_port(s + i + 1, n - i - 1, &port))
                        return NOT_AN_ORIGIN;
                if (default_port(s, scheme_length, port))
                        return "has its scheme's default port, which browsers leave out of Origin: "
                               "leave it out too";
                i = n;
        }
        return i == n ? NULL : NOT_AN_ORIGIN;
}

static bool is_blank(char c) {
        return c == ' ' || c == '\t';
}

int cors_policy_parse(const char *spec, CorsPolicy **ret, const char **ret_problem,
                      const char **ret_item, size_t *ret_item_length) {
        _cleanup_(cors_policy_freep) CorsPolicy *p = NULL;
        size_t n_items = 1, n_stars = 0;
        const char *s = spec;

        assert(spec && ret_problem && ret_item && ret_item_length);

        while (is_blank(*s))
                s++;
        if (*s == '\0') {
                if (ret)
                        *ret = NULL;
                return 0;
        }
        for (const char *c = s; *c; c++)
                n_items += *c == ',';
        p = calloc(1, sizeof(CorsPolicy));
        if (!p)
                return -ENOMEM;
        p->origins = calloc(n_items, sizeof(char *));
        if (!p->origins)
                return -ENOMEM;

        for (;;) {
                size_t n = strcspn(s, ",");
                const char *next = s[n] == ',' ? s + n + 1 : NULL;

                while (n > 0 && is_blank(*s)) {
                        s++;
                        n--;
                }
                while (n > 0 && is_blank(s[n - 1]))
                        n--;
                if (n == 0) {
                        *ret_problem = "has an empty item (two commas in a row, or one at an end)";
                        *ret_item = NULL;
                        *ret_item_length = 0;
                        return -EINVAL;
                }
                if (n == 1 && *s == '*')
                        n_stars++;
                else {
                        const char *why = origin_check(s, n);
                        char *origin;
                        if (why) {
                                *ret_problem = why;
                                *ret_item = s;
                                *ret_item_length = n;
                                return -EINVAL;
                        }
                        origin = strndup(s, n);
                        if (!origin)
                                return -ENOMEM;
                        for (char *c = origin; *c; c++)
                                *c = (char) tolower((unsigned char) *c);
                        p->origins[p->n_origins++] = origin;
                }
                if (!next)
                        break;
                s = next;
        }
        if (n_stars > 0 && n_items > 1) {
                *ret_problem = "mixes '*' with other items: '*' stands alone, and allows every origin";
                *ret_item = NULL;
                *ret_item_length = 0;
                return -EINVAL;
        }
        p->any = n_stars > 0;
        if (ret)
                *ret = TAKE_PTR(p);
        return 0;
}

bool cors_origin_allowed(const CorsPolicy *policy, const char *origin) {
        if (!policy || !origin)
                return false;
        if (policy->any)
                return true;
        /* Byte for byte: browsers send the serialised origin (lower case,
         * no default port, no slash), which is how the list is kept. */
        for (size_t i = 0; i < policy->n_origins; i++)
                if (streq(policy->origins[i], origin))
                        return true;
        return false;
}

static void add(CorsAnswer *a, const char *name, const char *value) {
        assert(a->n_headers < CORS_HEADERS_MAX);
        a->headers[a->n_headers++] = (CorsHeader) { name, value };
}

void cors_decide(const CorsPolicy *policy, HttpMethod method, const char *origin,
                 const char *request_method, unsigned route_methods, CorsAnswer *ret) {
        assert(ret);

        *ret = (CorsAnswer) { .n_headers = 0 };
        if (!policy || route_methods == 0)
                return;

        bool preflight = method == HTTP_OPTIONS && origin && !isempty(request_method);
        bool allowed = cors_origin_allowed(policy, origin);

        if (policy->any)
                /* The same for every request, with an Origin or not: no Vary. */
                add(ret, "Access-Control-Allow-Origin", "*");
        else if (allowed) {
                add(ret, "Access-Control-Allow-Origin", origin);
                add(ret, "Access-Control-Allow-Credentials", "true");
        }
        if (allowed && preflight) {
                ret->preflight = true;
                /* What the path takes; the browser checks the method it
                 * asked for against it, and the headers it wants to send. */
                router_format_allow(route_methods, ret->allow_methods, sizeof(ret->allow_methods));
                add(ret, "Access-Control-Allow-Methods", ret->allow_methods);
                add(ret, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
                add(ret, "Access-Control-Max-Age", STRINGIFY(CORS_MAX_AGE_SEC));
        } else if (allowed || policy->any)
                add(ret, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS);
        /* With a list, the answer depends on Origin, for every request of
         * the path (Fetch, "CORS protocol and HTTP caches"). */
        if (!policy->any)
                add(ret, "Vary", "Origin");
}
