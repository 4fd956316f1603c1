/* SPDX-License-Identifier: MIT */
#pragma once

/* The pruner: every EVENT_RETENTION_INTERVAL, on its own connection, it
 * deletes what the retention policy (event-retention.h) no longer keeps,
 * and the Idempotency-Keys past IDEMPOTENCY_TTL.
 *
 * One instance at a time: a round starts with pg_try_advisory_lock() and
 * is skipped when another instance holds it. Bounded: topics are listed
 * PRUNE_TOPICS_PAGE at a time, each topic is pruned PRUNE_BATCH ids per
 * statement (baton_prune(), migration 0004), keys PRUNE_BATCH per
 * statement, every statement its own short transaction. Publishing never
 * waits for it: deletes take no lock on topics, and run on a connection
 * of their own (batond-COLOUR/prune). */

#include <systemd/sd-event.h>

#include "db.h"
#include "event-retention.h"

#define PRUNE_BATCH 250
#define PRUNE_TOPICS_PAGE 500
/* After each delete the pruner waits this many times as long as it took:
 * it takes at most a quarter of one PostgreSQL backend's time, so a
 * backlog of millions (the first rounds after an upgrade) does not starve
 * publishing of the database's CPU and disk (bench/run retention). */
#define PRUNE_PACE 3

typedef struct PrunerSettings {
        RetentionPolicy defaults;
        RetentionTable table;
        usec_t interval_usec;
        usec_t idempotency_ttl_usec;
        usec_t query_timeout_usec;
} PrunerSettings;

typedef struct PrunerCounters {
        uint64_t rounds;                /* finished here */
        uint64_t rounds_elsewhere;      /* skipped: another instance held the lock */
        uint64_t rounds_failed;
        uint64_t events_pruned;
        uint64_t keys_expired;
        /* From the last round that ran here (0 before one did). */
        uint64_t topics;
        uint64_t events_stored_max;     /* the most ids a topic holds (last - oldest + 1) */
        usec_t oldest_age_usec;         /* age of the oldest event of any topic */
        usec_t last_round_usec;         /* how long it took */
} PrunerCounters;

typedef struct Pruner Pruner;

int pruner_new(sd_event *event, Db *db, const PrunerSettings *settings, Pruner **ret);
Pruner *pruner_free(Pruner *p);
DEFINE_POINTER_CLEANUP(Pruner, pruner_free);

/* Starts the rounds (the first one an interval from now): once the schema
 * has baton_prune(), that is once batond is ready. */
int pruner_start(Pruner *p);

/* From the next delete on (a round in progress uses the new policies). */
void pruner_set_settings(Pruner *p, const PrunerSettings *settings);

PrunerCounters pruner_counters(const Pruner *p);
