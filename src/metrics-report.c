/* SPDX-License-Identifier: MIT */
#include <assert.h>

#include "log.h"
#include "metrics-report.h"
#include "metrics-process.h"
#include "version.h"

#define LABELS(...) ((const char *const[]) { __VA_ARGS__, NULL })

static void collect_build(Manager *m, Exposition *e) {
        exposition_family(e, "baton_build_info", METRIC_GAUGE,
                          "Always 1; the labels say which version runs as which colour.");
        exposition_sample(e, LABELS("version", BATON_VERSION, "color", m->config->deployment_color), 1);
}

static void collect_requests(Manager *m, Exposition *e) {
        const RequestMetrics *rm = http_server_request_metrics(m->http);
        HttpCounters c = http_server_counters(m->http);

        exposition_family(e, "baton_http_requests_total", METRIC_COUNTER,
                          "Finished HTTP requests by route (from the route table), method and status "
                          "class (none: the client left before an answer).");
        for (size_t l = 0; l < rm->n_labels; l++)
                for (size_t meth = 0; meth < METRICS_N_METHODS; meth++)
                        for (size_t cls = 0; cls < METRICS_N_STATUS_CLASSES; cls++) {
                                uint64_t n = rm->stats[l].requests[meth][cls];
                                /* Only combinations that occurred: a few dozen series, not 500. */
                                if (n == 0)
                                        continue;
                                exposition_sample(e, LABELS("route", rm->labels[l],
                                                            "method", metrics_method_label(meth),
                                                            "status", metrics_status_label(cls)),
                                                  (double) n);
                        }

        exposition_family(e, "baton_http_request_duration_seconds", METRIC_HISTOGRAM,
                          "Time from the request line until the answer was ready to send (for "
                          "streams: until the stream started), by route.");
        for (size_t l = 0; l < rm->n_labels; l++)
                if (rm->stats[l].duration.count > 0)
                        exposition_histogram(e, LABELS("route", rm->labels[l]), &rm->stats[l].duration);

        exposition_scalar(e, "baton_http_requests_in_flight", METRIC_GAUGE,
                          "Requests being handled now (streams not included).",
                          (double) c.active_requests);
        exposition_scalar(e, "baton_http_requests_shed_total", METRIC_COUNTER,
                          "Requests answered 503 because their socket was past MAX_CONNECTIONS.",
                          (double) c.requests_shed);
        exposition_scalar(e, "baton_http_read_timeouts_total", METRIC_COUNTER,
                          "Connections closed because a request did not arrive whole within "
                          "CONNECTION_TIMEOUT of the connection waiting for one (slow or idle clients).",
                          (double) c.connections_read_timeout);
        exposition_scalar(e, "baton_http_connections", METRIC_GAUGE,
                          "Open client connections.", (double) c.active_connections);
        exposition_scalar(e, "baton_streams_active", METRIC_GAUGE,
                          "Open Server-Sent-Event streams (topic streams and /stream/test).",
                          (double) c.active_streams);
}

