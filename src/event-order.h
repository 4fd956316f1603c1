/* SPDX-License-Identifier: MIT */
#pragma once

/* The delivery order of one topic, decided in pure code: no I/O, no clock
 * of its own (callers pass the time), no libpq, libmicrohttpd or sd-event.
 * event-fanout.c feeds a TopicOrder what happens (the position read from
 * the store, events as they arrive from this instance or the bus, hints
 * that more exist, rows read back, timers) and carries out what it answers
 * in an OrderPlan: read this range now, or look again at a time.
 *
 * What it keeps: every id is handed on (OrderOps.deliver) once, in order,
 * with no gap, from the position on. An event that comes ahead of its
 * predecessors waits, a bounded number and size of them, for GAP_WAIT
 * (two instances publishing to one topic deliver out of order all the
 * time); then the missing range is read from the store. An id the store
 * does not have either (a row deleted by hand) is a hole: after HOLE_WAIT
 * it is skipped, once, and reported, instead of being waited on for ever.
 *
 * Subscribers: order_subscriber_start() and order_replay_next() decide
 * where a subscriber starts and when its replay from the store meets the
 * live events without gap or duplicate. */

#include <stdint.h>

#include "util.h"

typedef struct OrderOps {
        /* Items are the caller's (frames); the order keeps a reference to
         * those it holds back and drops it when it is done with them. */
        void *(*ref)(void *item);
        void (*unref)(void *item);
        /* The next id, in order. */
        void (*deliver)(uint64_t id, void *item, void *userdata);
} OrderOps;

typedef struct OrderLimits {
        size_t pending_max;             /* early events held back, by count */
        size_t pending_bytes_max;       /* ... and by size; more are read back later */
        usec_t gap_wait_usec;
        usec_t hole_wait_usec;
} OrderLimits;

/* How long an early event waits for its predecessors, and a missing id
 * for a row of its own, before the order gives up on them. */
#define ORDER_GAP_WAIT_USEC (50 * USEC_PER_MSEC)
#define ORDER_HOLE_WAIT_USEC (2 * USEC_PER_SEC)
#define ORDER_PENDING_MAX 4096
#define ORDER_PENDING_BYTES_MAX (4 * 1024 * 1024)

typedef struct OrderPending {
        uint64_t id;
        void *item;
        size_t size;
} OrderPending;

typedef struct TopicOrder {
        const OrderOps *ops;
        void *userdata;
        OrderLimits limits;

        bool positioned;                /* the store said where the topic stands */
        uint64_t position;              /* the last id handed on */
        uint64_t target;                /* the highest id known to exist */
        bool fetching;                  /* a range read is out... */
        uint64_t fetch_up_to;           /* ... for ids up to this one */

        /* Early events, sorted by id, all above position: entries
         * [start, start + n) of an array allocated while there are any. */
        OrderPending *pending;
        size_t start, n, capacity, bytes;

        usec_t gap_until;               /* early events wait until then; 0: no wait */
        usec_t hole_since;              /* position + 1 came back missing then; 0: no hole */
        uint64_t skipped;               /* ids given up on, in all */
} TopicOrder;

typedef enum OrderAction {
        ORDER_NOTHING,                  /* in order, or a read is out already */
        ORDER_FETCH,                    /* read ids in (fetch_after, fetch_up_to] now */
        ORDER_WAIT,                     /* call order_tick() at 'at' */
} OrderAction;

typedef struct OrderPlan {
        OrderAction action;
        usec_t at;
        uint64_t fetch_after, fetch_up_to;
        /* Set when this input skipped a hole: ids [skipped_from, skipped_to]. */
        uint64_t skipped_from, skipped_to;
} OrderPlan;

void order_init(TopicOrder *o, const OrderOps *ops, const OrderLimits *limits, void *userdata);
/* Drops what is held back. */
void order_done(TopicOrder *o);

/* The store's last id for the topic: the order starts (or, after a resync,
 * catches up) from there. Held-back events at or below it are dropped. */
OrderPlan order_positioned(TopicOrder *o, uint64_t last_id, usec_t now);
/* An event as it arrives (any order, duplicates included). */
OrderPlan order_receive(TopicOrder *o, uint64_t id, void *item, size_t size, usec_t now);
/* Ids up to last_id exist in the store (NOTIFY, a resync, an event that
 * could not be kept): read them now if behind. */
OrderPlan order_hint(TopicOrder *o, uint64_t last_id, usec_t now);
/* The rows of the read the last plan asked for, in id order. */
OrderPlan order_fetched(TopicOrder *o, const OrderPending *rows, size_t n_rows, usec_t now);
/* The read failed: the caller retries (order_tick() after its backoff). */
void order_fetch_failed(TopicOrder *o);
/* The time a plan named has come (or a retry after a failure). */
OrderPlan order_tick(TopicOrder *o, usec_t now);

static inline bool order_behind(const TopicOrder *o) {
        return o->positioned && o->position < o->target;
}

/* Where a new subscriber starts, given the channel's position: live when
 * it gave no id (from the position on: *cursor becomes the position) or
 * is at or past the position (it came from an instance further on: ids up
 * to its cursor are skipped as they arrive); else it replays from the
 * store after *cursor. Returns true for live. */
bool order_subscriber_start(uint64_t position, bool has_after, uint64_t *cursor);

typedef enum ReplayNext {
        REPLAY_LIVE,                    /* caught up: switch to live now, in this turn */
        REPLAY_MORE,                    /* read the next page */
        REPLAY_WAIT,                    /* read again after a backoff: the store is behind */
} ReplayNext;

/* After a replay page of n_rows rows (read when the topic's last id was
 * page_last_id) that left the subscriber at *cursor: live once the cursor
 * reached the channel's position; the next page while the page had rows.
 * After an empty one, the ids up to page_last_id are holes and are passed
 * (live when that reaches the position: nothing waits for ever), and ids
 * committed since the page was read are read again: at once the first
 * time (*empty_since, the subscriber's, records when), then after a
 * backoff, and given up on (live at the position) once the store has
 * stayed behind for HOLE_WAIT. */
ReplayNext order_replay_next(uint64_t position, size_t n_rows, uint64_t page_last_id, usec_t now,
                             usec_t *empty_since, uint64_t *cursor);

/* Whether a replay page read from the store after page_from, with n_rows
 * rows up to last_id, also serves a subscriber at cursor that waits its
 * turn: it must hold the id after the cursor (so nothing in between is
 * skipped) and something past it. An empty page serves no one else. */
bool order_page_serves(uint64_t page_from, size_t n_rows, uint64_t last_id, uint64_t cursor);

/* Whether a reader at 'cursor' (a stream's last id, history's after=) lost
 * events to retention, which deletes only a topic's oldest ids: the oldest
 * stored id is past cursor + 1 (or none is stored and the topic's last id
 * is past the cursor). Then *ret_next is the first id it can still get,
 * which the reader is told ("event: reset", {"oldest": N, "requested": K}).
 * A hole in the middle (a row deleted by hand) is not this. */
bool order_pruned(uint64_t cursor, uint64_t oldest, uint64_t last_id, uint64_t *ret_next);
