/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>

#include "event-fanout.h"
#include "event-format.h"
#include "event-store.h"
#include "hashmap.h"
#include "list.h"
#include "log.h"
#include "loop-util.h"

/* How long an event that arrived ahead of its predecessors waits for them
 * before the channel reads them from PostgreSQL. Out-of-order arrival is
 * normal when two instances publish to one topic (our own commit is
 * delivered at once, the other instance's earlier one comes through NATS a
 * moment later); a short wait saves most of those reads. */
#define GAP_WAIT_USEC (50 * USEC_PER_MSEC)
/* Events read per replay page, at most. */
#define FETCH_PAGE 500
/* Out-of-order events kept per channel, by count and by bytes; beyond that
 * they are read back from PostgreSQL when their turn comes. */
#define PENDING_MAX 4096
#define PENDING_BYTES_MAX (4 * 1024 * 1024)
/* A replay page holds events up to replay_page_bytes of payload (at least
 * one event), and the next page is read only once the client took the
 * previous one: a client far behind never makes us hold more than a page
 * for it, and its stream stays below its buffer limit (a page plus one
 * event of at most a quarter of it). */
#define RETRY_MIN_USEC (100 * USEC_PER_MSEC)
#define RETRY_MAX_USEC (5 * USEC_PER_SEC)

typedef struct Pending {
        uint64_t id;
        Frame *frame;
} Pending;

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
        unsigned failures;
        sd_event_source *retry;
        ListNode in_channel;            /* in its channel's subscribers */
} Subscriber;

struct Channel {
        Fanout *fanout;
        char topic[TOPIC_NAME_MAX + 1];
        bool initialized;
        bool initializing;
        uint64_t position;
        uint64_t target;                /* the highest id known to exist */
        /* Early events, sorted by id, all above position: entries
         * [pending_start, pending_start + n_pending) of an array that is
         * allocated while there are any. */
        Pending *pending;
        size_t pending_start;
        size_t n_pending;
        size_t pending_capacity;
        size_t pending_bytes;
        bool fetching;
        unsigned failures;
        sd_event_source *timer;         /* gap wait, or retry after a failure */
        ListNode subscribers;
        size_t n_subscribers;
        HashmapEntry by_topic;          /* in the fanout's channels */
};

struct Fanout {
        sd_event *event;
        Db *db;
        StreamHub *streams;
        FanoutSettings settings;
        Hashmap channels;               /* by topic */
        FanoutCounters counters;
        bool resyncing;
        bool resync_again;              /* asked for while one ran */
        sd_event_source *resync_timer;
};

static void channel_fetch(Channel *ch);
static void subscriber_fetch(Subscriber *sub);
static void on_replay_page(Db *db, const DbResult *result, void *userdata);

/* --- the channel table --- */

static Channel *channel_find(Fanout *f, const char *topic) {
        HashmapEntry *e = hashmap_get(&f->channels, topic);
        return e ? container_of(e, Channel, by_topic) : NULL;
}

/* --- helpers --- */

