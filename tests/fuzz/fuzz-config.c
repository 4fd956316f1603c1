/* SPDX-License-Identifier: MIT */
/* Configuration parsing (src/config.c, src/config-envfile.c, src/parse-util.c):
 *
 * - the file parser hands over only KEY=value pairs with valid keys, one
 *   per line, or stops at a syntax error with its line;
 * - every value parser either refuses or agrees with a reference
 *   (strtoull) and with its formatter (durations round-trip);
 * - loading the text as a configuration file either fails with a message
 *   that names the key (or, for syntax, the file and line) and never a
 *   secret's value, or succeeds with secrets masked in what is printed and
 *   every key reloading to the same value from what --check-config prints.
 *
 * Input: the file's text; after a line "%%", KEY=value lines of the
 * environment (CREDENTIALS_DIRECTORY excluded: the harness reads no files
 * but its own). */

#include <ctype.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <sys/mman.h>

#include "config.h"
#include "config-envfile.h"
#include "fuzz-util.h"
#include "parse-util.h"

#define ENV_MAX 64

static int memfd = -1;
static char path[64];

static bool is_ident(const char *s, size_t n) {
        if (n == 0 || !(isalpha((unsigned char) s[0]) || s[0] == '_'))
                return false;
        for (size_t i = 1; i < n; i++)
                if (!(isalnum((unsigned char) s[i]) || s[i] == '_'))
                        return false;
        return true;
}

static bool is_secret_key(ConfigKeyId id) {
        return id == CONFIG_DATABASE_URL || id == CONFIG_API_TOKEN || id == CONFIG_DEPLOYMENT_TOKEN;
}

static int key_id(const char *name, size_t n) {
        for (int i = 0; i < _CONFIG_KEY_MAX; i++)
                if (strlen(config_key_name((ConfigKeyId) i)) == n &&
                    memcmp(config_key_name((ConfigKeyId) i), name, n) == 0)
                        return i;
        return -1;
}

static bool all_digits(const char *s) {
        return *s && strspn(s, "0123456789") == strlen(s);
}

static void check_value_parsers(const char *v) {
        uint64_t u = 0, again = 0;
        bool b;
        char buf[FORMAT_DURATION_MAX];
        int r;

        r = parse_bool(v, &b);
        fuzz_check(r == 0 || r == -EINVAL, "parse_bool: %d", r);

        r = parse_uint64(v, &u);
        if (all_digits(v)) {
                errno = 0;
                unsigned long long ref = strtoull(v, NULL, 10);
                if (errno == ERANGE)
                        fuzz_check(r == -ERANGE, "'%s' overflows, parse_uint64 says %d", v, r);
                else
                        fuzz_check(r == 0 && u == ref, "'%s': %d, %" PRIu64, v, r, u);
        } else  /* digits that overflow before the junk may say -ERANGE */
                fuzz_check(r == -EINVAL || r == -ERANGE, "'%s' is not a number, parse_uint64 says %d", v, r);

        r = parse_duration(v, &u);
        fuzz_check(r == 0 || r == -EINVAL || r == -ERANGE, "parse_duration: %d", r);
        if (r == 0) {
                format_duration(buf, sizeof(buf), u);
                fuzz_check(parse_duration(buf, &again) == 0 && again == u,
                           "duration '%s' = %" PRIu64 "us formats as '%s'", v, u, buf);
        }

        r = parse_size(v, &u);
        fuzz_check(r == 0 || r == -EINVAL || r == -ERANGE, "parse_size: %d", r);
        if (r == 0 && all_digits(v))
                fuzz_check(u == strtoull(v, NULL, 10), "size '%s'", v);
}

typedef struct EnvFileCheck {
        unsigned last_line;
        unsigned n_lines;
} EnvFileCheck;

static int on_assignment(const char *key, const char *value, unsigned line, void *userdata) {
        EnvFileCheck *c = userdata;

        fuzz_check(is_ident(key, strlen(key)), "key '%s'", key);
        fuzz_check(!strchr(value, '\n'), "a line break in the value of %s", key);
        fuzz_check(line > c->last_line && line <= c->n_lines, "line %u after %u of %u", line,
                   c->last_line, c->n_lines);
        c->last_line = line;
        check_value_parsers(value);
        return 0;
}

static void check_envfile(const char *text) {
        EnvFileCheck c = { .n_lines = 1 };
        const char *reason = NULL;
        unsigned line = 0;
        int r;

        for (const char *p = text; *p; p++)
                if (*p == '\n' && p[1])
                        c.n_lines++;
        r = envfile_parse(text, on_assignment, &c, &line, &reason);
        if (r < 0) {
                fuzz_check(r == -EINVAL, "envfile_parse: %d", r);
                fuzz_check(reason && line >= 1 && line <= c.n_lines && line > c.last_line,
                           "syntax error without a reason or at line %u of %u", line, c.n_lines);
        }
}

/* An error names the key it is about ("KEY: ..."), or for a syntax error the
 * file and line; and never shows a secret's value (those messages quote no
 * value at all). */
static void check_error(const char *error) {
        size_t n;
        int id;

        fuzz_check(!isempty(error), "an error without a message");
        n = strcspn(error, ":");
        if (error[n] == ':' && is_ident(error, n)) {
                id = key_id(error, n);
                if (id < 0)
                        fuzz_check(strstr(error, ": unknown key ("), "'%s' names no key", error);
                else if (is_secret_key((ConfigKeyId) id))
                        fuzz_check(!strchr(error, '\''), "a secret's value may show: %s", error);
                return;
        }
        fuzz_check((strncmp(error, path, strlen(path)) == 0 && strncmp(error + strlen(path), " line ", 6) == 0) ||
                   strncmp(error, "configuration file ", 19) == 0,
                   "the error names no key and no line: %s", error);
}

