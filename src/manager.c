/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>

#include "event-format.h"
#include "loop-util.h"
#include "http-listen.h"
#include "log.h"
#include "manager.h"
#include "http-routes.h"
#include "lifecycle-status.h"
#include "lifecycle.h"
#include "version.h"

/* Descriptors kept free for PostgreSQL, NATS, the journal and the probe. */
#define FD_RESERVE 64

extern char **environ;

/* What the lifecycle reports besides its state (STATUS=, the status file). */
static LifecycleCounts manager_counts(Manager *m) {
        const HealthSnapshot *h = health_snapshot(m->health);
        FanoutCounters f = fanout_counters(m->fanout);
        PublisherCounters p = publisher_counters(m->publisher);

        if (!h->database.up)
                snprintf(m->not_ready_reason, sizeof(m->not_ready_reason), "database check fails: %s",
                         h->database.error);
        else
                snprintf(m->not_ready_reason, sizeof(m->not_ready_reason), "NATS check fails: %s",
                         h->nats.error);
        return (LifecycleCounts) {
                .http = http_server_counters(m->http),
                .streams = stream_hub_count(m->streams),
                .streams_resumed = f.resumed,
                .streams_told_to_reconnect = stream_hub_told_to_reconnect(m->streams),
                .events_replayed = f.replayed,
                .publish_failures = p.failed + p.refused,
                .draining_for = drain_elapsed(m->drain),
                .not_ready_reason = m->not_ready_reason,
        };
}

static void manager_refresh_status(Manager *m) {
        LifecycleCounts c = manager_counts(m);

        lifecycle_refresh(m->lifecycle, &c);
}

/* Ready or degraded, as the last health round says. */
static LifecycleState running_state(Manager *m) {
        return health_ready(m->health) ? LIFECYCLE_READY : LIFECYCLE_DEGRADED;
}

/* Into ready or degraded (after startup, a reload, a health round), with
 * counts that say why when degraded: published once, by the transition. */
static void manager_enter_running(Manager *m) {
        LifecycleCounts c = manager_counts(m);

        lifecycle_set_counts(m->lifecycle, &c);
        (void) lifecycle_set(m->lifecycle, running_state(m), NULL);
}

/* The counts change with every request: refreshing once a second is what
 * "rate-limited" means here (sd_notify is cheap, but systemd parses each).
 * Also while draining: the status file is how baton-deploy waits. */
static int on_status_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        manager_refresh_status(m);
        if (event_timer_arm(source, STATUS_REFRESH_USEC) < 0)
                log_error("Failed to re-arm the status timer; STATUS= stops updating.");
        return 0;
}

/* --- startup --- */

static void on_startup_progress(Startup *s, const char *status, void *userdata) {
        Manager *m = userdata;

        (void) lifecycle_set(m->lifecycle, LIFECYCLE_STARTING, status);
}

static void on_startup_ready(Startup *s, void *userdata) {
        Manager *m = userdata;
        int r;

        manager_enter_running(m);
        log_event(LOG_INFO, "ready", "Ready: serving on %s.", m->listen_summary);
        /* The first ping right after READY=1, then self-probes. */
        r = watchdog_start(m->watchdog);
        if (r < 0)
                log_warning_errno(r, "Failed to start the watchdog timer, running without pings (systemd "
                                  "will restart us if it expects them): %m");
        if (event_timer_arm(m->status_timer, STATUS_REFRESH_USEC) < 0)
                log_error("Failed to start the status timer; STATUS= shows no live counts.");
        /* Now that the schema has baton_prune(). */
        r = pruner_start(m->pruner);
        if (r < 0)
                log_error_errno(r, "Failed to start pruning old events; they are kept: %m");
}

static void on_startup_fatal(Startup *s, const char *error, void *userdata) {
        Manager *m = userdata;

        log_event(LOG_ERR, "startup_failed", "Cannot become ready: %s", error);
        (void) lifecycle_set(m->lifecycle, LIFECYCLE_FAILED, error);
        m->exit_code = EXIT_FAILURE;
        (void) sd_event_exit(m->event, EXIT_FAILURE);
}

static void on_db_state(Db *db, bool connected, void *userdata) {
        Manager *m = userdata;
        startup_on_database(m->startup, connected);
}

