/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>

#include "event-format.h"
#include "event-util.h"
#include "fanout.h"
#include "log.h"

/* How long an event that arrived ahead of its predecessors waits for them
 * before the channel reads them from PostgreSQL. Out-of-order arrival is
 * normal when two instances publish to one topic (our own commit is
 * delivered at once, the other instance's earlier one comes through NATS a
 * moment later); a short wait saves most of those reads. */
#define GAP_WAIT_USEC (50 * USEC_PER_MSEC)
/* Events read per query, for replays and gap fills. */
#define FETCH_PAGE 500
/* Out-of-order events kept per channel; beyond that they are read back
 * from PostgreSQL when their turn comes. */
#define PENDING_MAX 4096
/* A replay page holds events up to replay_page_bytes of payload (at least
 * one event), and the next page is read only once the client took the
 * previous one: a client far behind never makes us hold more than a page
 * for it, and its stream stays below its buffer limit (a page plus one
 * event of at most a quarter of it). */
#define RETRY_MIN_USEC (100 * USEC_PER_MSEC)
#define RETRY_MAX_USEC (5 * USEC_PER_SEC)

/* The rows of a replay page: ids after $2, up to FETCH_PAGE of them, but
 * only as many as start within $3 payload bytes. */
static const char select_replay_page[] =
        "SELECT id, ts, payload FROM ("
        " SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS ts,"
        " payload, sum(octet_length(payload::text)) OVER (ORDER BY id) - octet_length(payload::text)"
        " AS before FROM events WHERE topic = $1 AND id > $2 ORDER BY id LIMIT " STRINGIFY(FETCH_PAGE)
        ") page WHERE before < $3 ORDER BY id";

static const char select_range[] =
        "SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
        "payload FROM events WHERE topic = $1 AND id > $2 AND id <= $3 ORDER BY id "
        "LIMIT " STRINGIFY(FETCH_PAGE);

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
        Stream *stream;
        SubscriberState state;
        uint64_t cursor;                /* the last id sent */
        bool has_after;
        bool fetching;
        bool wants_room;                /* replay waits for the client to read */
        unsigned failures;
        sd_event_source *retry;
        struct Subscriber *prev, *next;
} Subscriber;

struct Channel {
        Fanout *fanout;
        char topic[TOPIC_NAME_MAX + 1];
        bool initialized;
        bool initializing;
        uint64_t position;
        uint64_t target;                /* the highest id known to exist */
        Pending *pending;               /* sorted by id, all above position */
        size_t n_pending;
        bool fetching;
        unsigned failures;
        sd_event_source *timer;         /* gap wait, or retry after a failure */
        Subscriber *subscribers;
        size_t n_subscribers;
        Channel *hash_next;
};

struct Fanout {
        sd_event *event;
        Db *db;
        StreamHub *streams;
        FanoutSettings settings;
        Channel **buckets;
        size_t n_buckets;
        FanoutCounters counters;
        bool resyncing;
        sd_event_source *resync_timer;
};

static void channel_fetch(Channel *ch);
static void subscriber_fetch(Subscriber *sub);
static void on_replay_page(Db *db, const DbResult *result, void *userdata);

/* --- the channel table --- */

static size_t hash_topic(const char *topic, size_t n_buckets) {
        uint64_t h = 1469598103934665603ULL;    /* FNV-1a */
        for (const char *p = topic; *p; p++)
                h = (h ^ (unsigned char) *p) * 1099511628211ULL;
        return (size_t) (h % n_buckets);
}

static Channel *channel_find(Fanout *f, const char *topic) {
        for (Channel *ch = f->buckets[hash_topic(topic, f->n_buckets)]; ch; ch = ch->hash_next)
                if (streq(ch->topic, topic))
                        return ch;
        return NULL;
}

