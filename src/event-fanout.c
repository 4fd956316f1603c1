/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>

#include "event-fanout.h"
#include "event-format.h"
#include "event-order.h"
#include "event-store.h"
#include "hashmap.h"
#include "list.h"
#include "log.h"
#include "loop-util.h"
#include "ring.h"

/* Events read per replay page, at most. A page also ends at
 * replay_page_bytes of payload (at least one event). The database reads
 * every row the query allows before the byte bound cuts the page, so each
 * replay asks for about as many rows as fit its bytes at the event size it
 * saw last (FETCH_PAGE_FIRST for its first page): asking for 2,000 rows of
 * which 64 events of 16 KB fit made PostgreSQL read 31 times what it sent. */
#define FETCH_PAGE 2000
#define FETCH_PAGE_FIRST 256
#define FETCH_PAGE_MIN 16
/* Replays are pipelined: the next page is asked for when the stream has
 * written all but half a page of the last one, so the query overlaps the
 * writing. And they are bounded: a replay needs one of REPLAY_SLOTS to
 * fetch a page, and holds it until that page is written down to the
 * half-page mark; replays beyond that wait their turn, first come first
 * served, each page a turn. So replays hold about REPLAY_SLOTS x 1.5
 * pages of memory however many streams catch up at once (README: Memory).
 * Those waiting in line take from each page what it holds after their
 * own id (replay_page_share()): thousands resuming from nearby ids cost a
 * few queries, not one each. */
#define REPLAY_SLOTS 32
#define RETRY_MIN_USEC (100 * USEC_PER_MSEC)
#define RETRY_MAX_USEC (5 * USEC_PER_SEC)
/* Sends (an event to one subscriber) per loop turn, across channels: a
 * burst is delivered over several turns, so that one topic's batch of a
 * thousand events stalls neither other topics nor the probes. An event
 * goes to all of a channel's subscribers in one turn, whatever it costs. */
#define DELIVER_SENDS_PER_TURN 4096
/* Sends, at most, that sharing one replay page with streams waiting their
 * turn may cost (in the page's turn). */
#define SHARE_SENDS_PER_PAGE 8192
/* A stream request waits this long at most for its channel to learn its
 * position (one query); then, or at once when the query fails, it is told
 * 503 unavailable (an ended "unavailable" event for an EventSource, which
 * then retries), never left without an answer while the database is down. */
#define START_TIMEOUT_USEC (3 * USEC_PER_SEC)

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
        sd_event_source *retry;
        ListNode in_channel;            /* in its channel's subscribers */
        ListNode in_waiting;            /* in the fanout's, waiting for a replay slot */
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
        bool resyncing;
        bool resync_again;              /* asked for while one ran */
        sd_event_source *resync_timer;
};

static void subscriber_fetch(Subscriber *sub);
static void on_replay_page(Db *db, const DbResult *result, void *userdata);
static void channel_apply(Channel *ch, OrderPlan plan);

/* --- helpers --- */

static Channel *channel_find(Fanout *f, const char *topic) {
        HashmapEntry *e = hashmap_get(&f->channels, topic);
        return e ? container_of(e, Channel, by_topic) : NULL;
}

static usec_t backoff(unsigned failures) {
        usec_t d = RETRY_MIN_USEC << (failures < 6 ? failures : 6);
        return d > RETRY_MAX_USEC ? RETRY_MAX_USEC : d;
}

static usec_t now(void) {
        return now_usec(CLOCK_MONOTONIC);
}

/* The frame of the i-th stored event of a result. */
static Frame *row_frame(const DbResult *result, size_t i, const char *topic, uint64_t *ret_id) {
        _cleanup_free_ char *envelope = NULL;
        StoredEvent e;
        size_t size;

        store_event(result, i, &e);
        if (event_envelope(e.id, topic, e.ts, e.payload, e.payload_size, &envelope, &size) < 0)
                return NULL;
        *ret_id = e.id;
        return event_frame(e.id, envelope);
}

/* -ESTALE: the loop has finished (the HTTP server, freed after it, ends
 * the last streams); fanout_free() does what is left. */
static void schedule(sd_event_source *source, int enabled, const char *what) {
        int r = sd_event_source_set_enabled(source, enabled);

        if (r < 0 && r != -ESTALE)
                log_error_errno(r, "Failed to schedule %s: %m", what);
}

