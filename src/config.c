/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <sys/stat.h>

#include "auth-jwt.h"
#include "config.h"
#include "event-retention.h"
#include "config-envfile.h"
#include "log.h"
#include "config-mask.h"
#include "http-cors.h"
#include "parse-util.h"

/* Largest configuration file we read: a config, not a data file. */
#define CONFIG_FILE_MAX (1024 * 1024)

typedef enum ValueType {
        TYPE_STRING,
        TYPE_CONNINFO,          /* libpq URI or key=value string; a secret */
        TYPE_SECRET,            /* a token: never shown, never echoed */
        TYPE_HOST,
        TYPE_UINT,
        TYPE_BOOL,
        TYPE_DURATION,
        TYPE_SIZE,
        TYPE_LOG_LEVEL,
        TYPE_NAME,              /* [A-Za-z0-9_-]*, for the colour */
        TYPE_NATS_URL,
        TYPE_SUBJECT_PREFIX,
        TYPE_RETENTION_TABLE,   /* PATTERN=AGE/COUNT, ... (event-retention.h) */
        TYPE_PUBLIC_KEY_FILE,   /* a PEM public key for JWTs (auth-jwt.h) */
        TYPE_ORIGINS,           /* CORS_ORIGINS: "", "*" or origins (http-cors.h) */
} ValueType;

typedef struct ConfigKey {
        const char *name;
        ValueType type;
        size_t offset;
        const char *default_value;      /* NULL: the key is required */
        uint64_t min, max;              /* for numbers, durations (usec) and sizes */
        bool reloadable;
        const char *credential;         /* systemd credential name, for secrets */
} ConfigKey;

#define SEC(n)  ((n) * USEC_PER_SEC)
#define MSEC(n) ((n) * USEC_PER_MSEC)
#define KiB(n)  ((n) * 1024ULL)