static void on_bus_state(Bus *bus, bool connected, void *userdata) {
        Manager *m = userdata;

        startup_on_bus(m->startup, connected);
        /* Events published elsewhere while we were cut off never reach us
         * through NATS: look them up. */
        if (connected)
                fanout_resync(m->fanout);
}

/* A committed local publish: to our subscribers at once, and to the other
 * instances through NATS (without NATS, baton_publish() NOTIFYed them). */
static void on_event_published(const PublishResult *r, void *userdata) {
        Manager *m = userdata;
        _cleanup_free_ char *envelope = NULL;
        size_t size;

        if (event_envelope(r->id, r->topic, r->ts, r->payload, r->payload_size, &envelope, &size) < 0) {
                /* Subscribers will read it back from PostgreSQL (resync). */
                log_warning("Out of memory delivering event %" PRIu64 " of %s.", r->id, r->topic);
                return;
        }
        fanout_event(m->fanout, r->topic, r->id, envelope);
        if (m->bus && bus_publish_event(m->bus, r->topic, r->id, envelope, size) < 0)
                log_debug("Could not hand event %" PRIu64 " of %s to NATS; others catch up from "
                          "PostgreSQL.", r->id, r->topic);
}

/* Only a message signed with our key is delivered as it came. Any other
 * is a hint: the fan-out reads the ids it names from PostgreSQL, and
 * believes the store, so a forged id neither injects an event nor shadows
 * a real one (bus-signature.h). */
static void on_bus_event(Bus *bus, const char *topic, const char *data, size_t size, BusTrust trust,
                         void *userdata) {
        Manager *m = userdata;
        uint64_t id;

        if (!topic_name_valid(topic, strlen(topic))) {
                log_debug("Ignoring an event message on an invalid topic '%.128s'.", topic);
                return;
        }
        if (trust == BUS_FORGED) {
                if (m->forged_logged++ == 0)
                        log_warning("A message on NATS for topic %s has a signature that does not verify "
                                    "with NATS__SIGNING_KEY: ignored (each one is counted in "
                                    "baton_bus_messages_received_total{signature=\"invalid\"}). Either "
                                    "the instances' keys differ or someone else publishes on the subject.",
                                    topic);
                return;
        }
        if (event_envelope_parse(data, size, topic, &id) >= 0) {
                if (trust == BUS_SIGNED)
                        fanout_event(m->fanout, topic, id, data);
                else
                        fanout_hint(m->fanout, topic, id);
        } else if (event_hint_parse(data, size, topic, &id) >= 0)
                fanout_hint(m->fanout, topic, id);      /* too large for the bus itself */
        else
                log_debug("Ignoring a malformed event message on topic '%.128s'.", topic);
}

static void on_bus_lost(Bus *bus, void *userdata) {
        Manager *m = userdata;

        fanout_resync(m->fanout);
}

static void on_health_change(Health *h, void *userdata) {
        Manager *m = userdata;

        if (!m->lifecycle)
                return;         /* not started */
        if (lifecycle_state(m->lifecycle) == LIFECYCLE_STARTING) {
                startup_on_health_round(m->startup);
                return;
        }
        /* Readiness flipping is news at once; counts wait for the timer. */
        if (lifecycle_running(m->lifecycle) && lifecycle_state(m->lifecycle) != running_state(m))
                manager_enter_running(m);
}

/* --- stop and reload --- */

static void on_drained(Drain *d, bool forced, void *userdata) {
        Manager *m = userdata;

        log_event(LOG_INFO, "stopping", "Stopping%s.", forced ? " (forced)" : "");
        (void) sd_event_exit(m->event, EXIT_SUCCESS);
}

static void on_request_done(HttpServer *http, void *userdata) {
        Manager *m = userdata;
        drain_check(m->drain);
}