static void channel_arm(Channel *ch, usec_t delay) {
        if (event_timer_arm(ch->timer, delay) < 0)
                log_error("Failed to arm the timer of topic %s.", ch->topic);
}

/* --- the ready queue and delivery, a budget per turn --- */

static void *order_ref(void *item) {
        return frame_ref(item);
}

static void order_unref(void *item) {
        frame_unref(item);
}

static int ready_push(ReadyQueue *q, uint64_t id, Frame *frame) {
        if (q->count == q->capacity &&
            ring_grow((void **) &q->items, sizeof(*q->items), &q->head, q->count, &q->capacity, 16) < 0)
                return -ENOMEM;
        q->items[(q->head + q->count) % q->capacity] = (OrderPending) {
                .id = id, .item = frame_ref(frame), .size = frame->size,
        };
        q->count++;
        return 0;
}

static OrderPending ready_pop(ReadyQueue *q) {
        assert(q->count > 0);

        OrderPending p = q->items[q->head];

        q->head = (q->head + 1) % q->capacity;
        if (--q->count == 0) {
                q->items = mfree(q->items);
                q->head = q->capacity = 0;
        }
        return p;
}

static void ready_done(ReadyQueue *q) {
        while (q->count > 0)
                frame_unref(ready_pop(q).item);
}

/* The order hands on the next id: it goes to the subscribers on a later
 * turn. Without memory to queue it, live subscribers could miss it: end
 * their streams, they resume from what they have. */
static void on_order_deliver(uint64_t id, void *item, void *userdata) {
        Channel *ch = userdata;
        Fanout *f = ch->fanout;

        if (ready_push(&ch->ready, id, item) < 0) {
                LIST_FOREACH(sub, &ch->subscribers, Subscriber, in_channel)
                        if (sub->state == SUBSCRIBER_LIVE && sub->cursor < id)
                                stream_end_with_reconnect(sub->stream, "out of memory");
                return;
        }
        if (!list_linked(&ch->in_busy)) {
                list_append(&f->busy, &ch->in_busy);
                schedule(f->deliver_source, SD_EVENT_ON, "event delivery");
        }
}

static const OrderOps order_ops = {
        .ref = order_ref,
        .unref = order_unref,
        .deliver = on_order_deliver,
};

/* Sends event id to every live subscriber that has not seen it; returns
 * the sends it cost. */
static size_t channel_send(Channel *ch, uint64_t id, Frame *frame) {
        Fanout *f = ch->fanout;
        size_t sends = 0;

        LIST_FOREACH(sub, &ch->subscribers, Subscriber, in_channel) {
                if (sub->state != SUBSCRIBER_LIVE || id <= sub->cursor)
                        continue;
                int r = stream_send_frame(sub->stream, frame);
                sends++;
                if (r >= 0) {
                        sub->cursor = id;
                        f->counters.delivered++;
                } else if (r != -ENOBUFS && r != -EPIPE)
                        /* Skipping this id silently would be a gap: end the
                         * stream; the client resumes from what it has. */
                        stream_end_with_reconnect(sub->stream, "out of memory");
        }
        return sends;
}

static int on_deliver_turn(sd_event_source *source, void *userdata) {
        Fanout *f = userdata;
        size_t budget = DELIVER_SENDS_PER_TURN;

        while (budget > 0 && !list_empty(&f->busy)) {
                Channel *ch = list_first(&f->busy, Channel, in_busy);
                OrderPending p = ready_pop(&ch->ready);
                size_t sends = channel_send(ch, p.id, p.item);

                frame_unref(p.item);
                budget = sends >= budget ? 0 : budget - (sends ? sends : 1);
                /* Each channel in turn, one event at a time. */
                list_remove(&ch->in_busy);
                if (ch->ready.count > 0)
                        list_append(&f->busy, &ch->in_busy);
        }
        if (list_empty(&f->busy))
                schedule(source, SD_EVENT_OFF, "a pause of event delivery");
        return 0;
}

/* --- the channel's order, and what its plans ask for --- */

