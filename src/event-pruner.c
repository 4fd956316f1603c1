/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "event-pruner.h"
#include "log.h"
#include "loop-util.h"

/* The advisory lock of a round ("baton-prune", any fixed number other
 * than the migration lock's would do). */
#define PRUNE_LOCK_KEY "7089075310400727400"

static const char try_lock[] = "SELECT pg_try_advisory_lock(" PRUNE_LOCK_KEY ")";
static const char unlock[] = "SELECT pg_advisory_unlock(" PRUNE_LOCK_KEY ")";

/* Each topic after $1, with its last id and its oldest event's id and age
 * (one probe of the primary key each). */
static const char list_topics[] =
        "SELECT t.name, t.last_id, o.id,"
        " (extract(epoch FROM now() - o.created_at) * 1000000)::bigint"
        " FROM topics AS t LEFT JOIN LATERAL"
        " (SELECT e.id, e.created_at FROM events AS e WHERE e.topic = t.name ORDER BY e.id LIMIT 1) AS o ON true"
        " WHERE t.name > $1 ORDER BY t.name LIMIT " STRINGIFY(PRUNE_TOPICS_PAGE);

static const char prune[] = "SELECT deleted, more FROM baton_prune($1, $2::interval, $3::bigint, $4)";

static const char expire_keys[] =
        "DELETE FROM publish_keys WHERE key IN (SELECT key FROM publish_keys"
        " WHERE created_at < now() - $1::interval ORDER BY created_at LIMIT " STRINGIFY(PRUNE_BATCH) ")";

typedef struct DueTopic {
        char name[TOPIC_NAME_MAX + 1];
        RetentionPolicy policy;
} DueTopic;

struct Pruner {
        sd_event *event;
        Db *db;
        PrunerSettings settings;
        sd_event_source *timer;

        /* The round running, if any. */
        bool running;
        bool locked;
        bool ok;                                /* no statement of the round failed */
        usec_t started;
        usec_t statement_sent;                  /* of the delete in flight */
        char after[TOPIC_NAME_MAX + 1];         /* topics listed up to this name */
        bool more_topics;
        DueTopic due[PRUNE_TOPICS_PAGE];
        size_t n_due, next_due;
        PrunerCounters round;                   /* what this round saw */

        PrunerCounters counters;
};

static void round_list(Pruner *p);
static void round_prune_next(Pruner *p);
static void round_expire_keys(Pruner *p);

#define INTERVAL_TEXT_MAX 48

static const char *interval_text(usec_t usec, char buf[static INTERVAL_TEXT_MAX]) {
        if (usec == 0)
                return NULL;            /* no limit: SQL NULL */
        snprintf(buf, INTERVAL_TEXT_MAX, "%" PRIu64 " microseconds", (uint64_t) usec);
        return buf;
}

static void schedule_next_round(Pruner *p) {
        if (event_timer_arm(p->timer, p->settings.interval_usec) < 0)
                log_error("Failed to arm the retention timer; events are no longer pruned.");
}

static void round_end(Pruner *p, bool ok) {
        p->running = false;
        p->locked = false;
        if (ok) {
                p->counters.rounds++;
                p->counters.topics = p->round.topics;
                p->counters.events_stored_max = p->round.events_stored_max;
                p->counters.oldest_age_usec = p->round.oldest_age_usec;
                p->counters.last_round_usec = now_usec(CLOCK_MONOTONIC) - p->started;
        } else
                p->counters.rounds_failed++;
        schedule_next_round(p);
}

static void on_unlocked(Db *db, const DbResult *result, void *userdata) {
        Pruner *p = userdata;

        if (result->error)
                log_warning("Could not release the retention lock: %s", result->error);
        round_end(p, p->ok && !result->error);
}

/* Gives the lock back; a round that failed still does (while the
 * connection is up: a lost connection took the lock with it). */
static void round_finish(Pruner *p, bool ok) {
        p->ok = ok;
        if (p->locked && db_connected(p->db) &&
            db_query(p->db, unlock, 0, NULL, p->settings.query_timeout_usec, on_unlocked, p) >= 0)
                return;
        round_end(p, ok);
}

static void round_fail(Pruner *p, const char *what, const char *error) {
        log_warning("Pruning events: %s failed: %s", what, strempty(error));
        round_finish(p, false);
}

static void on_keys_expired(Db *db, const DbResult *result, void *userdata) {
        Pruner *p = userdata;
        uint64_t n;

        if (result->error) {
                round_fail(p, "expiring Idempotency-Keys", result->error);
                return;
        }
        n = strtoull(PQcmdTuples(result->result), NULL, 10);
        p->counters.keys_expired += n;
        if (n < PRUNE_BATCH)
                round_finish(p, true);
        else
                round_expire_keys(p);   /* a full batch: there may be more */
}

static void round_expire_keys(Pruner *p) {
        char ttl[INTERVAL_TEXT_MAX];
        const char *params[] = { interval_text(p->settings.idempotency_ttl_usec, ttl) };

        if (db_query(p->db, expire_keys, 1, params, p->settings.query_timeout_usec, on_keys_expired, p) < 0)
                round_fail(p, "expiring Idempotency-Keys", db_last_error(p->db));
}

static void on_pruned(Db *db, const DbResult *result, void *userdata) {
        Pruner *p = userdata;
        bool more;

        if (result->error) {
                round_fail(p, "deleting old events", result->error);
                return;
        }
        p->counters.events_pruned += strtoull(PQgetvalue(result->result, 0, 0), NULL, 10);
        more = streq(PQgetvalue(result->result, 0, 1), "t");
        if (!more)
                p->next_due++;
        /* Paced: on_timer() goes on with the round. */
        if (event_timer_arm(p->timer, PRUNE_PACE * (now_usec(CLOCK_MONOTONIC) - p->statement_sent)) < 0)
                round_prune_next(p);
}