static int on_stop_signal(sd_event_source *source, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        DrainMode mode = si->ssi_signo == SIGINT ? DRAIN_FAST : DRAIN_GRACEFUL;

        if (!drain_active(m->drain))
                log_event(LOG_INFO, "drain_started", "Received %s.",
                          si->ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
        /* A stop before READY=1 wins: startup must not announce readiness
         * (or reset the phase) behind the drain's back. */
        startup_cancel(m->startup);
        /* Ready turns 503 at once, live stays 200; no new connections. */
        if (!drain_active(m->drain))
                (void) lifecycle_set(m->lifecycle, LIFECYCLE_DRAINING, NULL);
        drain_begin(m->drain, mode, on_drained, m);
        if (event_timer_arm(m->status_timer, STATUS_REFRESH_USEC) < 0)
                log_error("Failed to start the status timer; STATUS= shows no drain progress.");
        return 0;
}

static void report_reload_change(ConfigKeyId id, bool applied, const Config *running,
                                 const Config *next, void *userdata) {
        _cleanup_free_ char *before = config_format_key(running, id);
        _cleanup_free_ char *after = config_format_key(next, id);

        if (applied)
                log_info("Reload: %s changed from %s to %s.", config_key_name(id), strempty(before),
                         strempty(after));
        else
                log_warning("Reload: %s changed from %s to %s, which needs a restart; keeping %s "
                            "until then.", config_key_name(id), strempty(before), strempty(after),
                            strempty(before));
}

/* Values set but not used, said at start and at every reload. A key set in
 * both places silently ignores the file, which surprises whoever edits the
 * file and reloads (e.g. when a unit also loads it with EnvironmentFile=);
 * an empty value in the environment that a credential overrides is most
 * likely a mistake of the unit's files; an empty credential under the
 * file's value (the empty api-token the shipped units load) may be none,
 * but which of the two is used must not be a guess. */
static void log_ignored_values(const Config *c) {
        for (size_t i = 0; i < _CONFIG_KEY_MAX; i++) {
                if (c->shadowed[i])
                        log_notice("%s is set in both %s and the environment; the environment's "
                                   "value wins.", config_key_name((ConfigKeyId) i), c->path);
                if (c->empty_ignored[i])
                        log_warning("%s is empty in the environment, but the credential %s sets it; "
                                    "ignoring the empty value.", config_key_name((ConfigKeyId) i),
                                    config_key_credential((ConfigKeyId) i));
                if (c->empty_credential_ignored[i])
                        log_warning("%s: the credential %s is empty, but %s sets it; ignoring the "
                                    "empty credential.", config_key_name((ConfigKeyId) i),
                                    config_key_credential((ConfigKeyId) i), c->path);
        }
}

/* Said at start and at every reload: who can reach the port can do this. */
static void log_open_access(const Config *c) {
        bool jwt = !isempty(c->jwt_key) || !isempty(c->jwt_public_key_file);

        if (!jwt && isempty(c->api_token))
                log_warning("Publishing is open to anyone who can reach batond: set API_TOKEN or a JWT key "
                            "(JWT_KEY, JWT_PUBLIC_KEY_FILE).");
        if (!jwt)
                log_warning("Reading (history and streams) is open to anyone who can reach batond: set a "
                            "JWT key (JWT_KEY, JWT_PUBLIC_KEY_FILE) to require tokens.");
        else if (c->anonymous_subscribe)
                log_warning("Reading (history and streams) is open to requests without a token "
                            "(ANONYMOUS_SUBSCRIBE=true).");
}

/* The JWT keys of the configuration (checked when it was loaded). A key
 * file that changed since keeps the keys running. */
static int manager_load_jwt_keys(Manager *m) {
        JwtKeys *keys = NULL;
        char error[256];
        int r;

        r = jwt_keys_new(m->config->jwt_key, m->config->jwt_public_key_file, &keys, error, sizeof(error));
        if (r < 0) {
                log_error("JWT_PUBLIC_KEY_FILE: %s; %s.", r == -ENOMEM ? "out of memory" : error,
                          m->jwt_keys ? "keeping the keys in use" : "no token is accepted");
                return r;
        }
        jwt_keys_free(m->jwt_keys);
        m->jwt_keys = keys;
        return 0;
}

/* Each subsystem's settings from the configuration: one place, used at
 * start and at every reload. */
static HealthSettings health_settings(const Config *c) {
        return (HealthSettings) {
                .timeout_usec = c->health_check_timeout_usec,
                .interval_usec = c->health_check_interval_usec,
        };
}

static StreamSettings stream_settings(const Config *c) {
        return (StreamSettings) {
                .heartbeat_interval_usec = c->stream_heartbeat_interval_usec,
                .retry_hint_usec = c->stream_retry_hint_usec,
                .buffer_max_bytes = STREAM_BUFFER_FOR(c->max_event_bytes),
                .buffer_hard_max_bytes = STREAM_BUFFER_HARD_FOR(c->max_stream_backlog_bytes),
                .slow_timeout_usec = c->stream_slow_timeout_usec,
                .backlog_max_bytes = c->max_stream_backlog_bytes,
        };
}

static PrunerSettings pruner_settings(const Config *c) {
        PrunerSettings s = {
                .defaults = {
                        .max_age_usec = c->event_retention_max_age_usec,
                        .max_events = c->event_retention_max_events,
                },
                .interval_usec = c->event_retention_interval_usec,
                .idempotency_ttl_usec = c->idempotency_ttl_usec,
                .query_timeout_usec = c->database_query_timeout_usec,
        };
        char error[256];

        /* Checked when the configuration was loaded. */
        if (retention_table_parse(c->event_retention_topics, &s.table, error, sizeof(error)) < 0)
                log_error("EVENT_RETENTION_TOPICS: %s; using the defaults for every topic.", error);
        return s;
}

static PublisherSettings publisher_settings(const Config *c) {
        return (PublisherSettings) {
                .query_timeout_usec = c->database_query_timeout_usec,
                .queue_max_bytes = c->max_publish_queue_bytes,
                .notify = !c->nats_enabled,
                .idempotency_ttl_usec = c->idempotency_ttl_usec,
        };
}

static FanoutSettings fanout_settings(const Config *c) {
        return (FanoutSettings) {
                .query_timeout_usec = c->database_query_timeout_usec,
                .resync_interval_usec = c->stream_resync_interval_usec,
                .replay_page_bytes = REPLAY_PAGE_BYTES_FOR(c->max_event_bytes),
        };
}

/* CORS_ORIGINS, for the HTTP server. The load checked it with the same
 * parser, so only memory can fail here: the running origins stay then. */
static void manager_apply_cors(Manager *m) {
        CorsPolicy *policy = NULL;
        const char *problem, *item;
        size_t n;
        int r;

        r = cors_policy_parse(m->config->cors_origins, &policy, &problem, &item, &n);
        if (r < 0) {
                log_error_errno(r, "Failed to apply CORS_ORIGINS, keeping the running origins: %m");
                return;
        }
        http_server_set_cors(m->http, policy);
}

/* Pushes the reloadable settings into the subsystems that use them. */
static void manager_apply_config(Manager *m) {
        const Config *c = m->config;
        HealthSettings hs = health_settings(c);
        StreamSettings ss = stream_settings(c);
        PublisherSettings ps = publisher_settings(c);
        FanoutSettings fs = fanout_settings(c);

        log_set_max_level(c->log_level);
        access_log_set_enabled(m->access_log, c->access_log);
        db_set_timeouts(m->db, c->database_connect_timeout_usec, c->retry_backoff_max_usec, 0);
        db_set_timeouts(m->db_write, c->database_connect_timeout_usec, c->retry_backoff_max_usec,
                        c->database_query_timeout_usec);
        db_set_timeouts(m->db_read, c->database_connect_timeout_usec, c->retry_backoff_max_usec,
                        c->database_query_timeout_usec);
        db_set_timeouts(m->db_prune, c->database_connect_timeout_usec, c->retry_backoff_max_usec,
                        c->database_query_timeout_usec);
        for (size_t i = 0; i < m->n_db_replay; i++)
                db_set_timeouts(m->db_replay[i], c->database_connect_timeout_usec, c->retry_backoff_max_usec,
                                c->database_query_timeout_usec);
        if (m->listener)
                db_set_timeouts(pglisten_db(m->listener), c->database_connect_timeout_usec,
                                c->retry_backoff_max_usec, c->database_query_timeout_usec);
        publisher_set_settings(m->publisher, &ps);
        PrunerSettings prs = pruner_settings(c);
        pruner_set_settings(m->pruner, &prs);
        fanout_set_settings(m->fanout, &fs);
        health_set_settings(m->health, &hs);
        stream_hub_set_settings(m->streams, &ss);
        startup_set_timeouts(m->startup, c->migration_lock_timeout_usec, c->retry_backoff_max_usec);
        if (m->http) {
                http_server_set_body_limits(m->http, c->max_body_bytes, c->max_event_bytes,
                                            c->max_buffered_body_bytes);
                http_server_set_stream_retry_hint(m->http, c->stream_retry_hint_usec);
                manager_apply_cors(m);
        }
        /* A drain keeps the deadlines it started with. */
        if (m->drain && !drain_active(m->drain))
                drain_set_timeouts(m->drain, c->shutdown_timeout_usec, c->drain_timeout_usec);
}

static int on_sighup(sd_event_source *source, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        _cleanup_(config_freep) Config *next = NULL;
        _cleanup_free_ char *error = NULL;
        /* RELOADING=1 ... READY=1 only around a reload of a running
         * service: before the first READY=1 it would announce readiness
         * too early, and a draining one is not coming back. */
        bool tell_systemd = lifecycle_running(m->lifecycle);
        int r;

        if (tell_systemd)
                (void) lifecycle_set(m->lifecycle, LIFECYCLE_RELOADING, NULL);
        r = config_load(m->config_path, m->config_path_required, environ, &next, &error);
        if (r < 0)
                log_event(LOG_ERR, "reload_failed", "Reload failed, keeping the running configuration: %s",
                          error ? error : strerror(-r));
        else {
                r = config_merge_reload(m->config, next, report_reload_change, m);
                if (r < 0)
                        log_error("Reload failed (out of memory), keeping the running configuration.");
                else {
                        config_free(m->config);
                        m->config = TAKE_PTR(next);
                        manager_apply_config(m);
                        (void) manager_load_jwt_keys(m);
                        log_ignored_values(m->config);
                        log_open_access(m->config);
                        log_event(LOG_INFO, "reloaded", "Reloaded configuration: %d key(s) changed.", r);
                }
        }
        if (tell_systemd)
                manager_enter_running(m);
        return 0;
}

/* --- setup --- */

/* Lifts the soft descriptor limit to the hard one (epoll has no FD_SETSIZE
 * ceiling) and lowers MAX_CONNECTIONS if even that cannot hold them and
 * their shedding reserve: running out of descriptors would stall accepting
 * where the reserve answers 503. */
static uint64_t fit_connections_to_fd_limit(uint64_t wanted, size_t n_sockets) {
        struct rlimit rl;
        uint64_t budget, fits;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return wanted;
        if (rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        (void) getrlimit(RLIMIT_NOFILE, &rl);
        }
        budget = rl.rlim_cur > FD_RESERVE + 32 ? (rl.rlim_cur - FD_RESERVE) / (n_sockets ? n_sockets : 1) : 32;
        if (wanted + HTTP_SHED_RESERVE(wanted) <= budget)
                return wanted;
        fits = budget - HTTP_SHED_RESERVE(budget);
        log_warning("MAX_CONNECTIONS=%" PRIu64 " does not fit the open-file limit (%ju) with %zu "
                    "socket(s); using %" PRIu64 ". Raise LimitNOFILE= to serve more.",
                    wanted, (uintmax_t) rl.rlim_cur, n_sockets, fits);
        return fits;
}

static char *listen_summary(const ListenSet *set) {
        size_t len = 1;
        char *s;

        for (size_t i = 0; i < set->n_sockets; i++)
                len += strlen(set->sockets[i].address) + strlen(" (metrics)") + 2;
        s = calloc(1, len);
        if (!s)
                return NULL;
        for (size_t i = 0; i < set->n_sockets; i++) {
                if (i > 0)
                        strcat(s, ", ");
                strcat(s, set->sockets[i].address);
                if (set->sockets[i].metrics)
                        strcat(s, " (metrics)");
        }
        return s;
}

/* Logs its failures; -ECONFIG when the settings cannot work. */
static int manager_start_http(Manager *m) {
        _cleanup_free_ char *error = NULL;
        ListenSet sockets = { 0 };
        const Config *c = m->config;
        const Route *table;
        size_t n_routes;
        int r;

        ListenConfig lc = {
                .host = c->server_host,
                .port = (uint16_t) c->server_port,
                .metrics_host = c->metrics_host,
                .metrics_port = (uint16_t) c->metrics_port,
        };
        r = listen_acquire(&lc, &sockets, &error);
        if (r < 0)
                return error ? log_error_errno(r, "%s", error)
                             : log_error_errno(r, "Failed to acquire the listening sockets: %m");
        /* Hiding the probes with nowhere else to serve them would leave
         * systemd's watchdog and every health check blind. */
        if (!c->public_health && !listen_set_has_metrics(&sockets)) {
                log_error("Invalid configuration: PUBLIC_HEALTH: 'false' needs a metrics socket "
                          "(METRICS_PORT, or a socket named '%s'), or health and metrics would be "
                          "served nowhere", LISTEN_METRICS_NAME);
                listen_set_done(&sockets);
                return -ECONFIG;
        }
        HttpLimits limits = {
                .max_connections = fit_connections_to_fd_limit(m->config->max_connections,
                                                                sockets.n_sockets),
                .connection_timeout_usec = m->config->connection_timeout_usec,
                .max_header_bytes = m->config->max_header_bytes,
                .max_body_bytes = m->config->max_body_bytes,
                .max_event_bytes = m->config->max_event_bytes,
                .max_buffered_body_bytes = m->config->max_buffered_body_bytes,
        };
        m->listen_summary = listen_summary(&sockets);
        if (!m->listen_summary) {
                listen_set_done(&sockets);
                return log_oom();
        }
        table = routes_table(&n_routes);
        r = http_server_new(m->event, &sockets, &limits, table, n_routes, m, &m->http);
        listen_set_done(&sockets);
        if (r < 0)
                return r;               /* logged which socket failed */
        http_server_set_request_done_callback(m->http, on_request_done, m);
        http_server_set_request_log_callback(m->http, access_log_request, m->access_log);
        http_server_set_public_ops(m->http, c->public_health);
        http_server_set_stream_retry_hint(m->http, c->stream_retry_hint_usec);
        return 0;
}

/* Settings for one connection. Its name shows in pg_stat_activity:
 * "batond-blue" (control), "batond-blue/publish", "batond-blue/read", ... */
static int connection_settings(const Manager *m, const char *app_name, const char *purpose,
                               DbSettings *ret, char **ret_name) {
        const Config *c = m->config;
        char *name;

        if (asprintf(&name, "%s%s%s", app_name, purpose ? "/" : "", strempty(purpose)) < 0)
                return -ENOMEM;
        *ret = (DbSettings) {
                .conninfo = c->database_url,
                .application_name = name,
                .connect_timeout_usec = c->database_connect_timeout_usec,
                .backoff_max_usec = c->retry_backoff_max_usec,
        };
        *ret_name = name;
        return 0;
}

/* The work connections get statement_timeout: a slow read fails alone
 * instead of resetting the connection every other read waits on. The
 * control connection runs migrations, which may take their time. */
static int make_db(Manager *m, const char *app_name, const char *purpose, Db **ret) {
        _cleanup_free_ char *name = NULL;
        DbSettings ds;
        int r = connection_settings(m, app_name, purpose, &ds, &name);

        if (r < 0)
                return r;
        if (purpose)
                ds.statement_timeout_usec = m->config->database_query_timeout_usec;
        /* Replays yield to everything else: their pages wait while live
         * events, publishes and probes are served (live p99 while 1,000
         * streams catch up: bench/run catchup). */
        if (purpose && strncmp(purpose, "replay", 6) == 0)
                ds.priority = SD_EVENT_PRIORITY_IDLE;
        return db_new(m->event, &ds, ret);
}

static int make_listener(Manager *m, const char *app_name) {
        _cleanup_free_ char *name = NULL;
        DbSettings ds;
        int r = connection_settings(m, app_name, "listen", &ds, &name);

        if (r < 0)
                return r;
        ds.statement_timeout_usec = m->config->database_query_timeout_usec;
        return pglisten_new(m->event, &ds, m->fanout, &m->listener);
}

static int manager_setup_events(Manager *m) {
        const Config *c = m->config;
        int r;

        PublisherSettings ps = publisher_settings(c);
        r = publisher_new(m->event, m->db_write, &ps, &m->publisher);
        if (r < 0)
                return r;
        publisher_set_published_callback(m->publisher, on_event_published, m);

        FanoutSettings fs = fanout_settings(c);
        r = fanout_new(m->event, m->db_read, m->streams, &fs, &m->fanout);
        if (r < 0)
                return r;
        for (size_t i = 0; i < m->n_db_replay; i++) {
                r = fanout_add_replay_connection(m->fanout, m->db_replay[i]);
                if (r < 0)
                        return r;
        }
        PrunerSettings prs = pruner_settings(c);
        r = pruner_new(m->event, m->db_prune, &prs, &m->pruner);
        if (r < 0)
                return r;
        if (m->bus) {
                bus_set_event_callback(m->bus, on_bus_event, m);
                bus_set_lost_callback(m->bus, on_bus_lost, m);
        }
        return 0;
}

static int manager_setup_dependencies(Manager *m) {
        const Config *c = m->config;
        _cleanup_free_ char *app_name = NULL;
        int r;

        if (asprintf(&app_name, "batond%s%s", isempty(c->deployment_color) ? "" : "-",
                     c->deployment_color) < 0)
                return -ENOMEM;
        if ((r = make_db(m, app_name, NULL, &m->db)) < 0 ||
            (r = make_db(m, app_name, "publish", &m->db_write)) < 0 ||
            (r = make_db(m, app_name, "read", &m->db_read)) < 0 ||
            (r = make_db(m, app_name, "prune", &m->db_prune)) < 0)
                return r;
        for (; m->n_db_replay < c->database_replay_connections; m->n_db_replay++) {
                char purpose[32];
                snprintf(purpose, sizeof(purpose), "replay%zu", m->n_db_replay + 1);
                r = make_db(m, app_name, purpose, &m->db_replay[m->n_db_replay]);
                if (r < 0)
                        return r;
        }
        db_set_state_callback(m->db, on_db_state, m);

        if (c->nats_enabled) {
                BusSettings bs = {
                        .url = c->nats_url,
                        .subject_prefix = c->nats_subject_prefix,
                        .client_name = app_name,
                        .signing_key = c->nats_signing_key,
                };
                r = bus_new(m->event, m->mailbox, &bs, &m->bus);
                if (r < 0)
                        return r;
                bus_set_state_callback(m->bus, on_bus_state, m);
        }

        HealthSettings hs = health_settings(c);
        r = health_new(m->event, m->db, m->bus, &hs, &m->health);
        if (r < 0)
                return r;
        health_set_change_callback(m->health, on_health_change, m);

        r = manager_setup_events(m);
        if (r < 0)
                return r;
        if (!c->nats_enabled) {
                r = make_listener(m, app_name);
                if (r < 0)
                        return r;
        }
        if ((r = health_watch_connection(m->health, "publish", m->db_write)) < 0 ||
            (r = health_watch_connection(m->health, "read", m->db_read)) < 0 ||
            (m->listener && (r = health_watch_connection(m->health, "listen",
                                                         pglisten_db(m->listener))) < 0))
                return r;

        StartupCallbacks callbacks = {
                .ready = on_startup_ready,
                .fatal = on_startup_fatal,
                .progress = on_startup_progress,
        };
        return startup_new(m->event, m->db, m->bus, m->health, &m->migrations, &callbacks, m,
                           &m->startup);
}

int manager_new(Config *config, const char *config_path, bool config_path_required, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        assert(config && config_path && ret);

        m = calloc(1, sizeof(Manager));
        if (!m) {
                config_free(config);
                return log_oom();
        }
        m->config = config;
        m->start_monotonic_usec = now_usec(CLOCK_MONOTONIC);
        m->start_realtime_usec = now_usec(CLOCK_REALTIME);
        m->config_path = strdup(config_path);
        m->config_path_required = config_path_required;
        if (!m->config_path)
                return log_oom();

        r = migration_set_load(embedded_migrations, n_embedded_migrations, &m->migrations, &error);
        if (r < 0)
                return log_error_errno(r, "Embedded migrations are broken: %s", strempty(error));

        r = sd_event_new(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to create the event loop: %m");
        /* Signals arrive as loop events; main() blocked them before any
         * thread started, so no thread can take them instead. */
        if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_stop_signal, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGINT, on_stop_signal, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m)) < 0)
                return log_error_errno(r, "Failed to watch SIGTERM, SIGINT and SIGHUP: %m");

        r = mailbox_new(m->event, BUS_MAILBOX_BYTES, &m->mailbox);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the NATS mailbox: %m");
        r = access_log_new(m->event, &m->access_log);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the access log: %m");
        r = event_timer_new(m->event, &m->status_timer, 50 * USEC_PER_MSEC, on_status_timer, m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the status timer: %m");
        StreamSettings ss = stream_settings(config);
        r = stream_hub_new(m->event, &ss, &m->streams);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the stream hub: %m");
        r = manager_setup_dependencies(m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the database connections, NATS and the "
                                       "health checks: %m");
        r = routes_build_static_responses(m);
        if (r < 0)
                return log_error_errno(r, "Failed to build the probes' answers: %m");
        *ret = TAKE_PTR(m);
        return 0;
}