static void on_range_fetched(Db *db, const DbResult *result, void *userdata) {
        Channel *ch = userdata;
        Fanout *f = ch->fanout;
        size_t n, built = 0;
        OrderPending *rows;

        if (result->error) {
                log_warning("Cannot read events of topic %s from PostgreSQL: %s", ch->topic,
                            result->error);
                order_fetch_failed(&ch->order);
                channel_arm(ch, backoff(ch->failures++));
                return;
        }
        n = store_n_events(result);
        rows = calloc(n ? n : 1, sizeof(OrderPending));
        if (!rows) {
                order_fetch_failed(&ch->order);
                channel_arm(ch, backoff(ch->failures++));
                return;
        }
        for (; built < n; built++) {
                uint64_t id;
                Frame *frame = row_frame(result, built, ch->topic, &id);
                if (!frame)
                        break;          /* the rest is read again */
                rows[built] = (OrderPending) { .id = id, .item = frame, .size = frame->size };
        }
        ch->failures = 0;
        f->counters.fetched += built;
        channel_apply(ch, order_fetched(&ch->order, rows, built, now()));
        for (size_t i = 0; i < built; i++)
                frame_unref(rows[i].item);
        free(rows);
}

static void channel_fetch(Channel *ch, uint64_t after, uint64_t up_to) {
        Fanout *f = ch->fanout;
        int r;

        (void) sd_event_source_set_enabled(ch->timer, SD_EVENT_OFF);
        r = store_query_range(f->db, ch->topic, after, up_to, f->settings.query_timeout_usec,
                              on_range_fetched, ch);
        if (r < 0) {
                order_fetch_failed(&ch->order);
                channel_arm(ch, backoff(ch->failures++));
        }
}

/* Carries out what the order decided. */
static void channel_apply(Channel *ch, OrderPlan plan) {
        if (plan.skipped_to > 0)
                log_warning("Topic %s: events %" PRIu64 " to %" PRIu64 " are not in the database "
                            "(deleted?); delivering on from %" PRIu64 ".", ch->topic, plan.skipped_from,
                            plan.skipped_to, plan.skipped_to + 1);
        switch (plan.action) {
        case ORDER_FETCH:
                channel_fetch(ch, plan.fetch_after, plan.fetch_up_to);
                break;
        case ORDER_WAIT: {
                usec_t t = now();
                channel_arm(ch, plan.at > t ? plan.at - t : 0);
                break;
        }
        case ORDER_NOTHING:
                break;
        }
}

/* --- subscribers --- */

/* --- replays: their connections and their slots --- */

/* The least busy connected replay connection; the read connection when
 * there are none (or none is up). */
static Db *replay_db_pick(Fanout *f) {
        ReplayConnection *best = NULL;

        for (size_t i = 0; i < f->n_replay; i++)
                if (db_connected(f->replay[i].db) && (!best || f->replay[i].in_flight < best->in_flight))
                        best = &f->replay[i];
        if (!best)
                return f->db;
        best->in_flight++;
        return best->db;
}

static void replay_db_done(Fanout *f, Db *db) {
        for (size_t i = 0; i < f->n_replay; i++)
                if (f->replay[i].db == db) {
                        assert(f->replay[i].in_flight > 0);
                        f->replay[i].in_flight--;
                }
}

/* The subscriber's page query goes, its callback with it. */
static void subscriber_cancel_fetch(Subscriber *sub) {
        Fanout *f = sub->channel->fanout;

        if (!sub->fetching)
                return;
        db_cancel(sub->replay_db, sub);
        replay_db_done(f, sub->replay_db);
        sub->fetching = false;
        sub->replay_db = NULL;
}

/* granted: the grant handed this subscriber its turn (it was first in
 * line); others join the line if anyone waits. */
static bool replay_slot_take(Subscriber *sub, bool granted) {
        Fanout *f = sub->channel->fanout;

        if (sub->holds_slot)
                return true;
        if (f->slots_used < REPLAY_SLOTS && (granted || list_empty(&f->replay_waiting))) {
                f->slots_used++;
                sub->holds_slot = true;
                return true;
        }
        if (!list_linked(&sub->in_waiting))
                list_append(&f->replay_waiting, &sub->in_waiting);
        return false;
}

static void replay_slot_release(Subscriber *sub) {
        Fanout *f = sub->channel->fanout;

        list_remove(&sub->in_waiting);
        if (!sub->holds_slot)
                return;
        sub->holds_slot = false;
        assert(f->slots_used > 0);
        f->slots_used--;
        if (!list_empty(&f->replay_waiting))
                schedule(f->grant_source, SD_EVENT_ONESHOT, "handing out replay slots");
}

static void subscriber_fetch_turn(Subscriber *sub, bool granted);