static void collect_events(Manager *m, Exposition *e) {
        PublisherCounters p = publisher_counters(m->publisher);
        FanoutCounters f = fanout_counters(m->fanout);

        exposition_scalar(e, "baton_events_published_total", METRIC_COUNTER,
                          "Events committed to PostgreSQL through this instance (answered 201).",
                          (double) p.published);
        exposition_scalar(e, "baton_events_publish_repeats_total", METRIC_COUNTER,
                          "Publishes answered with the first answer of their Idempotency-Key "
                          "(201, Idempotent-Replayed: true): nothing stored.", (double) p.repeated);
        exposition_scalar(e, "baton_events_publish_key_conflicts_total", METRIC_COUNTER,
                          "Publishes answered 422: their Idempotency-Key was used for another "
                          "event within IDEMPOTENCY_TTL.", (double) p.conflicts);
        exposition_scalar(e, "baton_events_publish_failures_total", METRIC_COUNTER,
                          "Publishes answered with an error (503) because the database failed.",
                          (double) p.failed);
        exposition_scalar(e, "baton_events_publish_refused_total", METRIC_COUNTER,
                          "Publishes answered 503 overloaded at once: the publish queue was full "
                          "(MAX_PUBLISH_QUEUE_BYTES).", (double) p.refused);
        exposition_scalar(e, "baton_events_publish_queue_bytes", METRIC_GAUGE,
                          "Bytes of events accepted and not yet committed (the batch in flight "
                          "included), against MAX_PUBLISH_QUEUE_BYTES.", (double) p.queued_bytes);
        exposition_scalar(e, "baton_events_delivered_total", METRIC_COUNTER,
                          "Events handed to subscribers' streams (one per event and subscriber).",
                          (double) f.delivered);
        exposition_scalar(e, "baton_events_fetched_total", METRIC_COUNTER,
                          "Events read back from PostgreSQL to fill gaps the bus left.",
                          (double) f.fetched);
        exposition_scalar(e, "baton_stream_replay_pages_read_total", METRIC_COUNTER,
                          "Pages of history read from PostgreSQL for streams catching up.",
                          (double) f.replay_pages_read);
        exposition_scalar(e, "baton_stream_replay_pages_cached_total", METRIC_COUNTER,
                          "Pages of history served to streams catching up from the replay cache, "
                          "without a read.", (double) f.replay_pages_cached);
        exposition_scalar(e, "baton_stream_resumed_total", METRIC_COUNTER,
                          "Streams that came with Last-Event-ID (resumed).", (double) f.resumed);
        exposition_scalar(e, "baton_stream_resets_total", METRIC_COUNTER,
                          "Streams told \"event: reset\": they resumed from an id retention had "
                          "deleted, and went on from the oldest stored one.", (double) f.resets);
        exposition_scalar(e, "baton_stream_events_replayed_total", METRIC_COUNTER,
                          "Events sent to streams catching up from the store.", (double) f.replayed);
        exposition_scalar(e, "baton_stream_reconnects_sent_total", METRIC_COUNTER,
                          "Streams ended with a reconnect event (drain, cut, refused).",
                          (double) stream_hub_told_to_reconnect(m->streams));
        exposition_scalar(e, "baton_stream_replay_cache_bytes", METRIC_GAUGE,
                          "Bytes of the replay pages kept in memory (at most 16 replay pages).",
                          (double) f.replay_cache_bytes);
        exposition_scalar(e, "baton_stream_subscribers_cut_total", METRIC_COUNTER,
                          "Streams cut with a reconnect event because they stayed behind longer than "
                          "STREAM_SLOW_TIMEOUT, or their backlog reached its hard limit.",
                          (double) stream_hub_cut(m->streams));
        exposition_scalar(e, "baton_stream_backlog_bytes", METRIC_GAUGE,
                          "Bytes queued for streams and not yet sent, each event counted once "
                          "(against MAX_STREAM_BACKLOG_BYTES).", (double) stream_hub_backlog_bytes(m->streams));
        exposition_scalar(e, "baton_stream_subscribers", METRIC_GAUGE,
                          "Subscribers of topic streams.", (double) f.subscribers);
        exposition_scalar(e, "baton_stream_topics", METRIC_GAUGE,
                          "Topics with at least one subscriber.", (double) f.channels);
        if (m->bus) {
                BusCounters b = bus_counters(m->bus);
                exposition_scalar(e, "baton_bus_events_dropped_total", METRIC_COUNTER,
                                  "Events from NATS dropped on the way in (the bounded queues between "
                                  "the connection and the loop were full), then read from PostgreSQL.",
                                  (double) b.dropped);
                exposition_scalar(e, "baton_bus_events_hinted_total", METRIC_COUNTER,
                                  "Events over the NATS server's max_payload, sent to the other "
                                  "instances as their id for them to read from PostgreSQL.",
                                  (double) b.hinted);
                static const char *const signature_labels[_BUS_TRUST_MAX] = {
                        [BUS_SIGNED] = "valid", [BUS_UNSIGNED] = "none",
                        [BUS_UNVERIFIABLE] = "unverifiable", [BUS_FORGED] = "invalid",
                };
                exposition_family(e, "baton_bus_messages_received_total", METRIC_COUNTER,
                                  "Event messages taken in from NATS, by their signature: valid ones are "
                                  "delivered as they came, invalid ones dropped, the others (no "
                                  "NATS__SIGNING_KEY) only say that ids exist, read from PostgreSQL.");
                for (size_t t = 0; t < _BUS_TRUST_MAX; t++)
                        exposition_sample(e, LABELS("signature", signature_labels[t]), (double) b.received[t]);
        }
}