int manager_start(Manager *m) {
        assert(m);

        _cleanup_free_ char *masked = config_masked_database_url(m->config);
        int r;

        log_event(LOG_INFO, "starting", "batond %s starting%s%s; database %s%s.", BATON_VERSION,
                 isempty(m->config->deployment_color) ? "" : " as colour ",
                 m->config->deployment_color, strempty(masked),
                 m->config->nats_enabled ? ", NATS enabled" : "");

        log_ignored_values(m->config);
        log_open_access(m->config);
        r = manager_load_jwt_keys(m);
        if (r < 0)
                return r == -ENOMEM ? log_oom() : -EINVAL;

        /* HTTP first: while we wait for dependencies, live answers 200,
         * ready 503 with the reason, and the API 503. */
        r = manager_start_http(m);
        if (r < 0)
                return r;
        r = drain_new(m->event, m->http, m->streams, &m->drain);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the drain: %m");
        r = watchdog_new(m->event, m->http, &m->watchdog);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the watchdog: %m");
        /* systemd's RuntimeDirectory= (the units set one per instance). */
        r = lifecycle_new(m->http, m->health, m->listen_summary, m->config->deployment_color,
                          getenv("RUNTIME_DIRECTORY"), &m->lifecycle);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the lifecycle: %m");
        manager_apply_config(m);

        /* Then the dependencies, in the order of the readiness contract.
         * The work connections connect alongside; the health checks that
         * gate READY=1 require them. */
        if ((r = db_start(m->db_write)) < 0 || (r = db_start(m->db_read)) < 0 ||
            (r = db_start(m->db_prune)) < 0 ||
            (m->listener && (r = pglisten_start(m->listener)) < 0))
                return log_error_errno(r, "Failed to start the database connections: %m");
        for (size_t i = 0; i < m->n_db_replay; i++)
                if ((r = db_start(m->db_replay[i])) < 0)
                        return log_error_errno(r, "Failed to start the database connections: %m");
        return startup_begin(m->startup);       /* logs its failures (NATS's words) */
}