static int on_grant(sd_event_source *source, void *userdata) {
        Fanout *f = userdata;

        while (f->slots_used < REPLAY_SLOTS && !list_empty(&f->replay_waiting)) {
                Subscriber *sub = list_first(&f->replay_waiting, Subscriber, in_waiting);
                list_remove(&sub->in_waiting);
                subscriber_fetch_turn(sub, true);
        }
        return 0;
}

static void subscriber_go_live(Subscriber *sub) {
        sub->state = SUBSCRIBER_LIVE;
        stream_set_drain_callback(sub->stream, 0, NULL, NULL);
        replay_slot_release(sub);
}

/* As many rows as fit a page at the average size of this page's events. */
static size_t next_page_rows(const DbResult *result, size_t page_bytes) {
        size_t rows = store_n_events(result), bytes = 0, want;
        StoredEvent e;

        if (rows == 0)
                return FETCH_PAGE_FIRST;
        for (size_t i = 0; i < rows; i++) {
                store_event(result, i, &e);
                bytes += e.payload_size;
        }
        want = page_bytes / (bytes / rows + 1) + 1;
        return want < FETCH_PAGE_MIN ? FETCH_PAGE_MIN : want > FETCH_PAGE ? FETCH_PAGE : want;
}

/* The slot goes to others while this one backs off. */
static void subscriber_retry(Subscriber *sub) {
        replay_slot_release(sub);
        if (event_timer_arm(sub->retry, backoff(sub->failures++)) < 0)
                stream_end_with_reconnect(sub->stream, "replay failed");
}

/* A replay page's events as frames, built once for every subscriber the
 * page serves. */
typedef struct ReplayPage {
        uint64_t from;                  /* read after this id */
        size_t n;
        uint64_t *ids;
        Frame **frames;
} ReplayPage;

static void replay_page_free(ReplayPage *page) {
        for (size_t i = 0; i < page->n; i++)
                frame_unref(page->frames[i]);
        free(page->ids);
        free(page->frames);
}

static int replay_page_build(const DbResult *result, const char *topic, uint64_t from, ReplayPage *ret) {
        size_t rows = store_n_events(result);
        ReplayPage page = { .from = from };

        if (rows > 0) {
                page.ids = calloc(rows, sizeof(uint64_t));
                page.frames = calloc(rows, sizeof(Frame *));
                if (!page.ids || !page.frames) {
                        replay_page_free(&page);
                        return -ENOMEM;
                }
        }
        for (; page.n < rows; page.n++) {
                page.frames[page.n] = row_frame(result, page.n, topic, &page.ids[page.n]);
                if (!page.frames[page.n]) {
                        replay_page_free(&page);
                        return -ENOMEM;
                }
        }
        *ret = page;
        return 0;
}

static void subscriber_next_page(Subscriber *sub) {
        if (stream_queued_bytes(sub->stream) > sub->channel->fanout->settings.replay_page_bytes / 2)
                sub->wants_room = true;         /* on_stream_drained() goes on */
        else
                subscriber_fetch(sub);
}

/* Sends sub what the page holds after its cursor; false when its stream
 * is ending. Then: live, or the next page (at once, or when the stream has
 * room; a subscriber that shared another's page waits its turn again). */
static bool replay_page_serve(Subscriber *sub, const ReplayPage *page, bool own) {
        Channel *ch = sub->channel;
        size_t sent = 0;
        int r = 0;

        for (size_t i = 0; i < page->n && r >= 0; i++) {
                if (page->ids[i] <= sub->cursor)
                        continue;
                r = stream_send_frame(sub->stream, page->frames[i]);
                if (r >= 0) {
                        sub->cursor = page->ids[i];
                        sent++;
                }
        }
        if (r < 0) {
                if (r != -EPIPE && r != -ENOBUFS)
                        stream_end_with_reconnect(sub->stream, "out of memory");
                return false;
        }
        /* Caught up with what this instance delivers live: switch now, in the
         * same loop turn, so no event can fall in between. Everything after
         * the position reaches the channel (and so this subscriber) live. */
        if (order_replay_next(ch->order.position, sent, &sub->cursor) == REPLAY_LIVE)
                subscriber_go_live(sub);
        else if (own)
                subscriber_next_page(sub);
        /* else it is still in line, from further on */
        return true;
}

