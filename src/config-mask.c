/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <ctype.h>
#include <libpq-fe.h>
#include <stdio.h>

#include "config-mask.h"
#include "util.h"

#define MASK "***"
#define UNPARSEABLE "(unparseable connection string, not shown)"
#define AMBIGUOUS "(connection URI with an unencoded '@' or '/' in its user info, not shown)"

DEFINE_POINTER_CLEANUP(PQconninfoOption, PQconninfoFree);
DEFINE_POINTER_CLEANUP(char, PQfreemem);

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

/* A NATS server list: URLs separated by commas, scheme://user:password@host
 * or scheme://TOKEN@host. */
static char *mask_uri_list(const char *s) {
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
                 * password must not leak the rest of it. Over-masking is the
                 * safe mistake. A URL ends at ','. */
                size_t authority_len = strcspn(authority, ",");
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
                if (at && (!colon || memchr(authority, '@', (size_t) (colon - authority))))
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

/* libpq ends a URI's user info at its first '@' before any '/'. A password
 * written with an unencoded '@' or '/' leaves the rest of it in what libpq
 * reads as host, port or database name ("postgres://u:p@ss@db" is host
 * "ss@db"), where masking by keyword would show it. So an '@' still there
 * before the query string means we cannot tell where the password ends.
 * (An '@' in the query is fine: "?user=a@b" names its keyword.) */
static bool uri_user_info_ambiguous(const char *s) {
        const char *p;

        /* libpq's own test for a URI: the scheme at the very start. A
         * "key=value" string may hold "://" in a value (found by fuzz-config). */
        if (strncmp(s, "postgresql://", 13) == 0)
                p = s + 13;
        else if (strncmp(s, "postgres://", 11) == 0)
                p = s + 11;
        else
                return false;
        p += strcspn(p, "@/");
        if (*p == '@')
                p++;
        return memchr(p, '@', strcspn(p, "?")) != NULL;
}

/* Every keyword that holds a password: libpq flags them for display with
 * "*", and a name holding "password" (password, sslpassword) covers a
 * library that does not. */
static bool conninfo_is_secret(const PQconninfoOption *o) {
        return strstr(o->keyword, "password") || (o->dispchar && strchr(o->dispchar, '*'));
}

/* libpq's conninfo syntax: a value ends at white space, and a backslash
 * escapes the next character; quoted values may hold both. */
static bool conninfo_needs_quotes(const char *v) {
        if (*v == '\0')
                return true;
        for (; *v; v++)
                if (isspace((unsigned char) *v) || *v == '\'' || *v == '\\')
                        return true;
        return false;
}

/* Appends " keyword=value", the value quoted and escaped when it must be. */
static int append_conninfo_pair(char **buf, size_t *len, size_t *cap, const char *keyword,
                                const char *value) {
        bool quote = conninfo_needs_quotes(value);
        int r = 0;

        if (*len > 0)
                r = append(buf, len, cap, " ", 1);
        if (r == 0)
                r = append(buf, len, cap, keyword, strlen(keyword));
        if (r == 0)
                r = append(buf, len, cap, quote ? "='" : "=", quote ? 2 : 1);
        for (const char *c = value; r == 0 && *c; c++) {
                if (quote && (*c == '\'' || *c == '\\'))
                        r = append(buf, len, cap, "\\", 1);
                if (r == 0)
                        r = append(buf, len, cap, c, 1);
        }
        if (r == 0 && quote)
                r = append(buf, len, cap, "'", 1);
        return r;
}

char *mask_database_url(const char *s) {
        _cleanup_(PQconninfoFreep) PQconninfoOption *options = NULL;
        _cleanup_(PQfreememp) char *error = NULL;
        char *buf = NULL;
        size_t len = 0, cap = 0;
        int r;

        assert(s);

        /* Both forms through libpq's own parser, so that what we mask is
         * what libpq would send: a URI's hosts, its query and its percent
         * escapes need no second parser of ours. */
        options = PQconninfoParse(s, &error);
        if (!options)
                /* libpq's message may quote the text, password included. No
                 * message at all means it ran out of memory. */
                return error ? strdup(UNPARSEABLE) : NULL;
        if (uri_user_info_ambiguous(s))
                return strdup(AMBIGUOUS);

        r = append(&buf, &len, &cap, "", 0);
        for (const PQconninfoOption *o = options; r == 0 && o->keyword; o++)
                if (o->val)
                        r = append_conninfo_pair(&buf, &len, &cap, o->keyword,
                                                 conninfo_is_secret(o) ? MASK : o->val);
        if (r < 0)
                return mfree(buf);
        return buf;
}

char *mask_nats_urls(const char *s) {
        assert(s);

        return mask_uri_list(s);
}