/* A bounded summary, not a series per topic: topics are unbounded. */
static void collect_retention(Manager *m, Exposition *e) {
        PrunerCounters p = pruner_counters(m->pruner);

        exposition_scalar(e, "baton_events_pruned_total", METRIC_COUNTER,
                          "Events deleted by retention (EVENT_RETENTION_*) from this instance.",
                          (double) p.events_pruned);
        exposition_scalar(e, "baton_idempotency_keys_expired_total", METRIC_COUNTER,
                          "Idempotency-Keys deleted past IDEMPOTENCY_TTL from this instance.",
                          (double) p.keys_expired);
        exposition_family(e, "baton_retention_rounds_total", METRIC_COUNTER,
                          "Pruning rounds: done here, skipped because another instance held the lock "
                          "(elsewhere), or failed.");
        exposition_sample(e, LABELS("result", "done"), (double) p.rounds);
        exposition_sample(e, LABELS("result", "elsewhere"), (double) p.rounds_elsewhere);
        exposition_sample(e, LABELS("result", "failed"), (double) p.rounds_failed);
        exposition_scalar(e, "baton_retention_topics", METRIC_GAUGE,
                          "Topics seen by the last round done here.", (double) p.topics);
        exposition_scalar(e, "baton_retention_oldest_event_age_seconds", METRIC_GAUGE,
                          "Age of the oldest stored event of any topic, before the last round done "
                          "here pruned.", (double) p.oldest_age_usec / USEC_PER_SEC);
        exposition_scalar(e, "baton_retention_topic_events_max", METRIC_GAUGE,
                          "The most ids any topic held (last id - oldest id + 1), before the last round "
                          "done here pruned.", (double) p.events_stored_max);
        exposition_scalar(e, "baton_retention_round_seconds", METRIC_GAUGE,
                          "How long the last round done here took.", (double) p.last_round_usec / USEC_PER_SEC);
}

static void collect_dependencies(Manager *m, Exposition *e) {
        const HealthSnapshot *h = health_snapshot(m->health);
        const CheckStats *db = health_database_stats(m->health);
        const CheckStats *nats = health_nats_stats(m->health);

        exposition_family(e, "baton_dependency_checks_total", METRIC_COUNTER,
                          "Background health checks of each dependency, by result.");
        exposition_sample(e, LABELS("dependency", "database", "result", "success"), (double) db->passed);
        exposition_sample(e, LABELS("dependency", "database", "result", "failure"), (double) db->failed);
        if (h->nats_enabled) {
                exposition_sample(e, LABELS("dependency", "nats", "result", "success"), (double) nats->passed);
                exposition_sample(e, LABELS("dependency", "nats", "result", "failure"), (double) nats->failed);
        }
        exposition_family(e, "baton_dependency_check_duration_seconds", METRIC_HISTOGRAM,
                          "Duration of the health checks (SELECT 1; a round trip through NATS).");
        exposition_histogram(e, LABELS("dependency", "database"), &db->duration);
        if (h->nats_enabled)
                exposition_histogram(e, LABELS("dependency", "nats"), &nats->duration);

        exposition_family(e, "baton_dependency_up", METRIC_GAUGE,
                          "1 when the dependency's last check passed.");
        exposition_sample(e, LABELS("dependency", "database"), h->database.checked && h->database.up);
        if (h->nats_enabled)
                exposition_sample(e, LABELS("dependency", "nats"), h->nats.checked && h->nats.up);

        exposition_scalar(e, "baton_ready", METRIC_GAUGE,
                          "1 while the ready probe answers 200.", health_ready(m->health));
        exposition_scalar(e, "baton_draining", METRIC_GAUGE,
                          "1 once a stop signal started the drain.", drain_active(m->drain));
}

static void collect_process(Manager *m, Exposition *e) {
        ProcessStats ps;
        int r = process_stats_read(&ps);

        /* Without /proc the process figures are missing, the rest stands. */
        if (r < 0) {
                log_debug_errno(r, "Cannot read the process statistics: %m");
                return;
        }
        exposition_scalar(e, "process_resident_memory_bytes", METRIC_GAUGE,
                          "Resident memory size in bytes.", (double) ps.resident_bytes);
        exposition_scalar(e, "process_virtual_memory_bytes", METRIC_GAUGE,
                          "Virtual memory size in bytes.", (double) ps.virtual_bytes);
        exposition_scalar(e, "process_open_fds", METRIC_GAUGE,
                          "Number of open file descriptors.", (double) ps.open_fds);
        exposition_scalar(e, "process_max_fds", METRIC_GAUGE,
                          "Maximum number of open file descriptors.", (double) ps.max_fds);
        exposition_scalar(e, "process_cpu_seconds_total", METRIC_COUNTER,
                          "Total user and system CPU time spent in seconds.", ps.cpu_seconds);
        exposition_scalar(e, "process_start_time_seconds", METRIC_GAUGE,
                          "Start time of the process since unix epoch in seconds.",
                          (double) m->start_realtime_usec / USEC_PER_SEC);
}

int metrics_report(Manager *m, ExpositionFormat format, char **ret_text, size_t *ret_size) {
        _cleanup_(exposition_freep) Exposition *e = NULL;
        int r = exposition_new(format, &e);

        assert(m && ret_text && ret_size);

        if (r < 0)
                return r;
        collect_build(m, e);
        collect_requests(m, e);
        collect_events(m, e);
        collect_retention(m, e);
        collect_dependencies(m, e);
        collect_process(m, e);
        return exposition_finish(e, ret_text, ret_size);
}