/* Subscribers of the channel waiting their turn that the page serves too.
 * At a deploy's drain timeout thousands of streams resume on one instance
 * from ids a few events apart: one query serves them all instead of one
 * each (10,000 queries took 7 s). They share its frames, so memory grows
 * only by their queue entries (MAX_STREAM_BACKLOG_BYTES counts a frame
 * once). */
static void replay_page_share(Channel *ch, const Subscriber *owner, const ReplayPage *page) {
        uint64_t last = page->n > 0 ? page->ids[page->n - 1] : 0;
        /* At most SHARE_SENDS_PER_PAGE sends in all, as this is one turn of
         * the loop: a page of 2,000 events shared by 1,000 streams would
         * stall live delivery for a second. */
        size_t sharers = SHARE_SENDS_PER_PAGE / (page->n + 1) + 1;

        LIST_FOREACH_SAFE(sub, next, &ch->subscribers, Subscriber, in_channel) {
                if (sharers == 0)
                        break;
                if (sub == owner || sub->state != SUBSCRIBER_REPLAYING || sub->fetching || sub->wants_room ||
                    !list_linked(&sub->in_waiting))
                        continue;
                if (!order_page_serves(page->from, page->n, last, sub->cursor))
                        continue;
                (void) replay_page_serve(sub, page, false);
                sharers--;
        }
}

static void on_replay_page(Db *db, const DbResult *result, void *userdata) {
        Subscriber *sub = userdata;
        Channel *ch = sub->channel;
        ReplayPage page;

        sub->fetching = false;
        sub->replay_db = NULL;
        replay_db_done(ch->fanout, db);
        if (result->error) {
                log_warning("Cannot replay topic %s from PostgreSQL: %s", ch->topic, result->error);
                subscriber_retry(sub);
                return;
        }
        sub->failures = 0;
        sub->page_rows = next_page_rows(result, ch->fanout->settings.replay_page_bytes);
        if (replay_page_build(result, ch->topic, sub->cursor, &page) < 0) {
                stream_end_with_reconnect(sub->stream, "out of memory");
                return;
        }
        (void) replay_page_serve(sub, &page, true);
        replay_page_share(ch, sub, &page);
        replay_page_free(&page);
}

static void subscriber_fetch_turn(Subscriber *sub, bool granted) {
        Fanout *f = sub->channel->fanout;
        Db *db;
        int r;

        if (sub->fetching)
                return;
        sub->wants_room = false;
        if (!replay_slot_take(sub, granted))
                return;         /* on_grant() calls again */
        db = replay_db_pick(f);
        r = store_query_page(db, sub->channel->topic, sub->cursor,
                             sub->page_rows > 0 ? sub->page_rows : FETCH_PAGE_FIRST,
                             f->settings.replay_page_bytes, f->settings.query_timeout_usec,
                             on_replay_page, sub);
        if (r < 0) {
                replay_db_done(f, db);
                subscriber_retry(sub);
                return;
        }
        sub->fetching = true;
        sub->replay_db = db;
}

static void subscriber_fetch(Subscriber *sub) {
        subscriber_fetch_turn(sub, false);
}

/* The last page is written down to half a page: give the slot back (a
 * replay waiting goes first) and ask for the next one. */
static void on_stream_drained(Stream *stream, void *userdata) {
        Subscriber *sub = userdata;

        if (sub->state != SUBSCRIBER_REPLAYING || !sub->wants_room)
                return;
        replay_slot_release(sub);
        subscriber_fetch(sub);
}

static void subscriber_free(Subscriber *sub);
static void on_stream_closed(Stream *stream, void *userdata);

/* The stream cannot start now: answer at once and let the client retry. */
static void subscriber_unavailable(Subscriber *sub, const char *why) {
        HttpRequest *req = TAKE_PTR(sub->req);

        assert(sub->state == SUBSCRIBER_WAITING && req);

        http_request_on_end(req, NULL, NULL);
        http_respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                           "the stream cannot start: %s; retry shortly", why);
        http_request_add_response_header(req, MHD_HTTP_HEADER_RETRY_AFTER, "1");
        subscriber_free(sub);
}

static void channel_unavailable(Channel *ch, const char *why) {
        LIST_FOREACH_SAFE(sub, next, &ch->subscribers, Subscriber, in_channel)
                if (sub->state == SUBSCRIBER_WAITING)
                        subscriber_unavailable(sub, why);
}

