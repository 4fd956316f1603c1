/* SPDX-License-Identifier: MIT */
#pragma once

/* Fan-out of events to this instance's subscribers, in order, exactly once.
 *
 * Per topic with subscribers there is a channel with a position: every id
 * up to it has been delivered to the channel's live subscribers, in order.
 * Events arrive from local publishes and the bus (NATS), possibly out of
 * order (another instance's earlier commit can arrive after our own later
 * one). An event right after the position is delivered at once; a later
 * one waits briefly for the missing ones, and if they do not come, the
 * channel reads them from PostgreSQL. That always works because ids of a
 * topic commit in order: when id N exists, every id below it exists too.
 * Hints ("topic has events up to N": NOTIFY, periodic resync, reconnects)
 * make a channel read what it missed, e.g. while NATS was down.
 *
 * Each subscriber has a cursor (the last id it was sent) and is sent only
 * ids above it. A subscriber resuming from Last-Event-ID is replayed from
 * PostgreSQL page by page, as fast as it reads, until its cursor reaches
 * the channel's position; that check and the switch to live happen
 * together on the loop, so nothing falls between replay and live. */

#include <systemd/sd-event.h>

#include "db.h"
#include "http-response.h"
#include "sse-stream.h"

typedef struct Fanout Fanout;

typedef struct FanoutSettings {
        usec_t query_timeout_usec;
        usec_t resync_interval_usec;
        /* Payload bytes per replay page (at least one event): with the
         * largest event on top, well within a stream's hard cap. */
        size_t replay_page_bytes;
} FanoutSettings;

typedef struct FanoutCounters {
        uint64_t channels;
        uint64_t subscribers;
        uint64_t delivered;             /* events handed to subscribers' streams */
        uint64_t fetched;               /* events read from PostgreSQL to fill gaps */
        uint64_t replay_pages_read;     /* replay pages read from PostgreSQL */
        uint64_t replay_pages_cached;   /* ... and served from the page cache */
        uint64_t replay_cache_bytes;    /* held by the page cache */
        uint64_t resumed;               /* subscribers that came with Last-Event-ID */
        uint64_t replayed;              /* events sent to subscribers catching up */
        uint64_t resets;                /* "reset" events: retention deleted what they asked for */
} FanoutCounters;

int fanout_new(sd_event *event, Db *read_db, StreamHub *streams, const FanoutSettings *settings,
               Fanout **ret);
Fanout *fanout_free(Fanout *f);
DEFINE_POINTER_CLEANUP(Fanout, fanout_free);

void fanout_set_settings(Fanout *f, const FanoutSettings *settings);

/* Replay pages: 1 MiB of payload, or four of the largest events. */
#define REPLAY_PAGE_BYTES_MIN (1024 * 1024)
#define REPLAY_PAGE_BYTES_FOR(max_event_bytes) \
        ((max_event_bytes) * 4 > REPLAY_PAGE_BYTES_MIN ? (max_event_bytes) * 4 : REPLAY_PAGE_BYTES_MIN)

/* Replays run on these connections (the least busy one that is up), so
 * that many replays do not serialise on one; on the read connection while
 * there are none, or none is up. */
#define FANOUT_REPLAY_CONNECTIONS_MAX 16
int fanout_add_replay_connection(Fanout *f, Db *db);

/* A committed event (local publish or bus): envelope as in event-format.h. */
void fanout_event(Fanout *f, const char *topic, uint64_t id, const char *envelope);

/* Events up to last_id exist in topic. */
void fanout_hint(Fanout *f, const char *topic, uint64_t last_id);

/* Asks PostgreSQL for the last id of every channel's topic and catches up:
 * after the bus or the listener reconnected, when notifications may have
 * been lost. Also runs every resync interval. */
void fanout_resync(Fanout *f);

/* Answers GET /api/v1/topics/{topic}/stream: a stream of the topic's events
 * after 'after' (replayed first) when has_after, else from now on. */
void fanout_subscribe(Fanout *f, HttpRequest *req, const char *topic, bool has_after, uint64_t after);

FanoutCounters fanout_counters(const Fanout *f);