#define KEY(id, t, field, def, lo, hi, reload) \
        [CONFIG_##id] = { #id, t, offsetof(Config, field), def, lo, hi, reload, NULL }
/* A secret that may also come from $CREDENTIALS_DIRECTORY/<cred>. */
#define SECRET_KEY(id, t, field, def, lo, hi, reload, cred) \
        [CONFIG_##id] = { #id, t, offsetof(Config, field), def, lo, hi, reload, cred }

/* The whole configuration surface. README.md and man/batond.conf.5 document
 * each key; keep them in step. "Reloadable" keys change on SIGHUP; the
 * others need a restart (a reload reports them and keeps the old value). */
static const ConfigKey config_keys[_CONFIG_KEY_MAX] = {
        SECRET_KEY(DATABASE_URL,       TYPE_CONNINFO,       database_url,                   NULL,    0, 0, false, "database-url"),
        KEY(DATABASE_CONNECT_TIMEOUT,  TYPE_DURATION,       database_connect_timeout_usec,  "10s",   SEC(1), SEC(300), true),
        KEY(DATABASE_QUERY_TIMEOUT,    TYPE_DURATION,       database_query_timeout_usec,    "10s",   MSEC(100), SEC(300), true),
        KEY(MIGRATION_LOCK_TIMEOUT,    TYPE_DURATION,       migration_lock_timeout_usec,    "10s",   MSEC(100), SEC(3600), true),
        KEY(DATABASE_REPLAY_CONNECTIONS, TYPE_UINT,           database_replay_connections,    "2",     0, 16, false),
        KEY(SERVER_HOST,               TYPE_HOST,           server_host,                    "127.0.0.1", 0, 0, false),
        KEY(SERVER_PORT,               TYPE_UINT,           server_port,                    "8080",  1, 65535, false),
        KEY(MAX_CONNECTIONS,           TYPE_UINT,           max_connections,                "10000", 16, 1000000, false),
        KEY(CONNECTION_TIMEOUT,        TYPE_DURATION,       connection_timeout_usec,        "30s",   SEC(1), SEC(3600), false),
        KEY(MAX_HEADER_BYTES,          TYPE_SIZE,           max_header_bytes,               "3K",    KiB(1), KiB(64), false),
        KEY(MAX_BODY_BYTES,            TYPE_SIZE,           max_body_bytes,                 "1M",    KiB(1), KiB(1024) * 1024, true),
        KEY(MAX_EVENT_BYTES,           TYPE_SIZE,           max_event_bytes,                "64K",   KiB(1), KiB(1024), true),
        KEY(MAX_PUBLISH_QUEUE_BYTES,   TYPE_SIZE,           max_publish_queue_bytes,        "32M",   KiB(1024), KiB(1024) * 1024 * 4, true),
        KEY(MAX_BUFFERED_BODY_BYTES,   TYPE_SIZE,           max_buffered_body_bytes,        "64M",   KiB(1024), KiB(1024) * 1024 * 4, true),
        KEY(EVENT_RETENTION_MAX_AGE,   TYPE_DURATION,       event_retention_max_age_usec,   "7d",    0, SEC(3650 * 24 * 3600), true),
        KEY(EVENT_RETENTION_MAX_EVENTS, TYPE_UINT,          event_retention_max_events,     "0",     0, 1000000000000, true),
        KEY(EVENT_RETENTION_TOPICS,    TYPE_RETENTION_TABLE, event_retention_topics,        "",      0, 0, true),
        KEY(EVENT_RETENTION_INTERVAL,  TYPE_DURATION,       event_retention_interval_usec,  "1m",    SEC(1), SEC(24 * 3600), true),
        KEY(IDEMPOTENCY_TTL,           TYPE_DURATION,       idempotency_ttl_usec,           "24h",   SEC(60), SEC(30 * 24 * 3600), true),
        SECRET_KEY(JWT_KEY,            TYPE_SECRET,         jwt_key,                        "",      32, 512, true, "jwt-key"),
        KEY(JWT_PUBLIC_KEY_FILE,       TYPE_PUBLIC_KEY_FILE, jwt_public_key_file,           "",      0, 0, true),
        KEY(ANONYMOUS_SUBSCRIBE,       TYPE_BOOL,           anonymous_subscribe,            "false", 0, 0, true),
        SECRET_KEY(API_TOKEN,          TYPE_SECRET,         api_token,                      "",      0, 512, true, "api-token"),
        KEY(CORS_ORIGINS,              TYPE_ORIGINS,        cors_origins,                   "",      0, 0, true),
        KEY(NATS__ENABLED,             TYPE_BOOL,           nats_enabled,                   "false", 0, 0, false),
        KEY(NATS__URL,                 TYPE_NATS_URL,       nats_url,                       "nats://127.0.0.1:4222", 0, 0, false),
        KEY(NATS__SUBJECT_PREFIX,      TYPE_SUBJECT_PREFIX, nats_subject_prefix,            "baton", 0, 0, false),
        SECRET_KEY(NATS__SIGNING_KEY,  TYPE_SECRET,         nats_signing_key,               "",      32, 512, false, "nats-signing-key"),
        KEY(HEALTH_CHECK_TIMEOUT,      TYPE_DURATION,       health_check_timeout_usec,      "5s",    MSEC(100), SEC(60), true),
        KEY(HEALTH_CHECK_INTERVAL,     TYPE_DURATION,       health_check_interval_usec,     "2s",    MSEC(100), SEC(3600), true),
        KEY(RETRY_BACKOFF_MAX,         TYPE_DURATION,       retry_backoff_max_usec,         "10s",   MSEC(100), SEC(300), true),
        KEY(DRAIN_TIMEOUT,             TYPE_DURATION,       drain_timeout_usec,             "120s",  0, SEC(7 * 24 * 3600), true),
        KEY(SHUTDOWN_TIMEOUT,          TYPE_DURATION,       shutdown_timeout_usec,          "30s",   SEC(1), SEC(3600), true),
        KEY(STREAM_HEARTBEAT_INTERVAL, TYPE_DURATION,       stream_heartbeat_interval_usec, "15s",   SEC(1), SEC(3600), true),
        KEY(STREAM_RETRY_HINT,         TYPE_DURATION,       stream_retry_hint_usec,         "2s",    MSEC(100), SEC(3600), true),
        KEY(STREAM_RESYNC_INTERVAL,    TYPE_DURATION,       stream_resync_interval_usec,    "5s",    MSEC(100), SEC(3600), true),
        KEY(STREAM_SLOW_TIMEOUT,       TYPE_DURATION,       stream_slow_timeout_usec,       "10s",   SEC(1), SEC(3600), true),
        KEY(MAX_STREAM_BACKLOG_BYTES,  TYPE_SIZE,           max_stream_backlog_bytes,       "256M",  KiB(1024) * 16, KiB(1024) * 1024 * 16, true),
        KEY(STREAM_TEST_MAX_DURATION,  TYPE_DURATION,       stream_test_max_duration_usec,  "1h",    SEC(1), SEC(24 * 3600), true),
        KEY(LOG_LEVEL,                 TYPE_LOG_LEVEL,      log_level,                      "info",  0, 0, true),
        KEY(DEPLOYMENT_COLOR,          TYPE_NAME,           deployment_color,               "",      0, 32, false),
        SECRET_KEY(DEPLOYMENT_TOKEN,   TYPE_SECRET,         deployment_token,               "",      0, 512, true, "deployment-token"),
        KEY(METRICS_HOST,              TYPE_HOST,           metrics_host,                   "127.0.0.1", 0, 0, false),
        KEY(METRICS_PORT,              TYPE_UINT,           metrics_port,                   "0",     0, 65535, false),
        KEY(PUBLIC_HEALTH,             TYPE_BOOL,           public_health,                  "true",  0, 0, false),
        KEY(ACCESS_LOG,                TYPE_BOOL,           access_log,                     "false", 0, 0, true),
};

#define FIELD(c, k, type) ((type *) ((char *) (c) + (k)->offset))

static bool is_string_type(ValueType t) {
        return t == TYPE_STRING || t == TYPE_CONNINFO || t == TYPE_SECRET || t == TYPE_HOST ||
               t == TYPE_NAME || t == TYPE_NATS_URL || t == TYPE_SUBJECT_PREFIX || t == TYPE_RETENTION_TABLE ||
               t == TYPE_ORIGINS || t == TYPE_PUBLIC_KEY_FILE;
}

static bool is_secret(const ConfigKey *k) {
        return k->type == TYPE_CONNINFO || k->type == TYPE_SECRET;
}

const char *config_key_name(ConfigKeyId id) {
        return config_keys[id].name;
}

bool config_key_reloadable(ConfigKeyId id) {
        return config_keys[id].reloadable;
}

const char *config_key_credential(ConfigKeyId id) {
        return config_keys[id].credential;
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < _CONFIG_KEY_MAX; i++)
                if (is_string_type(config_keys[i].type))
                        free(*FIELD(c, &config_keys[i], char *));
        free(c->path);
        return mfree(c);
}

static bool valid_name(const char *s, size_t max) {
        size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
        return s[n] == '\0' && n <= max;
}

/* NATS subjects are tokens separated by dots; wildcards ('*', '>') and empty
 * tokens would let our subjects match other applications' traffic. */
static bool valid_subject_prefix(const char *s) {
        if (isempty(s) || strlen(s) > 64)
                return false;
        for (const char *p = s; *p; ) {
                size_t n = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
                if (n == 0)
                        return false;
                p += n;
                if (*p == '.' && p[1] != '\0')
                        p++;
                else if (*p != '\0')
                        return false;
        }
        return true;
}

static bool valid_nats_url_list(const char *s) {
        _cleanup_free_ char *copy = strdup(s);
        char *saveptr = NULL;
        int n = 0;

        if (!copy)
                return false;
        for (char *url = strtok_r(copy, ",", &saveptr); url; url = strtok_r(NULL, ",", &saveptr)) {
                while (isspace((unsigned char) *url))
                        url++;
                const char *host = NULL;
                if (strncmp(url, "nats://", 7) == 0)
                        host = url + 7;
                else if (strncmp(url, "tls://", 6) == 0)
                        host = url + 6;
                if (!host || isempty(host) || strpbrk(host, " \t"))
                        return false;
                n++;
        }
        return n > 0;
}

static int parse_number(const ConfigKey *k, const char *value, uint64_t *ret, const char **ret_problem) {
        const char *problem;
        uint64_t v;
        int r;

        switch (k->type) {
        case TYPE_DURATION:
                r = parse_duration(value, &v);
                problem = "is not a duration (use e.g. 5s, 500ms, 2m)";
                break;
        case TYPE_SIZE:
                r = parse_size(value, &v);
                problem = "is not a size (use e.g. 8K, 1M, or bytes)";
                break;
        default:
                r = parse_uint64(value, &v);
                problem = "is not a non-negative whole number";
                break;
        }
        if (r < 0) {
                *ret_problem = r == -ERANGE ? "is too large" : problem;
                return r;
        }
        if (v < k->min || v > k->max)
                return -ERANGE;         /* the caller prints the allowed range */
        *ret = v;
        return 0;
}

/* The sentence for a value a parser refused (r < 0, with its message in
 * 'error'), or NULL when it took it. One at a time: the loop is
 * single-threaded. */
static const char *refusal(int r, const char *what, const char *error) {
        static char message[320];

        if (r >= 0)
                return NULL;
        if (r == -ENOMEM)
                return "could not be checked: out of memory";
        snprintf(message, sizeof(message), "%s: %s", what, error);
        return message;
}

/* Validates a string-typed value; returns a static reason or NULL. */
static const char *check_string(const ConfigKey *k, const char *value) {
        switch (k->type) {
        case TYPE_CONNINFO: {
                if (isempty(value))
                        return "must not be empty";
                PQconninfoOption *o = PQconninfoParse(value, NULL);
                if (!o)
                        return "is not a valid PostgreSQL connection URI or key=value string";
                PQconninfoFree(o);
                return NULL;
        }
        case TYPE_SECRET:
                /* Bearer tokens are visible ASCII (RFC 6750 b64token and more). */
                for (const char *p = value; *p; p++)
                        if (*p <= ' ' || *p >= 127)
                                return "may only contain visible ASCII characters";
                if (*value && strlen(value) < k->min)
                        return "must be empty or at least 32 characters";
                return strlen(value) <= k->max ? NULL : "is longer than 512 characters";
        case TYPE_HOST:
                if (isempty(value) || strpbrk(value, " \t/"))
                        return "must be an IP address or host name";
                return NULL;
        case TYPE_NAME:
                return valid_name(value, k->max) ? NULL
                        : "may only contain letters, digits, '_' and '-' (at most 32)";
        case TYPE_NATS_URL:
                return valid_nats_url_list(value) ? NULL
                        : "must be nats://HOST:PORT or tls://HOST:PORT, comma-separated";
        case TYPE_SUBJECT_PREFIX:
                return valid_subject_prefix(value) ? NULL
                        : "must be dot-separated tokens of letters, digits, '_' and '-' "
                          "(no wildcards, at most 64 characters)";
        case TYPE_PUBLIC_KEY_FILE: {
                JwtKeys *keys = NULL;
                char error[256];
                int r;
                if (isempty(value))
                        return NULL;
                r = jwt_keys_new(NULL, value, &keys, error, sizeof(error));
                jwt_keys_free(keys);
                return refusal(r, "is not a usable key", error);
        }
        case TYPE_RETENTION_TABLE: {
                RetentionTable table;
                char error[256];
                int r = retention_table_parse(value, &table, error, sizeof(error));
                return refusal(r, "is not a list of PATTERN=AGE/COUNT", error);
        }
        default:
                return NULL;
        }
}

static void format_bound(const ConfigKey *k, uint64_t v, char *buf, size_t size) {
        if (k->type == TYPE_DURATION)
                format_duration(buf, size, v);
        else
                snprintf(buf, size, "%" PRIu64, v);
}

/* CORS_ORIGINS, checked as the server will parse it; an error names the
 * origin of the list that is wrong. */
static int config_set_origins(Config *c, const ConfigKey *k, const char *value, char **ret_error) {
        const char *problem, *item;
        size_t item_length;
        int r, n;

        r = cors_policy_parse(value, NULL, &problem, &item, &item_length);
        if (r == -EINVAL) {
                n = item ? asprintf(ret_error, "%s: '%.*s' %s", k->name, (int) item_length, item, problem)
                         : asprintf(ret_error, "%s: '%s' %s", k->name, value, problem);
                return n < 0 ? -ENOMEM : -EINVAL;
        }
        if (r < 0)
                return r;
        return free_and_strdup(FIELD(c, k, char *), value);
}

/* Parses value into key k of c. On failure writes a message to *ret_error:
 * "KEY: 'value' <problem>", without the value for secrets. */
static int config_set(Config *c, const ConfigKey *k, const char *value, char **ret_error) {
        const char *problem = NULL;
        int r = 0;

        if (k->type == TYPE_ORIGINS)
                return config_set_origins(c, k, value, ret_error);
        if (is_string_type(k->type)) {
                problem = check_string(k, value);
                if (!problem)
                        r = free_and_strdup(FIELD(c, k, char *), value);
        } else if (k->type == TYPE_BOOL) {
                if (parse_bool(value, FIELD(c, k, bool)) < 0)
                        problem = "is not a boolean (use true or false)";
        } else if (k->type == TYPE_LOG_LEVEL) {
                int level = log_level_from_string(value);
                if (level < 0)
                        problem = "is not a log level (use debug, info, notice, warning or error)";
                else
                        *FIELD(c, k, int) = level;
        } else {
                uint64_t v;
                r = parse_number(k, value, &v, &problem);
                if (r == -ERANGE && !problem) {
                        char lo[FORMAT_DURATION_MAX], hi[FORMAT_DURATION_MAX];
                        format_bound(k, k->min, lo, sizeof(lo));
                        format_bound(k, k->max, hi, sizeof(hi));
                        if (asprintf(ret_error, "%s: '%s' is out of range (%s to %s)",
                                     k->name, value, lo, hi) < 0)
                                return -ENOMEM;
                        return -ERANGE;
                }
                if (r == 0)
                        *FIELD(c, k, uint64_t) = v;
        }
        if (r == -ENOMEM)
                return r;
        if (problem) {
                int n = is_secret(k)
                        ? asprintf(ret_error, "%s: the value %s", k->name, problem)
                        : asprintf(ret_error, "%s: '%s' %s", k->name, value, problem);
                return n < 0 ? -ENOMEM : -EINVAL;
        }
        return 0;
}

static const ConfigKey *config_key_find(const char *name, ConfigKeyId *ret_id) {
        for (size_t i = 0; i < _CONFIG_KEY_MAX; i++)
                if (streq(config_keys[i].name, name)) {
                        *ret_id = (ConfigKeyId) i;
                        return &config_keys[i];
                }
        return NULL;
}

/* Prefixes an error message with its origin: "KEY: ... (FILE line N)". */
static int error_with_origin(char **error, const char *path, unsigned line) {
        char *e;

        if (asprintf(&e, "%s (%s line %u)", *error, path, line) < 0)
                return -ENOMEM;
        free(*error);
        *error = e;
        return 0;
}

typedef struct FileContext {
        Config *config;
        const char *path;
        char **error;
} FileContext;

static int apply_file_assignment(const char *key, const char *value, unsigned line, void *userdata) {
        FileContext *ctx = userdata;
        ConfigKeyId id;
        const ConfigKey *k = config_key_find(key, &id);
        int r;

        if (!k) {
                if (asprintf(ctx->error, "%s: unknown key (%s line %u)", key, ctx->path, line) < 0)
                        return -ENOMEM;
                return -EINVAL;
        }
        r = config_set(ctx->config, k, value, ctx->error);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                int q = error_with_origin(ctx->error, ctx->path, line);
                return q < 0 ? q : r;
        }
        ctx->config->source[id] = CONFIG_SOURCE_FILE;
        return 0;
}

