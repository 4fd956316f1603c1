/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <cmocka.h>

#include "config.h"

#define URL "DATABASE_URL=postgres://baton:s3cret@db/baton"

static char file_path[] = "/tmp/baton-test-config-XXXXXX";

static void write_file(const char *text) {
        FILE *f = fopen(file_path, "we");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static int setup(void **state) {
        int fd = mkstemp(file_path);
        if (fd < 0)
                return -1;
        close(fd);
        return 0;
}

static int teardown(void **state) {
        unlink(file_path);
        return 0;
}

/* Loads with the given environment; returns the error message or NULL. */
static char *load(char *const *envp, Config **ret) {
        char *error = NULL;
        int r = config_load(file_path, false, envp, ret, &error);
        if (r >= 0) {
                assert_null(error);
                return NULL;
        }
        assert_non_null(error);
        *ret = NULL;
        return error;
}

static void test_defaults(void **state) {
        char *env[] = { URL, NULL };
        _cleanup_(config_freep) Config *c = NULL;

        write_file("");
        assert_null(load(env, &c));
        assert_string_equal(c->server_host, "127.0.0.1");
        assert_true(c->server_port == 8080);
        assert_false(c->nats_enabled);
        assert_string_equal(c->nats_url, "nats://127.0.0.1:4222");
        assert_true(c->health_check_timeout_usec == 5 * USEC_PER_SEC);
        assert_true(c->drain_timeout_usec == 120 * USEC_PER_SEC);
        assert_true(c->shutdown_timeout_usec == 30 * USEC_PER_SEC);
        assert_int_equal(c->log_level, LOG_INFO);
        assert_string_equal(c->deployment_color, "");
        assert_string_equal(c->cors_origins, "");
        assert_true(config_key_reloadable(CONFIG_CORS_ORIGINS));
        assert_int_equal(c->source[CONFIG_SERVER_PORT], CONFIG_SOURCE_DEFAULT);
        assert_int_equal(c->source[CONFIG_DATABASE_URL], CONFIG_SOURCE_ENV);
}

static void test_environment_overrides_file(void **state) {
        char *env[] = { URL, "SERVER_PORT=9000", "UNRELATED=x", NULL };
        _cleanup_(config_freep) Config *c = NULL;

        write_file("SERVER_PORT=8081\nLOG_LEVEL=debug\nDRAIN_TIMEOUT=0\nNATS__ENABLED=yes\n");
        assert_null(load(env, &c));
        assert_true(c->server_port == 9000);
        assert_int_equal(c->source[CONFIG_SERVER_PORT], CONFIG_SOURCE_ENV);
        assert_int_equal(c->log_level, LOG_DEBUG);
        assert_int_equal(c->source[CONFIG_LOG_LEVEL], CONFIG_SOURCE_FILE);
        assert_true(c->drain_timeout_usec == 0);
        assert_true(c->nats_enabled);
        assert_non_null(c->path);
}

static void test_missing_file_is_fine_unless_required(void **state) {
        char *env[] = { URL, NULL };
        _cleanup_(config_freep) Config *c = NULL;
        char *error = NULL;

        assert_int_equal(config_load("/nonexistent/batond.conf", false, env, &c, &error), 0);
        assert_null(c->path);
        config_free(TAKE_PTR(c));
        assert_true(config_load("/nonexistent/batond.conf", true, env, &c, &error) < 0);
        assert_non_null(strstr(error, "/nonexistent/batond.conf"));
        free(error);
}

/* Every error is one line that starts with the key. */
static void expect_error(char *const *env, const char *file, const char *prefix, const char *also) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *error = NULL;

        write_file(file);
        error = load(env, &c);
        assert_non_null(error);
        if (strncmp(error, prefix, strlen(prefix)) != 0)
                fail_msg("error '%s' does not start with '%s'", error, prefix);
        if (also && !strstr(error, also))
                fail_msg("error '%s' does not mention '%s'", error, also);
        assert_null(strchr(error, '\n'));
}