/* A replay page to retry, or (still waiting) the start deadline. */
static int on_subscriber_retry(sd_event_source *source, uint64_t usec, void *userdata) {
        Subscriber *sub = userdata;

        if (sub->state == SUBSCRIBER_WAITING)
                subscriber_unavailable(sub, "the database did not answer in time");
        else
                subscriber_fetch(sub);
        return 0;
}

/* The channel knows its position: open the stream and serve it. The
 * response starts only now, so "from now on" means from this position: an
 * event the client publishes after seeing the answer is above it. */
static void subscriber_start(Subscriber *sub) {
        Channel *ch = sub->channel;
        HttpRequest *req = TAKE_PTR(sub->req);
        int r;

        /* In time: the start deadline is off; the timer is for replays now. */
        if (sd_event_source_set_enabled(sub->retry, SD_EVENT_OFF) < 0)
                log_debug("Failed to stop a stream's start deadline, ignoring.");
        r = stream_open(ch->fanout->streams, req, on_stream_closed, sub, &sub->stream);
        if (r < 0) {
                http_request_on_end(req, NULL, NULL);
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                subscriber_free(sub);
                return;
        }
        if (order_subscriber_start(ch->order.position, sub->has_after, &sub->cursor)) {
                subscriber_go_live(sub);
                return;
        }
        sub->state = SUBSCRIBER_REPLAYING;
        stream_set_drain_callback(sub->stream, ch->fanout->settings.replay_page_bytes / 2, on_stream_drained, sub);
        subscriber_fetch(sub);
}

/* --- channel life --- */

static void channel_free(Channel *ch) {
        Fanout *f = ch->fanout;

        /* A query of ours may be in flight on the shared connection. */
        db_cancel(f->db, ch);
        hashmap_remove(&f->channels, &ch->by_topic);
        list_remove(&ch->in_busy);
        list_remove(&ch->in_unused);
        order_done(&ch->order);
        ready_done(&ch->ready);
        sd_event_source_disable_unref(ch->timer);
        assert(f->counters.channels > 0);
        f->counters.channels--;
        free(ch);
}

/* A channel whose last subscriber left goes at the end of the turn, not
 * now: whoever freed the subscriber may still be walking the channel (a
 * stream that failed to open for its only subscriber, on_position()'s
 * walk over the waiting ones). A subscriber arriving meanwhile keeps it. */
static void channel_release(Channel *ch) {
        Fanout *f = ch->fanout;

        if (ch->n_subscribers > 0 || list_linked(&ch->in_unused))
                return;
        list_append(&f->unused, &ch->in_unused);
        schedule(f->reap_source, SD_EVENT_ONESHOT, "freeing a channel");
}

static int on_reap(sd_event_source *source, void *userdata) {
        Fanout *f = userdata;

        LIST_FOREACH_SAFE(ch, next, &f->unused, Channel, in_unused)
                channel_free(ch);
        return 0;
}

static void on_position(Db *db, const DbResult *result, void *userdata) {
        Channel *ch = userdata;
        OrderPlan plan;

        ch->initializing = false;
        if (result->error) {
                log_warning("Cannot read the position of topic %s: %s", ch->topic, result->error);
                channel_arm(ch, backoff(ch->failures++));
                channel_unavailable(ch, "the database is unavailable");
                return;
        }
        ch->failures = 0;
        plan = order_positioned(&ch->order, store_position(result), now());
        /* Subscribers first, at this position; then the events that arrived
         * while we asked: those above the position reach them live, those
         * at or below it are history (replays cover them). Starting one may
         * end it (and release the channel, which stays until the turn ends). */
        LIST_FOREACH_SAFE(sub, next, &ch->subscribers, Subscriber, in_channel)
                if (sub->state == SUBSCRIBER_WAITING)
                        subscriber_start(sub);
        channel_apply(ch, plan);
}

static void channel_init(Channel *ch) {
        int r;

        if (ch->initializing || ch->order.positioned)
                return;
        r = store_query_position(ch->fanout->db, ch->topic, ch->fanout->settings.query_timeout_usec,
                                 on_position, ch);
        if (r < 0) {
                channel_arm(ch, backoff(ch->failures++));
                channel_unavailable(ch, "the database is unavailable");
                return;
        }
        ch->initializing = true;
}

static int on_channel_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Channel *ch = userdata;

        if (!ch->order.positioned)
                channel_init(ch);
        else
                channel_apply(ch, order_tick(&ch->order, now()));
        return 0;
}

