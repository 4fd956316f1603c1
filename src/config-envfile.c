/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <ctype.h>

#include "config-envfile.h"

static bool is_key_start(char c) {
        return isalpha((unsigned char) c) || c == '_';
}

static bool is_key_char(char c) {
        return isalnum((unsigned char) c) || c == '_';
}

static const char *skip_blanks(const char *p) {
        while (*p == ' ' || *p == '\t')
                p++;
        return p;
}

/* Parses a quoted value starting at the opening quote into out (at least as
 * long as the rest of the line); *p ends past the closing quote. */
static int parse_quoted(const char **p, char *out, const char **reason) {
        char quote = **p;
        const char *s = *p + 1;

        for (; *s && *s != '\n' && *s != quote; s++) {
                if (quote == '"' && *s == '\\' && s[1] && strchr("\"\\$`", s[1]))
                        s++;
                *out++ = *s;
        }
        if (*s != quote) {
                *reason = "unterminated quoted value";
                return -EINVAL;
        }
        *out = '\0';
        *p = s + 1;
        return 0;
}

/* Parses one assignment line (no trailing newline inside [line, end)). */
static int parse_assignment(const char *line, const char *end, char *key, char *value,
                            const char **reason) {
        const char *p = line, *v;
        size_t n = 0;

        if (!is_key_start(*p)) {
                *reason = "expected KEY=value";
                return -EINVAL;
        }
        while (p < end && is_key_char(*p))
                key[n++] = *p++;
        key[n] = '\0';
        p = skip_blanks(p);
        if (p >= end || *p != '=') {
                *reason = "expected '=' after the key";
                return -EINVAL;
        }
        p = skip_blanks(p + 1);

        if (*p == '"' || *p == '\'') {
                int r = parse_quoted(&p, value, reason);
                if (r < 0)
                        return r;
                p = skip_blanks(p);
                if (*p == '\r')
                        p++;
                if (p < end) {
                        *reason = "unexpected text after the closing quote";
                        return -EINVAL;
                }
                return 0;
        }
        v = p;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
                end--;
        memcpy(value, v, (size_t) (end - v));
        value[end - v] = '\0';
        return 0;
}

int envfile_parse(const char *text, EnvFileCallback cb, void *userdata,
                  unsigned *ret_line, const char **ret_reason) {
        assert(text && ret_line && ret_reason);

        size_t size = strlen(text) + 1;
        _cleanup_free_ char *key = malloc(size), *value = malloc(size);
        unsigned line_no = 0;

        if (!key || !value)
                return -ENOMEM;

        for (const char *line = text; *line; ) {
                const char *end = strchrnul(line, '\n');
                const char *p = skip_blanks(line);
                const char *reason = NULL;
                int r;

                line_no++;
                if (p < end && *p != '#' && *p != ';' && !(*p == '\r' && p + 1 == end)) {
                        r = parse_assignment(p, end, key, value, &reason);
                        if (r < 0) {
                                *ret_line = line_no;
                                *ret_reason = reason;
                                return r;
                        }
                        r = cb(key, value, line_no, userdata);
                        if (r < 0)
                                return r;
                }
                line = *end ? end + 1 : end;
        }
        return 0;
}