static usec_t backoff(unsigned failures) {
        usec_t d = RETRY_MIN_USEC << (failures < 6 ? failures : 6);
        return d > RETRY_MAX_USEC ? RETRY_MAX_USEC : d;
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

static int query_range(Fanout *f, const char *topic, uint64_t after, uint64_t up_to,
                       DbQueryCallback cb, void *userdata) {
        return store_query_range(f->db, topic, after, up_to, f->settings.query_timeout_usec, cb, userdata);
}

static int query_replay_page(Fanout *f, const char *topic, uint64_t after, void *userdata) {
        return store_query_page(f->db, topic, after, FETCH_PAGE, f->settings.replay_page_bytes,
                                f->settings.query_timeout_usec, on_replay_page, userdata);
}

/* --- delivery --- */

/* Sends event id to every live subscriber that has not seen it, and moves
 * the channel's position to it. */
static void channel_deliver(Channel *ch, uint64_t id, Frame *frame) {
        Fanout *f = ch->fanout;

        LIST_FOREACH(sub, &ch->subscribers, Subscriber, in_channel) {
                if (sub->state != SUBSCRIBER_LIVE || id <= sub->cursor)
                        continue;
                int r = stream_send_frame(sub->stream, frame);
                if (r >= 0) {
                        sub->cursor = id;
                        f->counters.delivered++;
                } else if (r == -ENOBUFS)
                        f->counters.cut++;
                else if (r != -EPIPE)
                        /* Skipping this id silently would be a gap: end the
                         * stream; the client resumes from what it has. */
                        stream_end_with_reconnect(sub->stream, "out of memory");
        }
        ch->position = id;
        if (ch->target < id)
                ch->target = id;
}

static Pending *pending_first(Channel *ch) {
        return &ch->pending[ch->pending_start];
}

static void pending_pop(Channel *ch) {
        Pending *p = pending_first(ch);

        ch->pending_bytes -= p->frame->size;
        frame_unref(p->frame);
        ch->pending_start++;
        if (--ch->n_pending == 0) {
                /* Early events are a moment's affair: give the memory back. */
                ch->pending = mfree(ch->pending);
                ch->pending_start = ch->pending_capacity = ch->pending_bytes = 0;
        }
}

/* Delivers what waited and now follows the position. */
static void channel_drain_pending(Channel *ch) {
        while (ch->n_pending > 0 && pending_first(ch)->id <= ch->position + 1) {
                if (pending_first(ch)->id == ch->position + 1)
                        channel_deliver(ch, pending_first(ch)->id, pending_first(ch)->frame);
                pending_pop(ch);
        }
}

/* Makes room for one more entry at the end of the active range. */
static int pending_reserve(Channel *ch) {
        if (ch->pending_start + ch->n_pending < ch->pending_capacity)
                return 0;
        if (ch->pending_start > 0) {
                memmove(ch->pending, pending_first(ch), ch->n_pending * sizeof(Pending));
                ch->pending_start = 0;
                if (ch->n_pending < ch->pending_capacity)
                        return 0;
        }
        size_t capacity = ch->pending_capacity ? ch->pending_capacity * 2 : 16;
        Pending *p = reallocarray(ch->pending, capacity, sizeof(Pending));
        if (!p)
                return -ENOMEM;
        ch->pending = p;
        ch->pending_capacity = capacity;
        return 0;
}

static void pending_insert(Channel *ch, uint64_t id, Frame *frame) {
        size_t lo = 0, hi = ch->n_pending;
        Pending *first;

        if (ch->target < id)
                ch->target = id;
        if (ch->n_pending >= PENDING_MAX || ch->pending_bytes + frame->size > PENDING_BYTES_MAX ||
            pending_reserve(ch) < 0)
                return;         /* read back from PostgreSQL when its turn comes */
        first = pending_first(ch);
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (first[mid].id < id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (lo < ch->n_pending && first[lo].id == id)
                return;         /* already waiting */
        memmove(first + lo + 1, first + lo, (ch->n_pending - lo) * sizeof(Pending));
        first[lo] = (Pending) { .id = id, .frame = frame_ref(frame) };
        ch->n_pending++;
        ch->pending_bytes += frame->size;
}

static void channel_arm(Channel *ch, usec_t delay) {
        if (event_timer_arm(ch->timer, delay) < 0)
                log_error("Failed to arm the timer of topic %s.", ch->topic);
}

static bool channel_timer_armed(Channel *ch) {
        int enabled = SD_EVENT_OFF;
        (void) sd_event_source_get_enabled(ch->timer, &enabled);
        return enabled != SD_EVENT_OFF;
}

/* The channel is behind what exists: read the rest now, or after a short
 * wait when events may still arrive by themselves. */
static void channel_catch_up(Channel *ch, bool wait) {
        if (!ch->initialized || ch->fetching || ch->position >= ch->target)
                return;
        if (!wait)
                channel_fetch(ch);
        else if (!channel_timer_armed(ch))
                /* Not re-armed by each further early event: under steady
                 * out-of-order traffic the wait would never end. */
                channel_arm(ch, GAP_WAIT_USEC);
}

static void channel_receive(Channel *ch, uint64_t id, Frame *frame) {
        if (ch->initialized && id <= ch->position)
                return;                 /* seen before (our own echo, a resync) */
        if (ch->initialized && id == ch->position + 1) {
                channel_deliver(ch, id, frame);
                channel_drain_pending(ch);
                return;
        }
        pending_insert(ch, id, frame);
        channel_catch_up(ch, true);
}

/* --- gap filling --- */

static void on_range_fetched(Db *db, const DbResult *result, void *userdata) {
        Channel *ch = userdata;
        Fanout *f = ch->fanout;
        int rows;

        ch->fetching = false;
        if (result->error) {
                log_warning("Cannot read events of topic %s from PostgreSQL: %s", ch->topic,
                            result->error);
                channel_arm(ch, backoff(ch->failures++));
                return;
        }
        ch->failures = 0;
        rows = (int) store_n_events(result);
        for (int i = 0; i < rows; i++) {
                uint64_t id;
                Frame *frame = row_frame(result, (size_t) i, ch->topic, &id);
                if (!frame) {
                        rows = 0;       /* retry with backoff below */
                        break;
                }
                if (id == ch->position + 1) {
                        channel_deliver(ch, id, frame);
                        f->counters.fetched++;
                }
                frame_unref(frame);
        }
        channel_drain_pending(ch);
        if (ch->position < ch->target)
                /* No rows at all would mean the hint ran ahead of the data;
                 * do not spin on it. */
                channel_arm(ch, rows > 0 ? 0 : backoff(ch->failures++));
}

static void channel_fetch(Channel *ch) {
        int r;

        if (ch->fetching || !ch->initialized || ch->position >= ch->target)
                return;
        (void) sd_event_source_set_enabled(ch->timer, SD_EVENT_OFF);
        r = query_range(ch->fanout, ch->topic, ch->position, ch->target, on_range_fetched, ch);
        if (r < 0) {
                channel_arm(ch, backoff(ch->failures++));
                return;
        }
        ch->fetching = true;
}

/* --- subscribers --- */

static void subscriber_go_live(Subscriber *sub) {
        sub->state = SUBSCRIBER_LIVE;
        stream_set_drain_callback(sub->stream, NULL, NULL);
}

static void on_replay_page(Db *db, const DbResult *result, void *userdata) {
        Subscriber *sub = userdata;
        Channel *ch = sub->channel;
        int rows, r = 0;

        sub->fetching = false;
        if (result->error) {
                log_warning("Cannot replay topic %s from PostgreSQL: %s", ch->topic, result->error);
                if (event_timer_arm(sub->retry, backoff(sub->failures++)) < 0)
                        stream_end_with_reconnect(sub->stream, "replay failed");
                return;
        }
        sub->failures = 0;
        rows = (int) store_n_events(result);
        for (int i = 0; i < rows && r >= 0; i++) {
                uint64_t id;
                Frame *frame = row_frame(result, (size_t) i, ch->topic, &id);
                if (!frame) {
                        stream_end_with_reconnect(sub->stream, "out of memory");
                        return;
                }
                r = stream_send_frame(sub->stream, frame);
                frame_unref(frame);
                if (r >= 0)
                        sub->cursor = id;
        }
        if (r < 0) {
                if (r != -EPIPE && r != -ENOBUFS)
                        stream_end_with_reconnect(sub->stream, "out of memory");
                return;         /* the stream is ending */
        }
        /* Caught up with what this instance delivers live: switch now, in the
         * same loop turn, so no event can fall in between. Everything after
         * the position reaches the channel (and so this subscriber) live. */
        if (sub->cursor >= ch->position) {
                subscriber_go_live(sub);
                return;
        }
        if (rows == 0) {
                /* The channel is ahead of what the database returns (it
                 * should not be): do not spin on it. */
                if (event_timer_arm(sub->retry, backoff(sub->failures++)) < 0)
                        stream_end_with_reconnect(sub->stream, "replay failed");
        } else if (stream_queued_bytes(sub->stream) > 0)
                sub->wants_room = true;
        else
                subscriber_fetch(sub);
}

static void subscriber_fetch(Subscriber *sub) {
        int r;

        if (sub->fetching)
                return;
        sub->wants_room = false;
        r = query_replay_page(sub->channel->fanout, sub->channel->topic, sub->cursor, sub);
        if (r < 0) {
                if (event_timer_arm(sub->retry, backoff(sub->failures++)) < 0)
                        stream_end_with_reconnect(sub->stream, "replay failed");
                return;
        }
        sub->fetching = true;
}

static void on_stream_drained(Stream *stream, void *userdata) {
        Subscriber *sub = userdata;

        if (sub->state == SUBSCRIBER_REPLAYING && sub->wants_room)
                subscriber_fetch(sub);
}

static int on_subscriber_retry(sd_event_source *source, uint64_t usec, void *userdata) {
        subscriber_fetch(userdata);
        return 0;
}

static void subscriber_free(Subscriber *sub);
static void on_stream_closed(Stream *stream, void *userdata);

/* The channel knows its position: open the stream and serve it. The
 * response starts only now, so "from now on" means from this position: an
 * event the client publishes after seeing the answer is above it. */
static void subscriber_start(Subscriber *sub) {
        Channel *ch = sub->channel;
        HttpRequest *req = TAKE_PTR(sub->req);
        int r;

        r = stream_open(ch->fanout->streams, req, on_stream_closed, sub, &sub->stream);
        if (r < 0) {
                http_request_on_end(req, NULL, NULL);
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                subscriber_free(sub);
                return;
        }
        if (!sub->has_after || sub->cursor >= ch->position) {
                /* From now on; or the client is ahead of this instance (it
                 * came from the other colour) and ids up to its cursor are
                 * skipped as they arrive. */
                if (!sub->has_after)
                        sub->cursor = ch->position;
                subscriber_go_live(sub);
                return;
        }
        sub->state = SUBSCRIBER_REPLAYING;
        stream_set_drain_callback(sub->stream, on_stream_drained, sub);
        subscriber_fetch(sub);
}

/* --- channel life --- */

static void channel_free(Channel *ch) {
        Fanout *f = ch->fanout;

        /* A query of ours may be in flight on the shared connection. */
        db_cancel(f->db, ch);
        hashmap_remove(&f->channels, &ch->by_topic);
        while (ch->n_pending > 0)
                pending_pop(ch);
        sd_event_source_disable_unref(ch->timer);
        assert(f->counters.channels > 0);
        f->counters.channels--;
        free(ch);
}

static void on_position(Db *db, const DbResult *result, void *userdata) {
        Channel *ch = userdata;

        ch->initializing = false;
        if (result->error) {
                log_warning("Cannot read the position of topic %s: %s", ch->topic, result->error);
                channel_arm(ch, backoff(ch->failures++));
                return;
        }
        ch->failures = 0;
        ch->initialized = true;
        ch->position = store_position(result);
        if (ch->target < ch->position)
                ch->target = ch->position;
        /* Subscribers first, at this position; then the events that arrived
         * while we asked: those above the position reach them live, those
         * at or below it are history (replays cover them). */
        LIST_FOREACH_SAFE(sub, next, &ch->subscribers, Subscriber, in_channel) {
                if (sub->state == SUBSCRIBER_WAITING)
                        subscriber_start(sub);
        }
        channel_drain_pending(ch);
        channel_catch_up(ch, ch->n_pending > 0);
}

static void channel_init(Channel *ch) {
        int r;

        if (ch->initializing || ch->initialized)
                return;
        r = store_query_position(ch->fanout->db, ch->topic, ch->fanout->settings.query_timeout_usec,
                                 on_position, ch);
        if (r < 0) {
                channel_arm(ch, backoff(ch->failures++));
                return;
        }
        ch->initializing = true;
}

static int on_channel_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Channel *ch = userdata;

        if (!ch->initialized)
                channel_init(ch);
        else
                channel_fetch(ch);
        return 0;
}

static Channel *channel_new(Fanout *f, const char *topic) {
        Channel *ch = calloc(1, sizeof(Channel));

        if (!ch)
                return NULL;
        ch->fanout = f;
        list_init(&ch->subscribers);
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

        db_cancel(ch->fanout->db, sub);
        sd_event_source_disable_unref(sub->retry);
        list_remove(&sub->in_channel);
        assert(ch->n_subscribers > 0 && ch->fanout->counters.subscribers > 0);
        ch->n_subscribers--;
        ch->fanout->counters.subscribers--;
        free(sub);
        if (ch->n_subscribers == 0)
                channel_free(ch);
}

static void on_stream_closed(Stream *stream, void *userdata) {
        subscriber_free(userdata);
}

/* The client left (or the server stops) before the stream opened. */
static void on_waiting_request_end(HttpRequest *req, void *userdata) {
        subscriber_free(userdata);
}

void fanout_subscribe(Fanout *f, HttpRequest *req, const char *topic, bool has_after, uint64_t after) {
        Channel *ch = channel_find(f, topic);
        Subscriber *sub;

        assert(f && req && topic);

        if (!ch)
                ch = channel_new(f, topic);
        sub = ch ? calloc(1, sizeof(Subscriber)) : NULL;
        if (!sub || event_timer_new(f->event, &sub->retry, USEC_PER_MSEC, on_subscriber_retry, sub) < 0) {
                free(sub);
                if (ch && ch->n_subscribers == 0)
                        channel_free(ch);
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        sub->channel = ch;
        sub->req = req;
        sub->cursor = after;
        sub->has_after = has_after;
        sub->state = SUBSCRIBER_WAITING;
        list_append(&ch->subscribers, &sub->in_channel);
        ch->n_subscribers++;
        f->counters.subscribers++;

        /* Until the channel knows its position the request waits without an
         * answer (see subscriber_start()). */
        http_request_on_end(req, on_waiting_request_end, sub);
        if (ch->initialized)
                subscriber_start(sub);
}

/* --- inputs --- */

void fanout_event(Fanout *f, const char *topic, uint64_t id, const char *envelope) {
        Channel *ch = channel_find(f, topic);
        Frame *frame;

        assert(f && topic && envelope);

        if (!ch)
                return;         /* nobody here listens to this topic */
        frame = event_frame(id, envelope);
        if (!frame) {
                /* Cannot build it now: read it back later. */
                if (ch->target < id)
                        ch->target = id;
                channel_catch_up(ch, true);
                return;
        }
        channel_receive(ch, id, frame);
        frame_unref(frame);
}

void fanout_hint(Fanout *f, const char *topic, uint64_t last_id) {
        Channel *ch = channel_find(f, topic);

        assert(f && topic);

        if (!ch)
                return;
        if (ch->target < last_id)
                ch->target = last_id;
        /* Even an old hint re-kicks a channel that is behind: periodic
         * resyncs are also what unsticks one whose timer failed. */
        channel_catch_up(ch, false);
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
                if (container_of(e, Channel, by_topic)->initialized)
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
        f->event = sd_event_ref(event);
        f->db = read_db;
        f->streams = streams;
        f->settings = *settings;
        r = hashmap_init(&f->channels);
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

/* Streams (and with them subscribers and channels) are gone by now: the
 * HTTP server is freed first. */
Fanout *fanout_free(Fanout *f) {
        if (!f)
                return NULL;
        assert(f->counters.channels == 0 && hashmap_size(&f->channels) == 0);
        db_cancel(f->db, f);
        sd_event_source_disable_unref(f->resync_timer);
        sd_event_unref(f->event);
        hashmap_done(&f->channels);
        return mfree(f);
}

void fanout_set_settings(Fanout *f, const FanoutSettings *settings) {
        assert(f && settings);

        f->settings = *settings;
}

FanoutCounters fanout_counters(const Fanout *f) {
        assert(f);

        return f->counters;
}