static Channel *channel_new(Fanout *f, const char *topic) {
        static const OrderLimits limits = {
                .pending_max = ORDER_PENDING_MAX,
                .pending_bytes_max = ORDER_PENDING_BYTES_MAX,
                .gap_wait_usec = ORDER_GAP_WAIT_USEC,
                .hole_wait_usec = ORDER_HOLE_WAIT_USEC,
        };
        Channel *ch = calloc(1, sizeof(Channel));

        if (!ch)
                return NULL;
        ch->fanout = f;
        list_init(&ch->subscribers);
        order_init(&ch->order, &order_ops, &limits, ch);
        snprintf(ch->topic, sizeof(ch->topic), "%s", topic);
        if (event_timer_new(f->event, &ch->timer, USEC_PER_MSEC, on_channel_timer, ch) < 0) {
                free(ch);
                return NULL;
        }
        /* Callers looked the topic up first: it is not there. */
        if (hashmap_put(&f->channels, &ch->by_topic, ch->topic) < 0) {
                sd_event_source_disable_unref(ch->timer);
                free(ch);
                return NULL;
        }
        f->counters.channels++;
        channel_init(ch);
        return ch;
}

static void subscriber_free(Subscriber *sub) {
        Channel *ch = sub->channel;

        subscriber_cancel_fetch(sub);
        replay_slot_release(sub);
        sd_event_source_disable_unref(sub->retry);
        list_remove(&sub->in_channel);
        assert(ch->n_subscribers > 0 && ch->fanout->counters.subscribers > 0);
        ch->n_subscribers--;
        ch->fanout->counters.subscribers--;
        free(sub);
        channel_release(ch);
}

static void on_stream_closed(Stream *stream, void *userdata) {
        subscriber_free(userdata);
}

/* The client left (or the server stops) before the stream opened. */
static void on_waiting_request_end(HttpRequest *req, void *userdata) {
        subscriber_free(userdata);
}

void fanout_subscribe(Fanout *f, HttpRequest *req, const char *topic, bool has_after, uint64_t after) {
        Channel *ch;
        Subscriber *sub;

        assert(f && req && topic);

        ch = channel_find(f, topic);
        if (!ch)
                ch = channel_new(f, topic);
        sub = ch ? calloc(1, sizeof(Subscriber)) : NULL;
        if (!sub || event_timer_new(f->event, &sub->retry, USEC_PER_MSEC, on_subscriber_retry, sub) < 0) {
                free(sub);
                if (ch)
                        channel_release(ch);
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        list_remove(&ch->in_unused);    /* it was about to go */
        sub->channel = ch;
        sub->req = req;
        sub->cursor = after;
        sub->has_after = has_after;
        sub->state = SUBSCRIBER_WAITING;
        list_append(&ch->subscribers, &sub->in_channel);
        ch->n_subscribers++;
        f->counters.subscribers++;

        /* Until the channel knows its position the request waits without an
         * answer (see subscriber_start()), START_TIMEOUT_USEC at most. */
        http_request_on_end(req, on_waiting_request_end, sub);
        if (ch->order.positioned)
                subscriber_start(sub);
        else if (event_timer_arm(sub->retry, START_TIMEOUT_USEC) < 0)
                log_warning("Failed to arm a stream's start deadline.");
}

/* --- inputs --- */

void fanout_event(Fanout *f, const char *topic, uint64_t id, const char *envelope) {
        assert(f && topic && envelope);

        Channel *ch = channel_find(f, topic);
        Frame *frame;

        if (!ch)
                return;         /* nobody here listens to this topic */
        frame = event_frame(id, envelope);
        if (!frame) {
                /* Cannot build it now: read it back later. */
                channel_apply(ch, order_hint(&ch->order, id, now()));
                return;
        }
        channel_apply(ch, order_receive(&ch->order, id, frame, frame->size, now()));
        frame_unref(frame);
}

void fanout_hint(Fanout *f, const char *topic, uint64_t last_id) {
        assert(f && topic);

        Channel *ch = channel_find(f, topic);

        if (!ch)
                return;
        /* Even an old hint re-kicks a channel that is behind: periodic
         * resyncs are also what unsticks one whose timer failed. */
        channel_apply(ch, order_hint(&ch->order, last_id, now()));
}

static void on_resync(Db *db, const DbResult *result, void *userdata) {
        Fanout *f = userdata;

        f->resyncing = false;
        if (result->error)
                log_debug("Resync failed, trying again: %s", result->error);
        else
                for (size_t i = 0; i < store_n_positions(result); i++) {
                        const char *topic;
                        uint64_t last_id;
                        store_position_at(result, i, &topic, &last_id);
                        fanout_hint(f, topic, last_id);
                }
        /* A reconnect asked while this ran: its outage may postdate our
         * snapshot. A failure: the next interval retries anyway. */
        if (f->resync_again && !result->error) {
                f->resync_again = false;
                fanout_resync(f);
        }
}

void fanout_resync(Fanout *f) {
        _cleanup_free_ const char **topics = NULL;
        size_t n = 0;

        assert(f);

        if (f->resyncing) {
                f->resync_again = true;
                return;
        }
        if (f->counters.channels == 0 || !db_connected(f->db))
                return;         /* the periodic resync runs once it is back */
        topics = calloc(hashmap_size(&f->channels), sizeof(char *));
        if (!topics)
                return;
        HashmapIter it = HASHMAP_ITER_INIT;
        for (HashmapEntry *e; (e = hashmap_iterate(&f->channels, &it)); )
                if (container_of(e, Channel, by_topic)->order.positioned)
                        topics[n++] = e->key;
        if (store_query_positions(f->db, topics, n, f->settings.query_timeout_usec, on_resync, f) >= 0)
                f->resyncing = true;
}

static int on_resync_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Fanout *f = userdata;

        fanout_resync(f);
        if (event_timer_arm(source, f->settings.resync_interval_usec) < 0)
                log_error("Failed to re-arm the resync timer.");
        return 0;
}