static int table_grow(Fanout *f) {
        size_t n = f->n_buckets * 2;
        Channel **buckets = calloc(n, sizeof(Channel *));

        if (!buckets)
                return -ENOMEM;
        for (size_t i = 0; i < f->n_buckets; i++)
                for (Channel *ch = f->buckets[i], *next; ch; ch = next) {
                        next = ch->hash_next;
                        size_t b = hash_topic(ch->topic, n);
                        ch->hash_next = buckets[b];
                        buckets[b] = ch;
                }
        free(f->buckets);
        f->buckets = buckets;
        f->n_buckets = n;
        return 0;
}

static void table_remove(Fanout *f, Channel *ch) {
        for (Channel **p = &f->buckets[hash_topic(ch->topic, f->n_buckets)]; *p; p = &(*p)->hash_next)
                if (*p == ch) {
                        *p = ch->hash_next;
                        return;
                }
}

/* --- helpers --- */

static usec_t backoff(unsigned failures) {
        usec_t d = RETRY_MIN_USEC << (failures < 6 ? failures : 6);
        return d > RETRY_MAX_USEC ? RETRY_MAX_USEC : d;
}

/* The frame of one row of select_range. */
static Frame *row_frame(PGresult *res, int row, const char *topic, uint64_t *ret_id) {
        _cleanup_free_ char *envelope = NULL;
        uint64_t id = strtoull(PQgetvalue(res, row, 0), NULL, 10);
        size_t size;

        if (event_envelope(id, topic, PQgetvalue(res, row, 1), PQgetvalue(res, row, 2),
                           (size_t) PQgetlength(res, row, 2), &envelope, &size) < 0)
                return NULL;
        *ret_id = id;
        return event_frame(id, envelope);
}

static int query_range(Fanout *f, const char *topic, uint64_t after, uint64_t up_to,
                       DbQueryCallback cb, void *userdata) {
        char a[24], b[24];
        const char *params[] = { topic, a, b };

        snprintf(a, sizeof(a), "%" PRIu64, after);
        snprintf(b, sizeof(b), "%" PRIu64, up_to);
        return db_query(f->db, select_range, 3, params, f->settings.query_timeout_usec, cb, userdata);
}

static int query_replay_page(Fanout *f, const char *topic, uint64_t after, void *userdata) {
        char a[24], budget[24];
        const char *params[] = { topic, a, budget };

        snprintf(a, sizeof(a), "%" PRIu64, after);
        snprintf(budget, sizeof(budget), "%zu", f->settings.replay_page_bytes);
        return db_query(f->db, select_replay_page, 3, params, f->settings.query_timeout_usec,
                        on_replay_page, userdata);
}

/* --- delivery --- */

/* Sends event id to every live subscriber that has not seen it, and moves
 * the channel's position to it. */
static void channel_deliver(Channel *ch, uint64_t id, Frame *frame) {
        Fanout *f = ch->fanout;

        for (Subscriber *sub = ch->subscribers; sub; sub = sub->next) {
                if (sub->state != SUBSCRIBER_LIVE || id <= sub->cursor)
                        continue;
                int r = stream_send_frame(sub->stream, frame);
                if (r >= 0) {
                        sub->cursor = id;
                        f->counters.delivered++;
                } else if (r == -ENOBUFS)
                        f->counters.cut++;
        }
        ch->position = id;
        if (ch->target < id)
                ch->target = id;
}

static void pending_pop(Channel *ch) {
        frame_unref(ch->pending[0].frame);
        memmove(ch->pending, ch->pending + 1, (ch->n_pending - 1) * sizeof(Pending));
        ch->n_pending--;
}

/* Delivers what waited and now follows the position. */
static void channel_drain_pending(Channel *ch) {
        while (ch->n_pending > 0 && ch->pending[0].id <= ch->position + 1) {
                if (ch->pending[0].id == ch->position + 1)
                        channel_deliver(ch, ch->pending[0].id, ch->pending[0].frame);
                pending_pop(ch);
        }
}