/* The next batch of the topic due first; then the next page of topics,
 * or the keys. */
static void round_prune_next(Pruner *p) {
        char age[INTERVAL_TEXT_MAX], count[24], batch[24];
        DueTopic *d;

        for (;;) {
                if (p->next_due >= p->n_due) {
                        if (p->more_topics)
                                round_list(p);
                        else
                                round_expire_keys(p);
                        return;
                }
                d = &p->due[p->next_due];
                /* A reload applies from the next batch on: a backlog of
                 * millions is a round of minutes, and a policy relaxed
                 * meanwhile must stop it. */
                d->policy = retention_policy_for(&p->settings.table, &p->settings.defaults, d->name);
                if (d->policy.max_age_usec > 0 || d->policy.max_events > 0)
                        break;
                p->next_due++;
        }
        snprintf(count, sizeof(count), "%" PRIu64, d->policy.max_events);
        snprintf(batch, sizeof(batch), "%d", PRUNE_BATCH);
        const char *params[] = {
                d->name, interval_text(d->policy.max_age_usec, age),
                d->policy.max_events > 0 ? count : NULL, batch,
        };
        p->statement_sent = now_usec(CLOCK_MONOTONIC);
        if (db_query(p->db, prune, 4, params, p->settings.query_timeout_usec, on_pruned, p) < 0)
                round_fail(p, "deleting old events", db_last_error(p->db));
}

/* Rows: name, last_id, oldest id (NULL: none), its age in microseconds. */
static void on_topics(Db *db, const DbResult *result, void *userdata) {
        Pruner *p = userdata;
        size_t rows;

        if (result->error) {
                round_fail(p, "listing topics", result->error);
                return;
        }
        rows = (size_t) PQntuples(result->result);
        p->more_topics = rows == PRUNE_TOPICS_PAGE;
        p->n_due = p->next_due = 0;
        for (size_t i = 0; i < rows; i++) {
                const char *name = PQgetvalue(result->result, (int) i, 0);
                uint64_t last_id = strtoull(PQgetvalue(result->result, (int) i, 1), NULL, 10);
                bool empty = PQgetisnull(result->result, (int) i, 2);
                uint64_t oldest = empty ? 0 : strtoull(PQgetvalue(result->result, (int) i, 2), NULL, 10);
                long long age = empty ? 0 : strtoll(PQgetvalue(result->result, (int) i, 3), NULL, 10);
                usec_t age_usec = age > 0 ? (usec_t) age : 0;
                RetentionPolicy policy = retention_policy_for(&p->settings.table, &p->settings.defaults, name);

                snprintf(p->after, sizeof(p->after), "%s", name);
                p->round.topics++;
                if (!empty && last_id >= oldest && last_id - oldest + 1 > p->round.events_stored_max)
                        p->round.events_stored_max = last_id - oldest + 1;
                if (!empty && age_usec > p->round.oldest_age_usec)
                        p->round.oldest_age_usec = age_usec;
                if (!retention_due(&policy, last_id, oldest, age_usec))
                        continue;
                DueTopic *d = &p->due[p->n_due++];
                snprintf(d->name, sizeof(d->name), "%s", name);
                d->policy = policy;
        }
        round_prune_next(p);
}

static void round_list(Pruner *p) {
        const char *params[] = { p->after };

        if (db_query(p->db, list_topics, 1, params, p->settings.query_timeout_usec, on_topics, p) < 0)
                round_fail(p, "listing topics", db_last_error(p->db));
}

static void on_locked(Db *db, const DbResult *result, void *userdata) {
        Pruner *p = userdata;

        if (result->error) {
                round_fail(p, "taking the retention lock", result->error);
                return;
        }
        if (!streq(PQgetvalue(result->result, 0, 0), "t")) {
                /* Another instance prunes: its round is as good as ours. */
                p->counters.rounds_elsewhere++;
                p->running = false;
                schedule_next_round(p);
                return;
        }
        p->locked = true;
        round_list(p);
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Pruner *p = userdata;

        if (p->running) {
                round_prune_next(p);    /* the pause after a delete is over */
                return 0;
        }
        p->running = true;
        p->started = now_usec(CLOCK_MONOTONIC);
        p->after[0] = '\0';
        p->round = (PrunerCounters) { 0 };
        if (db_query(p->db, try_lock, 0, NULL, p->settings.query_timeout_usec, on_locked, p) < 0) {
                /* Not connected: the connection retries by itself, and so
                 * do we, an interval later. */
                p->running = false;
                schedule_next_round(p);
        }
        return 0;
}

int pruner_new(sd_event *event, Db *db, const PrunerSettings *settings, Pruner **ret) {
        _cleanup_(pruner_freep) Pruner *p = NULL;
        int r;

        assert(event && db && settings && ret);

        p = calloc(1, sizeof(Pruner));
        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(event);
        p->db = db;
        p->settings = *settings;
        r = event_timer_new(event, &p->timer, 10 * USEC_PER_MSEC, on_timer, p);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

Pruner *pruner_free(Pruner *p) {
        if (!p)
                return NULL;
        db_cancel(p->db, p);
        sd_event_source_disable_unref(p->timer);
        sd_event_unref(p->event);
        return mfree(p);
}

int pruner_start(Pruner *p) {
        assert(p);

        return event_timer_arm(p->timer, p->settings.interval_usec);
}

void pruner_set_settings(Pruner *p, const PrunerSettings *settings) {
        assert(p && settings);

        p->settings = *settings;
}

PrunerCounters pruner_counters(const Pruner *p) {
        assert(p);

        return p->counters;
}