/* --- the fanout --- */

int fanout_new(sd_event *event, Db *read_db, StreamHub *streams, const FanoutSettings *settings,
               Fanout **ret) {
        _cleanup_(fanout_freep) Fanout *f = NULL;
        int r;

        assert(event && read_db && streams && settings && ret);

        f = calloc(1, sizeof(Fanout));
        if (!f)
                return -ENOMEM;
        list_init(&f->busy);
        list_init(&f->unused);
        list_init(&f->replay_waiting);
        f->event = sd_event_ref(event);
        f->db = read_db;
        f->streams = streams;
        f->settings = *settings;
        r = hashmap_init(&f->channels);
        if (r < 0)
                return r;
        r = event_defer_new(event, &f->deliver_source, on_deliver_turn, f);
        if (r < 0)
                return r;
        r = event_defer_new(event, &f->reap_source, on_reap, f);
        if (r < 0)
                return r;
        r = event_defer_new(event, &f->grant_source, on_grant, f);
        if (r < 0)
                return r;
        r = event_timer_new(event, &f->resync_timer, 100 * USEC_PER_MSEC, on_resync_timer, f);
        if (r < 0)
                return r;
        r = event_timer_arm(f->resync_timer, settings->resync_interval_usec);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(f);
        return 0;
}

/* Streams (and with them subscribers) are gone by now: the HTTP server is
 * freed first. Their channels may wait for the end of a turn that will
 * not come. */
Fanout *fanout_free(Fanout *f) {
        if (!f)
                return NULL;
        LIST_FOREACH_SAFE(ch, next, &f->unused, Channel, in_unused)
                channel_free(ch);
        assert(f->counters.channels == 0 && hashmap_size(&f->channels) == 0);
        db_cancel(f->db, f);
        sd_event_source_disable_unref(f->resync_timer);
        sd_event_source_disable_unref(f->deliver_source);
        sd_event_source_disable_unref(f->reap_source);
        sd_event_source_disable_unref(f->grant_source);
        sd_event_unref(f->event);
        hashmap_done(&f->channels);
        return mfree(f);
}

int fanout_add_replay_connection(Fanout *f, Db *db) {
        assert(f && db);

        if (f->n_replay >= FANOUT_REPLAY_CONNECTIONS_MAX)
                return -E2BIG;
        f->replay[f->n_replay++] = (ReplayConnection) { .db = db };
        return 0;
}

void fanout_set_settings(Fanout *f, const FanoutSettings *settings) {
        assert(f && settings);

        f->settings = *settings;
}

FanoutCounters fanout_counters(const Fanout *f) {
        assert(f);

        return f->counters;
}
