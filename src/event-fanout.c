/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>

#include "event-fanout-internal.h"
#include "event-fanout.h"
#include "event-format.h"
#include "event-order.h"
#include "event-store.h"
#include "hashmap.h"
#include "list.h"
#include "log.h"
#include "loop-util.h"
#include "ring.h"

/* Sends (an event to one subscriber) per loop turn, across channels: a
 * burst is delivered over several turns, so that one topic's batch of a
 * thousand events stalls neither other topics nor the probes. An event
 * goes to all of a channel's subscribers in one turn, whatever it costs. */
#define DELIVER_SENDS_PER_TURN 4096
/* A stream request waits this long at most for its channel to learn its
 * position (one query); then, or at once when the query fails, it is told
 * 503 unavailable (an ended "unavailable" event for an EventSource, which
 * then retries), never left without an answer while the database is down. */
#define START_TIMEOUT_USEC (3 * USEC_PER_SEC)


static void channel_apply(Channel *ch, OrderPlan plan);

/* --- helpers --- */

static Channel *channel_find(Fanout *f, const char *topic) {
        HashmapEntry *e = hashmap_get(&f->channels, topic);
        return e ? container_of(e, Channel, by_topic) : NULL;
}

usec_t fanout_backoff(unsigned failures) {
        usec_t d = RETRY_MIN_USEC << (failures < 6 ? failures : 6);
        return d > RETRY_MAX_USEC ? RETRY_MAX_USEC : d;
}

static usec_t now(void) {
        return now_usec(CLOCK_MONOTONIC);
}

/* The frame of the i-th stored event of a result. */
Frame *fanout_row_frame(const DbResult *result, size_t i, const char *topic, uint64_t *ret_id) {
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
void fanout_schedule(sd_event_source *source, int enabled, const char *what) {
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
                fanout_schedule(f->deliver_source, SD_EVENT_ON, "event delivery");
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
                fanout_schedule(source, SD_EVENT_OFF, "a pause of event delivery");
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
                channel_arm(ch, fanout_backoff(ch->failures++));
                return;
        }
        n = store_n_events(result);
        rows = calloc(n ? n : 1, sizeof(OrderPending));
        if (!rows) {
                order_fetch_failed(&ch->order);
                channel_arm(ch, fanout_backoff(ch->failures++));
                return;
        }
        for (; built < n; built++) {
                uint64_t id;
                Frame *frame = fanout_row_frame(result, built, ch->topic, &id);
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
                channel_arm(ch, fanout_backoff(ch->failures++));
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

static void subscriber_free(Subscriber *sub);
static void on_stream_closed(Stream *stream, void *userdata);

/* The stream cannot start now: answer at once and let the client retry. */
static void subscriber_unavailable(Subscriber *sub, const char *why) {
        HttpRequest *req = TAKE_PTR(sub->req);

        assert(sub->state == SUBSCRIBER_WAITING && req);

        http_request_on_end(req, NULL, NULL);
        http_respond_retry_later(req, "unavailable", "the stream cannot start: %s; retry shortly", why);
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
                replay_fetch(sub);
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
                replay_go_live(sub);
                return;
        }
        replay_begin(sub);
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
        replay_cache_forget(&f->cache, ch);
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
        fanout_schedule(f->reap_source, SD_EVENT_ONESHOT, "freeing a channel");
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
                channel_arm(ch, fanout_backoff(ch->failures++));
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
                channel_arm(ch, fanout_backoff(ch->failures++));
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

        replay_end(sub);
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
        if (has_after)
                f->counters.resumed++;
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
        list_init(&f->cache_line);
        replay_cache_init(&f->cache, replay_cache_max_bytes(settings), REPLAY_CACHE_PAGES_MAX);
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
        r = event_defer_new(event, &f->grant_source, replay_on_grant, f);
        if (r < 0)
                return r;
        r = event_defer_new(event, &f->cache_source, replay_on_cache_turn, f);
        if (r < 0)
                return r;
        /* Like the replay connections' (manager.c): catching up yields to
         * live delivery. */
        r = sd_event_source_set_priority(f->cache_source, SD_EVENT_PRIORITY_IDLE);
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
        sd_event_source_disable_unref(f->cache_source);
        replay_cache_done(&f->cache);
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
        replay_cache_resize(&f->cache, replay_cache_max_bytes(settings));
}

FanoutCounters fanout_counters(const Fanout *f) {
        assert(f);

        FanoutCounters c = f->counters;

        c.replay_cache_bytes = f->cache.bytes;
        return c;
}
