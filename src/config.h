/* SPDX-License-Identifier: MIT */
#pragma once

/* Configuration: one declarative table of keys (config.c) read from
 * defaults, then the optional file, then systemd credentials (secrets
 * only: $CREDENTIALS_DIRECTORY/<name>, see LoadCredential=), then the
 * environment, which wins, but for an empty value where a credential set
 * one; and an empty credential does not replace the file's value.
 *
 * A Config is immutable once loaded. Reload builds a fresh one and swaps it
 * in only when the whole load succeeded; keys that cannot change while
 * running keep their old value and are reported (config_merge_reload()). */

#include <stdio.h>

#include "util.h"

#define CONFIG_DEFAULT_PATH "/etc/baton/batond.conf"

typedef enum ConfigSource {
        CONFIG_SOURCE_DEFAULT,
        CONFIG_SOURCE_FILE,
        CONFIG_SOURCE_CREDENTIAL,
        CONFIG_SOURCE_ENV,
        _CONFIG_SOURCE_MAX,
} ConfigSource;

typedef enum ConfigKeyId {
        CONFIG_DATABASE_URL,
        CONFIG_DATABASE_CONNECT_TIMEOUT,
        CONFIG_DATABASE_QUERY_TIMEOUT,
        CONFIG_MIGRATION_LOCK_TIMEOUT,
        CONFIG_DATABASE_REPLAY_CONNECTIONS,
        CONFIG_SERVER_HOST,
        CONFIG_SERVER_PORT,
        CONFIG_MAX_CONNECTIONS,
        CONFIG_CONNECTION_TIMEOUT,
        CONFIG_MAX_HEADER_BYTES,
        CONFIG_MAX_BODY_BYTES,
        CONFIG_MAX_EVENT_BYTES,
        CONFIG_MAX_PUBLISH_QUEUE_BYTES,
        CONFIG_MAX_BUFFERED_BODY_BYTES,
        CONFIG_EVENT_RETENTION_MAX_AGE,
        CONFIG_EVENT_RETENTION_MAX_EVENTS,
        CONFIG_EVENT_RETENTION_TOPICS,
        CONFIG_EVENT_RETENTION_INTERVAL,
        CONFIG_IDEMPOTENCY_TTL,
        CONFIG_JWT_KEY,
        CONFIG_JWT_PUBLIC_KEY_FILE,
        CONFIG_ANONYMOUS_SUBSCRIBE,
        CONFIG_API_TOKEN,
        CONFIG_CORS_ORIGINS,
        CONFIG_NATS__ENABLED,
        CONFIG_NATS__URL,
        CONFIG_NATS__SUBJECT_PREFIX,
        CONFIG_NATS__SIGNING_KEY,
        CONFIG_HEALTH_CHECK_TIMEOUT,
        CONFIG_HEALTH_CHECK_INTERVAL,
        CONFIG_RETRY_BACKOFF_MAX,
        CONFIG_DRAIN_TIMEOUT,
        CONFIG_SHUTDOWN_TIMEOUT,
        CONFIG_STREAM_HEARTBEAT_INTERVAL,
        CONFIG_STREAM_RETRY_HINT,
        CONFIG_STREAM_RESYNC_INTERVAL,
        CONFIG_STREAM_SLOW_TIMEOUT,
        CONFIG_MAX_STREAM_BACKLOG_BYTES,
        CONFIG_STREAM_TEST_MAX_DURATION,
        CONFIG_LOG_LEVEL,
        CONFIG_DEPLOYMENT_COLOR,
        CONFIG_DEPLOYMENT_TOKEN,
        CONFIG_METRICS_HOST,
        CONFIG_METRICS_PORT,
        CONFIG_PUBLIC_HEALTH,
        CONFIG_ACCESS_LOG,
        _CONFIG_KEY_MAX,
} ConfigKeyId;

