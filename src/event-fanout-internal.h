/* SPDX-License-Identifier: MIT */
#pragma once

/* What the fan-out's two files share: event-fanout.c (channels, their
 * order and live delivery) and event-fanout-replay.c (replays from the
 * store up to the live position). Nothing else includes this. */

#include "event-fanout.h"
#include "event-format.h"
#include "event-order.h"
#include "event-replay-cache.h"
#include "event-store.h"
#include "hashmap.h"
#include "list.h"
#include "sse-frame.h"
#include "sse-stream.h"

#define RETRY_MIN_USEC (100 * USEC_PER_MSEC)
#define RETRY_MAX_USEC (5 * USEC_PER_SEC)

typedef enum SubscriberState {
        SUBSCRIBER_WAITING,             /* for the channel to know its position */
        SUBSCRIBER_REPLAYING,
        SUBSCRIBER_LIVE,
} SubscriberState;

typedef struct Channel Channel;

typedef struct Subscriber {
        Channel *channel;
        HttpRequest *req;               /* until the stream opens */
        Stream *stream;
        SubscriberState state;
        uint64_t cursor;                /* the last id sent */
        bool has_after;
        bool fetching;
        bool wants_room;                /* replay waits for the client to read */
        bool holds_slot;                /* one of REPLAY_SLOTS */
        size_t page_rows;               /* rows to ask for next; 0: FETCH_PAGE_FIRST */
        Db *replay_db;                  /* where its page query runs, while fetching */
        unsigned failures;
        usec_t empty_since;             /* an empty page left it behind the position then */
        sd_event_source *retry;
        ListNode in_channel;            /* in its channel's subscribers */
        ListNode in_waiting;            /* in the fanout's, waiting for a replay slot */
        ListNode in_cache_line;         /* in the fanout's, to be served from the cache */
} Subscriber;

/* A connection replays run on, and how many page queries it has. */
typedef struct ReplayConnection {
        Db *db;
        unsigned in_flight;
} ReplayConnection;

/* Events in order, handed on by the channel's TopicOrder, waiting for
 * their turn to go to the subscribers: a ring. */
typedef struct ReadyQueue {
        OrderPending *items;
        size_t head, count, capacity;
} ReadyQueue;

struct Channel {
        Fanout *fanout;
        char topic[TOPIC_NAME_MAX + 1];
        TopicOrder order;
        bool initializing;
        unsigned failures;
        sd_event_source *timer;         /* the order's wait, or a retry after a failure */
        ListNode subscribers;
        size_t n_subscribers;
        ReadyQueue ready;
        ListNode in_busy;               /* in the fanout's, while ready holds events */
        ListNode in_unused;             /* in the fanout's, once its last subscriber left */
        HashmapEntry by_topic;          /* in the fanout's channels */
};

struct Fanout {
        sd_event *event;
        Db *db;
        StreamHub *streams;
        FanoutSettings settings;
        Hashmap channels;               /* by topic */
        ListNode busy;                  /* channels with events ready, in turn */
        ListNode unused;                /* channels to free once the turn is over */
        sd_event_source *deliver_source;
        sd_event_source *reap_source;
        FanoutCounters counters;
        ReplayConnection replay[FANOUT_REPLAY_CONNECTIONS_MAX];
        size_t n_replay;
        size_t slots_used;
        ListNode replay_waiting;        /* subscribers, first come first served */
        sd_event_source *grant_source;  /* hands freed slots to the waiting */
        ReplayCache cache;              /* pages read lately, for any replay */
        ListNode cache_line;            /* subscribers the cache has a page for */
        sd_event_source *cache_source;  /* serves them, a bounded number a turn */
        bool resyncing;
        bool resync_again;              /* asked for while one ran */
        sd_event_source *resync_timer;
};

/* --- event-fanout.c --- */

usec_t fanout_backoff(unsigned failures);
/* The frame of the i-th stored event of a result. */
Frame *fanout_row_frame(const DbResult *result, size_t i, const char *topic, uint64_t *ret_id);
void fanout_schedule(sd_event_source *source, int enabled, const char *what);

/* --- event-fanout-replay.c --- */

/* A subscriber behind the channel's position replays from its cursor,
 * page after page, and goes live in the turn it catches up. */
void replay_begin(Subscriber *sub);
/* Its next page (again, after a failure's backoff). */
void replay_fetch(Subscriber *sub);
/* Live from now on: the channel sends it every event past its cursor. */
void replay_go_live(Subscriber *sub);
/* The subscriber goes: its query and its slot with it. */
void replay_end(Subscriber *sub);
/* The fan-out's defer source that hands freed slots to those waiting. */
int replay_on_grant(sd_event_source *source, void *userdata);
/* The fan-out's defer source that serves replays from the page cache. */
int replay_on_cache_turn(sd_event_source *source, void *userdata);
/* The page cache's bound in bytes for these settings. */
size_t replay_cache_max_bytes(const FanoutSettings *settings);
/* The most pages the cache keeps (each lookup scans them). */
#define REPLAY_CACHE_PAGES_MAX 256