static int read_config_file(const char *path, char **ret_text, char **ret_error) {
        _cleanup_free_ char *text = NULL;
        FILE *f;
        struct stat st;
        size_t n;

        f = fopen(path, "re");
        if (!f) {
                int err = errno;
                if (asprintf(ret_error, "cannot open configuration file %s: %s", path, strerror(err)) < 0)
                        return -ENOMEM;
                return -err;
        }
        /* Directories and FIFOs would fail or block; /dev/null means "no file". */
        if (fstat(fileno(f), &st) < 0 || (!S_ISREG(st.st_mode) && !streq(path, "/dev/null")) ||
            st.st_size > CONFIG_FILE_MAX) {
                fclose(f);
                if (asprintf(ret_error, "configuration file %s is not a regular file of at most 1 MiB", path) < 0)
                        return -ENOMEM;
                return -EINVAL;
        }
        text = malloc((size_t) st.st_size + 1);
        if (!text) {
                fclose(f);
                return -ENOMEM;
        }
        n = fread(text, 1, (size_t) st.st_size, f);
        fclose(f);
        text[n] = '\0';
        if (memchr(text, '\0', n)) {
                if (asprintf(ret_error, "configuration file %s contains a NUL byte", path) < 0)
                        return -ENOMEM;
                return -EINVAL;
        }
        *ret_text = TAKE_PTR(text);
        return 0;
}