/* In the NATS list as printed, whatever precedes an '@' (a password, or
 * a token when there is no ':') is the mask. */
static void check_nats_masked(const Config *c) {
        _cleanup_free_ char *nats = config_format_key(c, CONFIG_NATS__URL);

        fuzz_check(nats, "out of memory");
        for (const char *at = strchr(nats, '@'); at; at = strchr(at + 1, '@'))
                fuzz_check(at - nats >= 3 && strncmp(at - 3, "***", 3) == 0,
                           "NATS_URL's user info shown in '%s'", nats);
}

/* What is printed shows no secret. */
static void check_masked(const Config *c) {
        _cleanup_free_ char *api = config_format_key(c, CONFIG_API_TOKEN);
        _cleanup_free_ char *deploy = config_format_key(c, CONFIG_DEPLOYMENT_TOKEN);
        _cleanup_free_ char *url = config_format_key(c, CONFIG_DATABASE_URL);
        PQconninfoOption *o, *shown;

        fuzz_check(api && (streq(api, "") || streq(api, "***")), "API_TOKEN shown as '%s'", strempty(api));
        fuzz_check(deploy && (streq(deploy, "") || streq(deploy, "***")), "DEPLOYMENT_TOKEN shown");
        fuzz_check(url, "out of memory");
        /* The masked form is a placeholder "(...)" or key=value pairs that
         * libpq parses: their values, since the keywords are libpq's own. */
        shown = url[0] == '(' ? NULL : PQconninfoParse(url, NULL);
        fuzz_check(url[0] == '(' || shown, "DATABASE_URL masked as '%s' does not parse", url);
        o = PQconninfoParse(c->database_url, NULL);
        for (PQconninfoOption *i = o; i && i->keyword; i++) {
                const char *pw = i->val;
                const char *first;
                if (!strstr(i->keyword, "password") || !pw || strlen(pw) < 4)
                        continue;
                /* A password that occurs once in the URL (as written) must
                 * not occur in the masked form. */
                first = strstr(c->database_url, pw);
                if (!first || strstr(first + 1, pw))
                        continue;
                for (PQconninfoOption *m = shown; m && m->keyword; m++)
                        fuzz_check(!m->val || !strstr(m->val, pw), "DATABASE_URL's password in '%s'", url);
        }
        PQconninfoFree(o);
        PQconninfoFree(shown);
        check_nats_masked(c);
}

/* --check-config prints every key; as an environment, that is the same
 * configuration (secrets and the NATS URL, which are masked, raw). */
static void check_roundtrip(const Config *c) {
        char *env[_CONFIG_KEY_MAX + 1] = { 0 };
        _cleanup_(config_freep) Config *c2 = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        for (int i = 0; i < _CONFIG_KEY_MAX; i++) {
                const char *raw = i == CONFIG_DATABASE_URL ? c->database_url
                                : i == CONFIG_API_TOKEN ? c->api_token
                                : i == CONFIG_DEPLOYMENT_TOKEN ? c->deployment_token
                                : i == CONFIG_NATS__URL ? c->nats_url : NULL;
                _cleanup_free_ char *v = raw ? strdup(raw) : config_format_key(c, (ConfigKeyId) i);
                fuzz_check(v && asprintf(&env[i], "%s=%s", config_key_name((ConfigKeyId) i), v) >= 0,
                           "out of memory");
        }
        r = config_load("/dev/null", false, env, &c2, &error);
        fuzz_check(r == 0, "the printed configuration does not load: %s", strempty(error));
        for (int i = 0; i < _CONFIG_KEY_MAX; i++) {
                fuzz_check(config_key_equal(c, c2, (ConfigKeyId) i), "%s changed: %s", config_key_name((ConfigKeyId) i), env[i]);
                free(env[i]);
        }
        fuzz_check(config_merge_reload(c, c2, NULL, NULL) == 0, "a reload of the same values changes keys");
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        memfd = memfd_create("fuzz-config", MFD_CLOEXEC);
        if (memfd < 0) {
                perror("memfd_create");
                abort();
        }
        snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
        _cleanup_free_ char *text = malloc(size + 1);
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *error = NULL;
        char *env[ENV_MAX + 1] = { 0 };
        size_t file_size = size, n_env = 0;
        int r;

        if (!text)
                return 0;
        memcpy(text, input, size);
        text[size] = '\0';

        /* The environment part: after a line "%%". */
        char *sep = strstr(text, "\n%%\n");
        if (sep && (size_t) (sep - text) < size) {
                file_size = (size_t) (sep - text) + 1;
                for (char *line = sep + 4, *next; *line && n_env < ENV_MAX; line = next) {
                        next = strchrnul(line, '\n');
                        if (*next)
                                *next++ = '\0';
                        if (strncmp(line, "CREDENTIALS_DIRECTORY=", 22) != 0)
                                env[n_env++] = line;
                }
        }

        if (ftruncate(memfd, 0) < 0 || pwrite(memfd, input, file_size, 0) != (ssize_t) file_size)
                abort();
        {
                char saved = text[file_size];
                text[file_size] = '\0';
                check_envfile(text);
                text[file_size] = saved;
        }

        r = config_load(path, true, env, &c, &error);
        if (r < 0) {
                fuzz_check(r != -ENOMEM, "out of memory");
                check_error(error);
                return 0;
        }
        fuzz_check(!error, "an error message with success: %s", error);
        check_masked(c);
        check_roundtrip(c);
        return 0;
}
