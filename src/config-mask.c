/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <libpq-fe.h>
#include <stdio.h>

#include "config-mask.h"
#include "util.h"

#define MASK "***"

/* Appends n bytes of s to a growing buffer. */
static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
        if (*len + n + 1 > *cap) {
                size_t want = (*len + n + 1) * 2;
                char *p = realloc(*buf, want);
                if (!p)
                        return -ENOMEM;
                *buf = p;
                *cap = want;
        }
        memcpy(*buf + *len, s, n);
        *len += n;
        (*buf)[*len] = '\0';
        return 0;
}

/* Masks "password=VALUE" in a URI query string starting at q (after '?');
 * returns the position where the query ends. */
static const char *mask_uri_query(const char *q, char **buf, size_t *len, size_t *cap, int *r) {
        while (*q && *q != '#' && *q != ',' && *r == 0) {
                size_t n = strcspn(q, "&#,");
                if (strncmp(q, "password=", 9) == 0) {
                        *r = append(buf, len, cap, "password=" MASK, strlen("password=" MASK));
                } else
                        *r = append(buf, len, cap, q, n);
                q += n;
                if (*q == '&' && *r == 0)
                        *r = append(buf, len, cap, q++, 1);
        }
        return q;
}

/* URIs: scheme://user:password@host/...: one PostgreSQL URI (pg), or a NATS
 * server list, separated by commas, where "nats://TOKEN@host" is a token. */
static char *mask_uri_list(const char *s, bool pg) {
        char *buf = NULL;
        size_t len = 0, cap = 0;
        const char *p = s;
        int r = append(&buf, &len, &cap, "", 0);

        while (r == 0 && *p) {
                const char *scheme_end = strstr(p, "://");
                if (!scheme_end) {
                        r = append(&buf, &len, &cap, p, strlen(p));
                        break;
                }
                const char *authority = scheme_end + 3;
                /* Look for '@' past any '/', '?' and '#': an unencoded '/' in a
                 * password must not leak the rest of it, and libpq takes
                 * "postgres://u:pa?ss@db" as password "pa?ss". Over-masking is
                 * the safe mistake. Only a NATS list ends a URI at ','; a
                 * PostgreSQL password may hold one too. */
                size_t authority_len = pg ? strlen(authority) : strcspn(authority, ",");
                const char *at = NULL;
                for (const char *c = authority; c < authority + authority_len; c++)
                        if (*c == '@')
                                at = c;
                const char *colon = at ? memchr(authority, ':', (size_t) (at - authority)) : NULL;
                /* The user name shows only when it plainly is one: a ':'
                 * before any '@'. Otherwise all of the user info is masked:
                 * nats.c takes user info with no ':' as a token, and a user
                 * holding '@' leaves it unclear where the password starts
                 * (both found by fuzz-config). */
                if (at && (colon || !pg) && (!colon || memchr(authority, '@', (size_t) (colon - authority))))
                        colon = authority - 1;

                if (colon) {
                        r = append(&buf, &len, &cap, p, (size_t) (colon + 1 - p));
                        if (r == 0)
                                r = append(&buf, &len, &cap, MASK, strlen(MASK));
                        p = at;
                } else {
                        r = append(&buf, &len, &cap, p, (size_t) (authority - p));
                        p = authority;
                }
                /* Copy through the path, mask the query, continue at the next URI. */
                size_t path_len = strcspn(p, "?#,");
                if (r == 0)
                        r = append(&buf, &len, &cap, p, path_len);
                p += path_len;
                if (r == 0 && *p == '?') {
                        r = append(&buf, &len, &cap, p++, 1);
                        p = mask_uri_query(p, &buf, &len, &cap, &r);
                }
                size_t rest = strcspn(p, ",");
                if (r == 0)
                        r = append(&buf, &len, &cap, p, rest + (p[rest] == ',' ? 1 : 0));
                p += rest + (p[rest] == ',' ? 1 : 0);
        }
        if (r < 0)
                return mfree(buf);
        return buf;
}

/* "key=value" strings: let libpq parse (quoting rules included) and rebuild. */
static char *mask_conninfo(const char *s) {
        PQconninfoOption *options;
        char *buf = NULL;
        size_t len = 0, cap = 0;
        int r;

        options = PQconninfoParse(s, NULL);
        if (!options)
                return strdup("(unparseable connection string, not shown)");

        r = append(&buf, &len, &cap, "", 0);
        for (PQconninfoOption *o = options; r == 0 && o->keyword; o++) {
                if (!o->val)
                        continue;
                bool secret = streq(o->keyword, "password");
                bool quote = !secret && (o->val[0] == '\0' || strpbrk(o->val, " '\\"));
                if (len > 0)
                        r = append(&buf, &len, &cap, " ", 1);
                if (r == 0)
                        r = append(&buf, &len, &cap, o->keyword, strlen(o->keyword));
                if (r == 0)
                        r = append(&buf, &len, &cap, quote ? "='" : "=", quote ? 2 : 1);
                for (const char *c = secret ? MASK : o->val; r == 0 && *c; c++) {
                        if (quote && (*c == '\'' || *c == '\\'))
                                r = append(&buf, &len, &cap, "\\", 1);
                        if (r == 0)
                                r = append(&buf, &len, &cap, c, 1);
                }
                if (r == 0 && quote)
                        r = append(&buf, &len, &cap, "'", 1);
        }
        PQconninfoFree(options);
        if (r < 0)
                return mfree(buf);
        return buf;
}

char *mask_database_url(const char *s) {
        assert(s);

        /* libpq's own rule: a URI only when it starts with the scheme. A
         * "key=value" string may hold "://" in a value (found by fuzz-config). */
        if (strncmp(s, "postgres://", 11) == 0 || strncmp(s, "postgresql://", 13) == 0)
                return mask_uri_list(s, true);
        return mask_conninfo(s);
}

char *mask_nats_urls(const char *s) {
        assert(s);

        return mask_uri_list(s, false);
}