static int load_file(Config *c, const char *path, bool path_required, char **ret_error) {
        _cleanup_free_ char *text = NULL;
        const char *reason = NULL;
        unsigned line = 0;
        int r;

        if (!path_required && access(path, F_OK) < 0 && errno == ENOENT)
                return 0;
        r = read_config_file(path, &text, ret_error);
        if (r < 0)
                return r;
        r = free_and_strdup(&c->path, path);
        if (r < 0)
                return r;

        FileContext ctx = { .config = c, .path = path, .error = ret_error };
        r = envfile_parse(text, apply_file_assignment, &ctx, &line, &reason);
        if (r == -EINVAL && reason && !*ret_error)
                if (asprintf(ret_error, "%s line %u: %s", path, line, reason) < 0)
                        return -ENOMEM;
        return r;
}

static const char *env_lookup(char *const *envp, const char *name) {
        size_t n = strlen(name);

        for (char *const *e = envp; e && *e; e++)
                if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
                        return *e + n + 1;
        return NULL;
}

static int load_env(Config *c, char *const *envp, char **ret_error) {
        for (size_t i = 0; i < _CONFIG_KEY_MAX; i++) {
                const char *value = env_lookup(envp, config_keys[i].name);
                int r;

                if (!value)
                        continue;
                /* An empty value over a credential's ("API_TOKEN=" left in
                 * an EnvironmentFile=) would drop the secret without a word:
                 * for API_TOKEN, open publishing. The credential is the
                 * deliberate one, so it stays, and the caller warns. (An
                 * empty credential does not replace the file's value
                 * either: load_credentials().) */
                if (isempty(value) && c->source[i] == CONFIG_SOURCE_CREDENTIAL &&
                    !isempty(*FIELD(c, &config_keys[i], char *))) {
                        c->empty_ignored[i] = true;
                        continue;
                }
                r = config_set(c, &config_keys[i], value, ret_error);
                if (r < 0) {
                        if (r != -ENOMEM) {
                                char *e;
                                if (asprintf(&e, "%s (from the environment)", *ret_error) < 0)
                                        return -ENOMEM;
                                free(*ret_error);
                                *ret_error = e;
                        }
                        return r;
                }
                c->shadowed[i] = c->source[i] == CONFIG_SOURCE_FILE;
                c->source[i] = CONFIG_SOURCE_ENV;
                /* The environment's value is the one used: the empty
                 * credential kept nothing. */
                c->empty_credential_ignored[i] = false;
        }
        return 0;
}