static void test_errors_name_the_key(void **state) {
        char *none[] = { NULL };
        char *port[] = { URL, "SERVER_PORT=99999", NULL };
        char *dur[] = { URL, "HEALTH_CHECK_TIMEOUT=soon", NULL };
        char *small[] = { URL, "HEALTH_CHECK_TIMEOUT=10ms", NULL };
        char *level[] = { URL, "LOG_LEVEL=loud", NULL };
        char *color[] = { URL, "DEPLOYMENT_COLOR=blue green", NULL };
        char *nats[] = { URL, "NATS__URL=http://x", NULL };
        char *subject[] = { URL, "NATS__SUBJECT_PREFIX=a.>", NULL };
        char *cors[] = { URL, "CORS_ORIGINS=*, https://app.example", NULL };
        char *ok[] = { URL, NULL };

        expect_error(none, "", "DATABASE_URL: required", NULL);
        expect_error(port, "", "SERVER_PORT: '99999' is out of range", "environment");
        expect_error(dur, "", "HEALTH_CHECK_TIMEOUT: 'soon' is not a duration", NULL);
        expect_error(small, "", "HEALTH_CHECK_TIMEOUT: '10ms' is out of range (100ms to 1m)", NULL);
        expect_error(level, "", "LOG_LEVEL: 'loud' is not a log level", NULL);
        expect_error(color, "", "DEPLOYMENT_COLOR:", NULL);
        expect_error(nats, "", "NATS__URL:", NULL);
        expect_error(subject, "", "NATS__SUBJECT_PREFIX:", NULL);
        expect_error(cors, "", "CORS_ORIGINS: '*, https://app.example' mixes '*'", "environment");
        expect_error(ok, "CORS_ORIGINS=https://a.example, http://b.example:80\n",
                     "CORS_ORIGINS: 'http://b.example:80' has its scheme's default port", "line 1");
        expect_error(ok, "SERVER_PRT=1\n", "SERVER_PRT: unknown key", "line 1");
        expect_error(ok, "# x\nDRAIN_TIMEOUT=-5\n", "DRAIN_TIMEOUT:", "line 2");
        expect_error(ok, "LOG_LEVEL=\"debug\n", file_path, "unterminated");
}

static void test_secret_never_echoed(void **state) {
        char *env[] = { "DATABASE_URL=host=db password='s3cret", NULL };
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *error = NULL;

        write_file("");
        error = load(env, &c);
        assert_non_null(error);
        assert_non_null(strstr(error, "DATABASE_URL"));
        assert_null(strstr(error, "s3cret"));
}

static void test_masked_display(void **state) {
        char *env[] = { URL, NULL };
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *shown = NULL, *masked = NULL;

        write_file("");
        assert_null(load(env, &c));
        shown = config_format_key(c, CONFIG_DATABASE_URL);
        masked = config_masked_database_url(c);
        assert_string_equal(shown, "user=baton password=*** dbname=baton host=db");
        assert_string_equal(masked, shown);
}

typedef struct Changes {
        int applied, kept;
        char names[256];
} Changes;

static void report(ConfigKeyId id, bool applied, const Config *running, const Config *next, void *userdata) {
        Changes *ch = userdata;
        size_t n = strlen(ch->names);
        if (applied)
                ch->applied++;
        else
                ch->kept++;
        snprintf(ch->names + n, sizeof(ch->names) - n, "%s%s ", config_key_name(id), applied ? "" : "!");
}

static void test_reload_merge(void **state) {
        char *env[] = { URL, NULL };
        _cleanup_(config_freep) Config *running = NULL, *next = NULL;
        Changes ch = { 0 };

        write_file("LOG_LEVEL=info\nSERVER_PORT=8080\n");
        assert_null(load(env, &running));
        write_file("LOG_LEVEL=debug\nSERVER_PORT=9090\nSHUTDOWN_TIMEOUT=5s\n");
        assert_null(load(env, &next));

        assert_int_equal(config_merge_reload(running, next, report, &ch), 3);
        assert_int_equal(ch.applied, 2);
        assert_int_equal(ch.kept, 1);
        assert_string_equal(ch.names, "SERVER_PORT! SHUTDOWN_TIMEOUT LOG_LEVEL ");
        /* The restart-only key keeps its running value in the new config. */
        assert_true(next->server_port == 8080);
        assert_int_equal(next->log_level, LOG_DEBUG);
        assert_true(next->shutdown_timeout_usec == 5 * USEC_PER_SEC);
        assert_true(config_key_reloadable(CONFIG_LOG_LEVEL));
        assert_false(config_key_reloadable(CONFIG_DATABASE_URL));
}