typedef struct Config {
        char *database_url;
        usec_t database_connect_timeout_usec;
        usec_t database_query_timeout_usec;
        usec_t migration_lock_timeout_usec;
        uint64_t database_replay_connections;

        char *server_host;
        uint64_t server_port;
        uint64_t max_connections;
        usec_t connection_timeout_usec;
        uint64_t max_header_bytes;
        uint64_t max_body_bytes;
        uint64_t max_event_bytes;
        uint64_t max_publish_queue_bytes;
        uint64_t max_buffered_body_bytes;
        usec_t event_retention_max_age_usec;    /* 0: no limit by age */
        uint64_t event_retention_max_events;    /* per topic; 0: no limit by count */
        char *event_retention_topics;           /* overrides, event-retention.h */
        usec_t event_retention_interval_usec;
        usec_t idempotency_ttl_usec;
        char *jwt_key;                  /* HS256 secret; "": none */
        char *jwt_public_key_file;      /* RS256/ES256 key; "": none */
        bool anonymous_subscribe;       /* with JWT: reading without a token */
        char *api_token;                /* "" when publishing is open */
        char *cors_origins;             /* "": no CORS; "*"; or origins, comma-separated */

        bool nats_enabled;
        char *nats_url;
        char *nats_subject_prefix;
        char *nats_signing_key;         /* "": bus messages are only hints */

        usec_t health_check_timeout_usec;
        usec_t health_check_interval_usec;
        usec_t retry_backoff_max_usec;

        usec_t drain_timeout_usec;      /* 0: wait for ever */
        usec_t shutdown_timeout_usec;

        usec_t stream_heartbeat_interval_usec;
        usec_t stream_retry_hint_usec;
        usec_t stream_resync_interval_usec;
        usec_t stream_slow_timeout_usec;
        uint64_t max_stream_backlog_bytes;
        usec_t stream_test_max_duration_usec;

        int log_level;
        char *deployment_color;         /* "" when unset */
        char *deployment_token;         /* "" when /health/deployment is off */

        char *metrics_host;
        uint64_t metrics_port;          /* 0: no metrics socket of our own */
        bool public_health;             /* health and metrics on the public sockets too */
        bool access_log;

        /* Where each key's value came from, for messages. */
        ConfigSource source[_CONFIG_KEY_MAX];
        /* Set in the file too, but the environment's value won. */
        bool shadowed[_CONFIG_KEY_MAX];
        /* Empty in the environment, ignored: a credential set the key. */
        bool empty_ignored[_CONFIG_KEY_MAX];
        /* An empty credential, ignored: the file set the key, and its
         * value is the one used. */
        bool empty_credential_ignored[_CONFIG_KEY_MAX];
        char *path;                     /* the file read, NULL if none */
} Config;

Config *config_free(Config *c);
DEFINE_POINTER_CLEANUP(Config, config_free);

/* Loads defaults, then path (when it exists; when path_required, a missing
 * file is an error), then envp. On failure returns a negative errno and a
 * one-line message naming the key in *ret_error (never containing a
 * secret). */
int config_load(const char *path, bool path_required, char *const *envp,
                Config **ret, char **ret_error);

const char *config_key_name(ConfigKeyId id);
bool config_key_reloadable(ConfigKeyId id);
/* The systemd credential the key may come from, or NULL. */
const char *config_key_credential(ConfigKeyId id);

/* Compares key 'id' of two configs. */
bool config_key_equal(const Config *a, const Config *b, ConfigKeyId id);

/* Reload: keys that cannot change while running are copied back from the
 * running config into 'next'; for each key that differs, calls report with
 * whether it was applied. Returns the number of keys that changed. */
typedef void (*ConfigChangeReport)(ConfigKeyId id, bool applied, const Config *running,
                                   const Config *next, void *userdata);
int config_merge_reload(const Config *running, Config *next, ConfigChangeReport report,
                        void *userdata);

/* The value of key 'id' formatted for people (secrets masked); NULL when
 * out of memory. */
char *config_format_key(const Config *c, ConfigKeyId id);

/* Writes KEY=value for every key (secrets masked) to f: for --check-config. */
void config_dump(const Config *c, FILE *f);

/* A newly allocated masked copy of DATABASE_URL, for logs. */
char *config_masked_database_url(const Config *c);