/* Largest credential we read: tokens and connection strings. */
#define CREDENTIAL_MAX 4096

/* Reads one credential file; a single trailing newline (what an editor or
 * "echo" leaves) is not part of the secret. -ENOENT when absent. */
static int read_credential(const char *dir, const char *name, char **ret) {
        _cleanup_free_ char *path = NULL;
        _cleanup_free_ char *text = NULL;
        FILE *f;
        size_t n;

        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f)
                return -errno;
        text = malloc(CREDENTIAL_MAX + 1);
        if (!text) {
                fclose(f);
                return -ENOMEM;
        }
        n = fread(text, 1, CREDENTIAL_MAX + 1, f);
        fclose(f);
        if (n > CREDENTIAL_MAX)
                return -EFBIG;
        text[n] = '\0';
        if (n > 0 && text[n - 1] == '\n')
                text[--n] = '\0';
        if (n > 0 && text[n - 1] == '\r')
                text[--n] = '\0';
        if (memchr(text, '\0', n))
                return -EINVAL;
        *ret = TAKE_PTR(text);
        return 0;
}

static const char *env_lookup(char *const *envp, const char *name);

/* systemd passes LoadCredential= files in $CREDENTIALS_DIRECTORY, readable
 * only by the service: the way to hand it secrets without putting them in
 * the environment (which /proc/PID/environ and "systemctl show" reveal). */