int manager_run(Manager *m) {
        int r;

        assert(m);

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return r;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* Order matters: the HTTP server first (its request callbacks reach
         * streams and health), startup before the Db its migrator uses, the
         * Db and bus before the health checks that wait on them. */
        watchdog_free(m->watchdog);
        sd_event_source_disable_unref(m->status_timer);
        lifecycle_free(m->lifecycle);
        http_server_free(m->http);
        access_log_free(m->access_log);
        drain_free(m->drain);
        startup_free(m->startup);
        publisher_free(m->publisher);
        pruner_free(m->pruner);
        fanout_free(m->fanout);
        pglisten_free(m->listener);
        if (m->bus && bus_close(m->bus) < 0) {
                /* NATS threads may still post: leave the bus and the mailbox
                 * they post to alive; the process is exiting anyway. */
                log_warning("Leaving the NATS client's memory in place at exit.");
                m->bus = NULL;
                m->mailbox = NULL;
        }
        bus_free(m->bus);
        db_free(m->db);
        db_free(m->db_write);
        db_free(m->db_read);
        db_free(m->db_prune);
        jwt_keys_free(m->jwt_keys);
        for (size_t i = 0; i < m->n_db_replay; i++)
                db_free(m->db_replay[i]);
        health_free(m->health);
        stream_hub_free(m->streams);
        http_shared_response_unref(m->live_response);
        http_shared_response_unref(m->summary_response);
        mailbox_free(m->mailbox);
        sd_event_unref(m->event);
        migration_set_done(&m->migrations);
        config_free(m->config);
        free(m->config_path);
        free(m->listen_summary);
        return mfree(m);
}