static void pending_insert(Channel *ch, uint64_t id, Frame *frame) {
        size_t i = ch->n_pending;

        if (ch->target < id)
                ch->target = id;
        if (ch->n_pending >= PENDING_MAX)
                return;         /* read back from PostgreSQL when its turn comes */
        if (!ch->pending) {
                ch->pending = calloc(PENDING_MAX, sizeof(Pending));
                if (!ch->pending)
                        return;
        }
        while (i > 0 && ch->pending[i - 1].id > id)
                i--;
        if (i > 0 && ch->pending[i - 1].id == id)
                return;         /* already waiting */
        memmove(ch->pending + i + 1, ch->pending + i, (ch->n_pending - i) * sizeof(Pending));
        ch->pending[i] = (Pending) { .id = id, .frame = frame_ref(frame) };
        ch->n_pending++;
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
        rows = PQntuples(result->result);
        for (int i = 0; i < rows; i++) {
                uint64_t id;
                Frame *frame = row_frame(result->result, i, ch->topic, &id);
                if (!frame)
                        break;
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
        rows = PQntuples(result->result);
        for (int i = 0; i < rows && r >= 0; i++) {
                uint64_t id;
                Frame *frame = row_frame(result->result, i, ch->topic, &id);
                if (!frame) {
                        stream_end_with_reconnect(sub->stream, "out of memory");
                        return;
                }
                r = stream_send_frame(sub->stream, frame);
                frame_unref(frame);
                if (r >= 0)
                        sub->cursor = id;
        }
        if (r < 0)
                return;         /* the stream is ending */
        /* Caught up with what this instance delivers live: switch now, in the
         * same loop turn, so no event can fall in between. Everything after
         * the position reaches the channel (and so this subscriber) live. */
        if (sub->cursor >= ch->position) {
                subscriber_go_live(sub);
                return;
        }
        if (stream_queued_bytes(sub->stream) > 0)
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

/* The channel knows its position: start serving the subscriber. */
static void subscriber_start(Subscriber *sub) {
        Channel *ch = sub->channel;

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
        table_remove(f, ch);
        for (size_t i = 0; i < ch->n_pending; i++)
                frame_unref(ch->pending[i].frame);
        free(ch->pending);
        sd_event_source_disable_unref(ch->timer);
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
        ch->position = PQntuples(result->result) > 0
                ? strtoull(PQgetvalue(result->result, 0, 0), NULL, 10) : 0;
        if (ch->target < ch->position)
                ch->target = ch->position;
        /* Events that arrived while we asked: those at or below the position
         * are history (replays cover them), the rest continue from here. */
        channel_drain_pending(ch);
        for (Subscriber *sub = ch->subscribers, *next; sub; sub = next) {
                next = sub->next;
                if (sub->state == SUBSCRIBER_WAITING)
                        subscriber_start(sub);
        }
        channel_catch_up(ch, ch->n_pending > 0);
}

static void channel_init(Channel *ch) {
        const char *params[] = { ch->topic };
        int r;

        if (ch->initializing || ch->initialized)
                return;
        r = db_query(ch->fanout->db, "SELECT last_id FROM topics WHERE name = $1", 1, params,
                     ch->fanout->settings.query_timeout_usec, on_position, ch);
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
        Channel *ch;
        size_t b;

        if (f->counters.channels >= f->n_buckets && table_grow(f) < 0)
                return NULL;
        ch = calloc(1, sizeof(Channel));
        if (!ch)
                return NULL;
        ch->fanout = f;
        snprintf(ch->topic, sizeof(ch->topic), "%s", topic);
        if (event_timer_new(f->event, &ch->timer, USEC_PER_MSEC, on_channel_timer, ch) < 0) {
                free(ch);
                return NULL;
        }
        b = hash_topic(topic, f->n_buckets);
        ch->hash_next = f->buckets[b];
        f->buckets[b] = ch;
        f->counters.channels++;
        channel_init(ch);
        return ch;
}

static void subscriber_free(Subscriber *sub) {
        Channel *ch = sub->channel;

        db_cancel(ch->fanout->db, sub);
        sd_event_source_disable_unref(sub->retry);
        if (sub->prev)
                sub->prev->next = sub->next;
        else
                ch->subscribers = sub->next;
        if (sub->next)
                sub->next->prev = sub->prev;
        ch->n_subscribers--;
        ch->fanout->counters.subscribers--;
        free(sub);
        if (ch->n_subscribers == 0)
                channel_free(ch);
}

static void on_stream_closed(Stream *stream, void *userdata) {
        subscriber_free(userdata);
}

void fanout_subscribe(Fanout *f, HttpRequest *req, const char *topic, bool has_after, uint64_t after) {
        Channel *ch = channel_find(f, topic);
        Subscriber *sub;
        int r;

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
        sub->cursor = after;
        sub->has_after = has_after;
        sub->state = SUBSCRIBER_WAITING;
        sub->next = ch->subscribers;
        if (ch->subscribers)
                ch->subscribers->prev = sub;
        ch->subscribers = sub;
        ch->n_subscribers++;
        f->counters.subscribers++;

        r = stream_open(f->streams, req, on_stream_closed, sub, &sub->stream);
        if (r < 0) {
                subscriber_free(sub);
                http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        if (ch->initialized)
                subscriber_start(sub);
}

/* --- inputs --- */

void fanout_event(Fanout *f, const char *topic, uint64_t id, const char *envelope) {
        Channel *ch = channel_find(f, topic);
        Frame *frame;

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

        if (!ch || last_id <= ch->target)
                return;
        ch->target = last_id;
        channel_catch_up(ch, false);
}

static void on_resync(Db *db, const DbResult *result, void *userdata) {
        Fanout *f = userdata;

        f->resyncing = false;
        if (result->error) {
                log_debug("Resync failed, trying again next interval: %s", result->error);
                return;
        }
        for (int i = 0; i < PQntuples(result->result); i++)
                fanout_hint(f, PQgetvalue(result->result, i, 0),
                            strtoull(PQgetvalue(result->result, i, 1), NULL, 10));
}

void fanout_resync(Fanout *f) {
        _cleanup_free_ char *names = NULL;
        size_t len = 0, size = 2;
        const char *params[1];

        if (f->resyncing || f->counters.channels == 0 || !db_connected(f->db))
                return;
        for (size_t i = 0; i < f->n_buckets; i++)
                for (Channel *ch = f->buckets[i]; ch; ch = ch->hash_next)
                        size += strlen(ch->topic) + 1;
        names = malloc(size + 1);
        if (!names)
                return;
        /* A text[] literal; topic names need no quoting ([A-Za-z0-9_-]). */
        names[len++] = '{';
        for (size_t i = 0; i < f->n_buckets; i++)
                for (Channel *ch = f->buckets[i]; ch; ch = ch->hash_next) {
                        if (!ch->initialized)
                                continue;
                        if (len > 1)
                                names[len++] = ',';
                        size_t n = strlen(ch->topic);
                        memcpy(names + len, ch->topic, n);
                        len += n;
                }
        names[len++] = '}';
        names[len] = '\0';
        params[0] = names;
        if (db_query(f->db, "SELECT name, last_id FROM topics WHERE name = ANY($1::text[])", 1, params,
                     f->settings.query_timeout_usec, on_resync, f) >= 0)
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

        f = calloc(1, sizeof(Fanout));
        if (!f)
                return -ENOMEM;
        f->event = sd_event_ref(event);
        f->db = read_db;
        f->streams = streams;
        f->settings = *settings;
        f->n_buckets = 64;
        f->buckets = calloc(f->n_buckets, sizeof(Channel *));
        if (!f->buckets)
                return -ENOMEM;
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
        if (f->counters.channels > 0)
                log_debug("Freeing the fanout with %" PRIu64 " channels (bug).", f->counters.channels);
        db_cancel(f->db, f);
        sd_event_source_disable_unref(f->resync_timer);
        sd_event_unref(f->event);
        free(f->buckets);
        return mfree(f);
}

void fanout_set_settings(Fanout *f, const FanoutSettings *settings) {
        f->settings = *settings;
}

FanoutCounters fanout_counters(const Fanout *f) {
        return f->counters;
}