static int load_credentials(Config *c, char *const *envp, char **ret_error) {
        const char *dir = env_lookup(envp, "CREDENTIALS_DIRECTORY");

        if (isempty(dir))
                return 0;
        for (size_t i = 0; i < _CONFIG_KEY_MAX; i++) {
                const ConfigKey *k = &config_keys[i];
                _cleanup_free_ char *value = NULL;
                int r;

                if (!k->credential)
                        continue;
                r = read_credential(dir, k->credential, &value);
                if (r == -ENOENT)
                        continue;
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        if (asprintf(ret_error, "%s: cannot read credential %s/%s: %s", k->name, dir,
                                     k->credential, r == -EFBIG ? "larger than 4 KiB" : strerror(-r)) < 0)
                                return -ENOMEM;
                        return r;
                }
                /* The shipped units load /etc/baton/api-token, which
                 * tmpfiles.d creates empty: replacing the file's
                 * API_TOKEN=<secret> with that would open publishing
                 * without a word. An empty credential is no deliberate
                 * value, so the file's stays, and the caller warns. (The
                 * environment comes later and wins over both.) */
                if (isempty(value) && !isempty(*FIELD(c, k, char *))) {
                        c->empty_credential_ignored[i] = true;
                        continue;
                }
                r = config_set(c, k, value, ret_error);
                if (r < 0) {
                        if (r != -ENOMEM) {
                                char *e;
                                if (asprintf(&e, "%s (from credential %s)", *ret_error, k->credential) < 0)
                                        return -ENOMEM;
                                free(*ret_error);
                                *ret_error = e;
                        }
                        return r;
                }
                c->source[i] = CONFIG_SOURCE_CREDENTIAL;
        }
        return 0;
}

