/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <string.h>
#include <strings.h>

#include "event-auth.h"

AuthVerdict auth_decide(JwtAction action, const AuthFacts *f) {
        assert(f);

        if (f->api_token_set && f->api_token_matches)
                return AUTH_ALLOW;
        if (!f->jwt_on) {
                if (action == JWT_SUBSCRIBE)
                        return AUTH_ALLOW;
                return f->api_token_set ? AUTH_UNAUTHORIZED : AUTH_ALLOW;
        }
        if (!f->has_token)
                return action == JWT_SUBSCRIBE && f->anonymous_subscribe ? AUTH_ALLOW : AUTH_UNAUTHORIZED;
        if (f->jwt != JWT_VALID)
                return AUTH_UNAUTHORIZED;
        if (f->granted || (action == JWT_SUBSCRIBE && f->anonymous_subscribe))
                return AUTH_ALLOW;
        return AUTH_FORBIDDEN;
}

/* The value of cookie 'name' in a Cookie header ("a=1; name=v; b=2"). */
static const char *cookie_value(const char *header, const char *name, size_t *ret_size) {
        size_t name_size = strlen(name);

        for (const char *p = header; p && *p; ) {
                p += strspn(p, " \t;");
                if (strncmp(p, name, name_size) == 0 && p[name_size] == '=') {
                        const char *v = p + name_size + 1;
                        *ret_size = strcspn(v, ";");
                        while (*ret_size > 0 && (v[*ret_size - 1] == ' ' || v[*ret_size - 1] == '\t'))
                                (*ret_size)--;
                        return *ret_size > 0 ? v : NULL;
                }
                p = strchr(p, ';');
        }
        return NULL;
}

const char *auth_token_from(const char *authorization, const char *cookie_header, const char *query_token,
                            size_t *ret_size) {
        const char *v;

        assert(ret_size);

        if (authorization && strncasecmp(authorization, "Bearer ", 7) == 0) {
                v = authorization + 7;
                *ret_size = strlen(v);
                return *ret_size > 0 ? v : NULL;
        }
        if (authorization)
                return NULL;            /* another scheme: not ours to guess */
        v = cookie_value(cookie_header, "baton_token", ret_size);
        if (v)
                return v;
        if (!isempty(query_token)) {
                *ret_size = strlen(query_token);
                return query_token;
        }
        return NULL;
}