static void write_credential(const char *dir, const char *name, const char *text) {
        char path[256];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

/* LoadCredential= files: used for secrets, after the file and before the
 * environment; one trailing newline is not part of the secret. */
static void test_credentials(void **state) {
        char dir[] = "/tmp/baton-test-creds-XXXXXX";
        char cred_env[300];
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *error = NULL;

        assert_non_null(mkdtemp(dir));
        snprintf(cred_env, sizeof(cred_env), "CREDENTIALS_DIRECTORY=%s", dir);
        write_credential(dir, "deployment-token", "t0ken\n");
        write_credential(dir, "api-token", "from-credential\n");
        write_file("DEPLOYMENT_TOKEN=from-file\n");
        {
                char *env[] = { URL, cred_env, "API_TOKEN=from-env", NULL };
                assert_null(load(env, &c));
                assert_string_equal(c->deployment_token, "t0ken");
                assert_int_equal(c->source[CONFIG_DEPLOYMENT_TOKEN], CONFIG_SOURCE_CREDENTIAL);
                assert_string_equal(c->api_token, "from-env");
                c = config_free(c);
        }
        /* A bad credential names the key and the credential, never the value. */
        write_credential(dir, "deployment-token", "has space");
        {
                char *env[] = { URL, cred_env, NULL };
                error = load(env, &c);
                assert_non_null(strstr(error, "DEPLOYMENT_TOKEN"));
                assert_non_null(strstr(error, "credential deployment-token"));
                assert_null(strstr(error, "has space"));
        }
        /* DATABASE_URL may come from a credential too. */
        write_credential(dir, "deployment-token", "t0ken");
        write_credential(dir, "database-url", "postgres://baton:pw@db/baton\n");
        {
                char *env[] = { cred_env, NULL };
                assert_null(load(env, &c));
                assert_string_equal(c->database_url, "postgres://baton:pw@db/baton");
        }
        char path[300];
        const char *names[] = { "deployment-token", "api-token", "database-url" };
        for (size_t i = 0; i < 3; i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
                unlink(path);
        }
        rmdir(dir);
}

typedef struct EmptyCase {
        ConfigKeyId key;
        const char *credential;         /* the file's text; NULL: no such credential */
        const char *file;               /* a line of the config file, or "" */
        const char *env;                /* KEY=value, or NULL */
        const char *value;              /* the key's value then */
        ConfigSource source;
        bool empty_ignored;             /* the environment's empty value, ignored */
        bool empty_credential_ignored;  /* the empty credential, ignored */
} EmptyCase;

/* An empty value in the environment does not replace a credential's, nor
 * an empty credential the file's; any other value still wins over the
 * earlier ones, and an empty one in the environment wins over the file. */
static void test_empty_env_and_credentials(void **state) {
        static const EmptyCase cases[] = {
                { CONFIG_API_TOKEN, "from-credential\n", "", "API_TOKEN=",
                  "from-credential", CONFIG_SOURCE_CREDENTIAL, true, false },
                { CONFIG_API_TOKEN, "from-credential\n", "", "API_TOKEN=from-env",
                  "from-env", CONFIG_SOURCE_ENV, false, false },
                { CONFIG_API_TOKEN, "from-credential\n", "API_TOKEN=", NULL,
                  "from-credential", CONFIG_SOURCE_CREDENTIAL, false, false },
                { CONFIG_API_TOKEN, "from-credential\n", "API_TOKEN=", "API_TOKEN=",
                  "from-credential", CONFIG_SOURCE_CREDENTIAL, true, false },
                { CONFIG_API_TOKEN, "from-credential\n", "API_TOKEN=from-file", NULL,
                  "from-credential", CONFIG_SOURCE_CREDENTIAL, false, false },
                /* Nothing to keep: an empty credential (what tmpfiles.d ships)
                 * or none at all. */
                { CONFIG_API_TOKEN, "", "", "API_TOKEN=", "", CONFIG_SOURCE_ENV, false, false },
                { CONFIG_API_TOKEN, "", "", NULL, "", CONFIG_SOURCE_CREDENTIAL, false, false },
                { CONFIG_API_TOKEN, "", "API_TOKEN=", NULL, "", CONFIG_SOURCE_CREDENTIAL, false, false },
                { CONFIG_API_TOKEN, NULL, "", "API_TOKEN=", "", CONFIG_SOURCE_ENV, false, false },
                { CONFIG_API_TOKEN, NULL, "API_TOKEN=from-file", "API_TOKEN=", "", CONFIG_SOURCE_ENV, false, false },
                { CONFIG_DEPLOYMENT_TOKEN, "t0ken", "", "DEPLOYMENT_TOKEN=",
                  "t0ken", CONFIG_SOURCE_CREDENTIAL, true, false },
                /* Without the rule, an empty DATABASE_URL would be an error. */
                { CONFIG_DATABASE_URL, "postgres://baton:pw@db/baton\n", "", "DATABASE_URL=",
                  "postgres://baton:pw@db/baton", CONFIG_SOURCE_CREDENTIAL, true, false },
                /* The shipped units' empty api-token under API_TOKEN=... in
                 * batond.conf: the file's value stays (an empty file, or
                 * one with just the newline an editor leaves). */
                { CONFIG_API_TOKEN, "", "API_TOKEN=from-file", NULL,
                  "from-file", CONFIG_SOURCE_FILE, false, true },
                { CONFIG_API_TOKEN, "\n", "API_TOKEN=from-file", NULL,
                  "from-file", CONFIG_SOURCE_FILE, false, true },
                { CONFIG_DEPLOYMENT_TOKEN, "", "DEPLOYMENT_TOKEN=from-file", NULL,
                  "from-file", CONFIG_SOURCE_FILE, false, true },
                { CONFIG_DATABASE_URL, "", "DATABASE_URL=postgres://baton:pw@db/baton", NULL,
                  "postgres://baton:pw@db/baton", CONFIG_SOURCE_FILE, false, true },
                /* The environment comes after both and wins: the empty
                 * credential kept nothing then. */
                { CONFIG_API_TOKEN, "", "API_TOKEN=from-file", "API_TOKEN=from-env",
                  "from-env", CONFIG_SOURCE_ENV, false, false },
                { CONFIG_API_TOKEN, "", "", "API_TOKEN=from-env", "from-env", CONFIG_SOURCE_ENV, false, false },
                { CONFIG_API_TOKEN, "", "API_TOKEN=from-file", "API_TOKEN=", "", CONFIG_SOURCE_ENV, false, false },
        };
        char dir[] = "/tmp/baton-test-creds-XXXXXX";
        char cred_env[300], path[300];

        assert_non_null(mkdtemp(dir));
        snprintf(cred_env, sizeof(cred_env), "CREDENTIALS_DIRECTORY=%s", dir);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const EmptyCase *t = &cases[i];
                _cleanup_(config_freep) Config *c = NULL;
                const char *cred = config_key_credential(t->key);
                char *env[4] = { cred_env };
                size_t n = 1;

                print_message("# %s: credential %s, file '%s', %s\n", config_key_name(t->key),
                              !t->credential ? "absent"
                              : strspn(t->credential, "\n") < strlen(t->credential) ? "set" : "empty", t->file,
                              t->env ? t->env : "(unset)");
                if (t->key != CONFIG_DATABASE_URL)
                        env[n++] = URL;
                if (t->env)
                        env[n++] = (char *) t->env;
                snprintf(path, sizeof(path), "%s/%s", dir, cred);
                if (t->credential)
                        write_credential(dir, cred, t->credential);
                write_file(t->file);
                assert_null(load(env, &c));
                assert_string_equal(t->key == CONFIG_API_TOKEN ? c->api_token
                                    : t->key == CONFIG_DEPLOYMENT_TOKEN ? c->deployment_token
                                    : c->database_url, t->value);
                assert_int_equal(c->source[t->key], t->source);
                assert_int_equal(c->empty_ignored[t->key], t->empty_ignored);
                assert_int_equal(c->empty_credential_ignored[t->key], t->empty_credential_ignored);
                (void) unlink(path);
        }
        rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_environment_overrides_file),
                cmocka_unit_test(test_missing_file_is_fine_unless_required),
                cmocka_unit_test(test_errors_name_the_key),
                cmocka_unit_test(test_secret_never_echoed),
                cmocka_unit_test(test_masked_display),
                cmocka_unit_test(test_reload_merge),
                cmocka_unit_test(test_credentials),
                cmocka_unit_test(test_empty_env_and_credentials),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