static int load_defaults(Config *c, char **ret_error) {
        for (size_t i = 0; i < _CONFIG_KEY_MAX; i++) {
                if (!config_keys[i].default_value)
                        continue;
                /* A default that fails its own parser is a bug in the table above. */
                int r = config_set(c, &config_keys[i], config_keys[i].default_value, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int check_required(const Config *c, const char *path, char **ret_error) {
        for (size_t i = 0; i < _CONFIG_KEY_MAX; i++) {
                const ConfigKey *k = &config_keys[i];
                if (k->default_value || !isempty(*FIELD(c, k, char *)))
                        continue;
                if (asprintf(ret_error, "%s: required, but set neither in the environment nor in %s%s%s",
                             k->name, path, k->credential ? " nor as the credential " : "",
                             strempty(k->credential)) < 0)
                        return -ENOMEM;
                return -EINVAL;
        }
        return 0;
}

int config_load(const char *path, bool path_required, char *const *envp,
                Config **ret, char **ret_error) {
        _cleanup_(config_freep) Config *c = NULL;
        char *error = NULL;
        int r;

        assert(path && envp && ret && ret_error);

        c = calloc(1, sizeof(Config));
        if (!c)
                return -ENOMEM;

        r = load_defaults(c, &error);
        if (r >= 0)
                r = load_file(c, path, path_required, &error);
        if (r >= 0)
                r = load_credentials(c, envp, &error);
        if (r >= 0)
                r = load_env(c, envp, &error);
        if (r >= 0)
                r = check_required(c, path, &error);
        if (r < 0) {
                if (!error && asprintf(&error, "cannot load configuration: %s", strerror(-r)) < 0)
                        error = NULL;
                *ret_error = error;
                return r;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

bool config_key_equal(const Config *a, const Config *b, ConfigKeyId id) {
        const ConfigKey *k = &config_keys[id];

        assert(a && b);

        if (is_string_type(k->type))
                return streq_ptr(*FIELD(a, k, char *), *FIELD(b, k, char *));
        if (k->type == TYPE_BOOL)
                return *FIELD(a, k, bool) == *FIELD(b, k, bool);
        if (k->type == TYPE_LOG_LEVEL)
                return *FIELD(a, k, int) == *FIELD(b, k, int);
        return *FIELD(a, k, uint64_t) == *FIELD(b, k, uint64_t);
}

/* Copies key k's value from src into dst. */
static int config_copy_key(Config *dst, const Config *src, const ConfigKey *k) {
        if (is_string_type(k->type))
                return free_and_strdup(FIELD(dst, k, char *), *FIELD(src, k, char *));
        if (k->type == TYPE_BOOL)
                *FIELD(dst, k, bool) = *FIELD(src, k, bool);
        else if (k->type == TYPE_LOG_LEVEL)
                *FIELD(dst, k, int) = *FIELD(src, k, int);
        else
                *FIELD(dst, k, uint64_t) = *FIELD(src, k, uint64_t);
        return 0;
}

int config_merge_reload(const Config *running, Config *next, ConfigChangeReport report,
                        void *userdata) {
        int changed = 0;

        assert(running && next);

        for (size_t i = 0; i < _CONFIG_KEY_MAX; i++) {
                const ConfigKey *k = &config_keys[i];

                if (config_key_equal(running, next, (ConfigKeyId) i))
                        continue;
                changed++;
                if (report)
                        report((ConfigKeyId) i, k->reloadable, running, next, userdata);
                if (!k->reloadable) {
                        int r = config_copy_key(next, running, k);
                        if (r < 0)
                                return r;
                        next->source[i] = running->source[i];
                }
        }
        return changed;
}

/* Formats key k of c for display; secrets masked. Returns a new string. */
static char *config_format_value(const Config *c, const ConfigKey *k) {
        char buf[FORMAT_DURATION_MAX];
        char *s = NULL;

        switch (k->type) {
        case TYPE_CONNINFO:
                return mask_database_url(*FIELD(c, k, char *));
        case TYPE_SECRET:
                return strdup(isempty(*FIELD(c, k, char *)) ? "" : "***");
        case TYPE_NATS_URL:
                return mask_nats_urls(*FIELD(c, k, char *));
        case TYPE_BOOL:
                return strdup(*FIELD(c, k, bool) ? "true" : "false");
        case TYPE_LOG_LEVEL:
                return strdup(log_level_to_string(*FIELD(c, k, int)));
        case TYPE_DURATION:
                return strdup(format_duration(buf, sizeof(buf), *FIELD(c, k, uint64_t)));
        case TYPE_SIZE:
        case TYPE_UINT:
                if (asprintf(&s, "%" PRIu64, *FIELD(c, k, uint64_t)) < 0)
                        return NULL;
                return s;
        default:
                return strdup(*FIELD(c, k, char *));
        }
}

char *config_format_key(const Config *c, ConfigKeyId id) {
        assert(c);

        return config_format_value(c, &config_keys[id]);
}

void config_dump(const Config *c, FILE *f) {
        assert(c && f);

        static const char *const source_names[_CONFIG_SOURCE_MAX] = {
                [CONFIG_SOURCE_DEFAULT] = "default",
                [CONFIG_SOURCE_FILE] = "file",
                [CONFIG_SOURCE_CREDENTIAL] = "credential",
                [CONFIG_SOURCE_ENV] = "environment",
        };

        for (size_t i = 0; i < _CONFIG_KEY_MAX; i++) {
                _cleanup_free_ char *v = config_format_value(c, &config_keys[i]);
                fprintf(f, "%s=%s  # %s%s\n", config_keys[i].name, v ? v : "(out of memory)",
                        source_names[c->source[i]],
                        config_keys[i].reloadable ? ", reloadable" : "");
        }
}

char *config_masked_database_url(const Config *c) {
        assert(c);

        return mask_database_url(c->database_url);
}
