/* SPDX-License-Identifier: MIT */
/* Replays: a subscriber that resumes behind its channel's position reads
 * the events in between from the store, page after page, and switches to
 * live delivery in the loop turn it catches up. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#include "event-fanout-internal.h"
#include "log.h"
#include "loop-util.h"

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

/* Sends, at most, that sharing one replay page with streams waiting their
 * turn may cost (in the page's turn), and that serving replays from the
 * page cache may cost in one turn of the loop. */
#define SHARE_SENDS_PER_PAGE 8192

/* The page cache keeps the REPLAY_CACHE_PAGES pages read last, in bytes
 * (README: Memory): enough for a crowd catching up on one topic to read
 * each stretch of it once, not once for every few streams. */
#define REPLAY_CACHE_PAGES 16

/* --- their connections and their slots --- */

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
static void replay_cancel_fetch(Subscriber *sub) {
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
                fanout_schedule(f->grant_source, SD_EVENT_ONESHOT, "handing out replay slots");
}

static void replay_fetch_turn(Subscriber *sub, bool granted);

int replay_on_grant(sd_event_source *source, void *userdata) {
        Fanout *f = userdata;

        while (f->slots_used < REPLAY_SLOTS && !list_empty(&f->replay_waiting)) {
                Subscriber *sub = list_first(&f->replay_waiting, Subscriber, in_waiting);
                list_remove(&sub->in_waiting);
                replay_fetch_turn(sub, true);
        }
        return 0;
}

void replay_go_live(Subscriber *sub) {
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
static void replay_retry(Subscriber *sub) {
        replay_slot_release(sub);
        if (event_timer_arm(sub->retry, fanout_backoff(sub->failures++)) < 0)
                stream_end_with_reconnect(sub->stream, "replay failed");
}

static int replay_page_build(const DbResult *result, const char *topic, uint64_t from, ReplayPage *ret) {
        size_t rows = store_n_events(result);
        ReplayPage page = { .from = from };

        store_page_bounds(result, &page.oldest, &page.last_id);

        if (rows > 0) {
                page.ids = calloc(rows, sizeof(uint64_t));
                page.frames = calloc(rows, sizeof(Frame *));
                if (!page.ids || !page.frames) {
                        replay_page_free(&page);
                        return -ENOMEM;
                }
        }
        for (; page.n < rows; page.n++) {
                page.frames[page.n] = fanout_row_frame(result, page.n, topic, &page.ids[page.n]);
                if (!page.frames[page.n]) {
                        replay_page_free(&page);
                        return -ENOMEM;
                }
        }
        *ret = page;
        return 0;
}

static void replay_next_page(Subscriber *sub) {
        if (stream_queued_bytes(sub->stream) > sub->channel->fanout->settings.replay_page_bytes / 2)
                sub->wants_room = true;         /* on_stream_drained() goes on */
        else
                replay_fetch(sub);
}

/* Sends sub what the page holds after its cursor (unless its stream is
 * ending). Then: live, or the next page (at once, or when the stream has
 * room; a subscriber that shared another's page waits its turn again). */
/* Retention deleted what the subscriber asks for: it is told so, then
 * gets what is left. Never a silent gap, never a wait for ids that are
 * gone. */
static int replay_send_reset(Subscriber *sub, uint64_t next) {
        char data[80];
        Frame *f;
        int r;

        snprintf(data, sizeof(data), "{\"oldest\":%" PRIu64 ",\"requested\":%" PRIu64 "}", next, sub->cursor);
        f = sse_frame_event(NULL, "reset", data);
        if (!f)
                return -ENOMEM;
        r = stream_send_frame(sub->stream, f);
        frame_unref(f);
        if (r >= 0)
                sub->channel->fanout->counters.resets++;
        return r;
}

static size_t replay_page_serve(Subscriber *sub, const ReplayPage *page, bool own) {
        Channel *ch = sub->channel;
        size_t sent = 0;
        uint64_t next, before;
        int r = 0;

        if (order_pruned(sub->cursor, page->oldest, page->last_id, &next))
                r = replay_send_reset(sub, next);

        for (size_t i = 0; i < page->n && r >= 0; i++) {
                if (page->ids[i] <= sub->cursor)
                        continue;
                r = stream_send_frame(sub->stream, page->frames[i]);
                if (r >= 0) {
                        sub->cursor = page->ids[i];
                        sent++;
                }
        }
        ch->fanout->counters.replayed += sent;
        if (r < 0) {
                if (r != -EPIPE && r != -ENOBUFS)
                        stream_end_with_reconnect(sub->stream, "out of memory");
                return sent;
        }
        /* Caught up with what this instance delivers live: switch now, in the
         * same loop turn, so no event can fall in between. Everything after
         * the position reaches the channel (and so this subscriber) live. */
        before = sub->cursor;
        switch (order_replay_next(ch->order.position, page->n, page->last_id, now_usec(CLOCK_MONOTONIC),
                                  &sub->empty_since, &sub->cursor)) {
        case REPLAY_LIVE:
                if (page->n == 0 && page->last_id != 0 && page->last_id < sub->cursor)
                        log_warning("PostgreSQL has stayed behind what was delivered of topic %s: ids "
                                    "%" PRIu64 " to %" PRIu64 " are gone (a failover that lost commits?); "
                                    "a stream resuming from %" PRIu64 " goes on from %" PRIu64 ".",
                                    ch->topic, page->last_id + 1, sub->cursor, before, sub->cursor);
                replay_go_live(sub);
                break;
        case REPLAY_MORE:
                if (own)
                        replay_next_page(sub);
                break;                  /* else it is still in line, from further on */
        case REPLAY_WAIT:
                if (own)
                        replay_retry(sub);
                break;
        }
        return sent;
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
                replay_page_serve(sub, page, false);
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
                replay_retry(sub);
                return;
        }
        sub->failures = 0;
        ch->fanout->counters.replay_pages_read++;
        sub->page_rows = next_page_rows(result, ch->fanout->settings.replay_page_bytes);
        if (replay_page_build(result, ch->topic, sub->cursor, &page) < 0) {
                stream_end_with_reconnect(sub->stream, "out of memory");
                return;
        }
        replay_page_serve(sub, &page, true);
        replay_page_share(ch, sub, &page);
        if (replay_cache_add(&ch->fanout->cache, ch, &page) < 0)
                log_debug("No memory to keep a replay page of topic %s, ignoring.", ch->topic);
        replay_page_free(&page);
}

/* The cache has the subscriber's next page: it needs no slot and no
 * query, only its turn (replay_on_cache_turn()). */
static bool replay_from_cache(Subscriber *sub) {
        Fanout *f = sub->channel->fanout;

        if (list_linked(&sub->in_cache_line))
                return true;
        if (!replay_cache_find(&f->cache, sub->channel, sub->cursor))
                return false;
        replay_slot_release(sub);
        list_append(&f->cache_line, &sub->in_cache_line);
        fanout_schedule(f->cache_source, SD_EVENT_ONESHOT, "serving replays from the cache");
        return true;
}

int replay_on_cache_turn(sd_event_source *source, void *userdata) {
        Fanout *f = userdata;
        size_t sends = 0;

        while (sends < SHARE_SENDS_PER_PAGE && !list_empty(&f->cache_line)) {
                Subscriber *sub = list_first(&f->cache_line, Subscriber, in_cache_line);
                const ReplayPage *page;

                list_remove(&sub->in_cache_line);
                page = replay_cache_find(&f->cache, sub->channel, sub->cursor);
                if (page) {
                        f->counters.replay_pages_cached++;
                        sends += replay_page_serve(sub, page, true) + 1;
                } else
                        replay_fetch(sub);      /* gone from the cache meanwhile */
        }
        if (!list_empty(&f->cache_line))
                fanout_schedule(f->cache_source, SD_EVENT_ONESHOT, "serving replays from the cache");
        return 0;
}

size_t replay_cache_max_bytes(const FanoutSettings *settings) {
        return REPLAY_CACHE_PAGES * settings->replay_page_bytes;
}

static void replay_fetch_turn(Subscriber *sub, bool granted) {
        Fanout *f = sub->channel->fanout;
        Db *db;
        int r;

        if (sub->fetching)
                return;
        sub->wants_room = false;
        if (replay_from_cache(sub))
                return;
        if (!replay_slot_take(sub, granted))
                return;         /* on_grant() calls again */
        db = replay_db_pick(f);
        r = store_query_page(db, sub->channel->topic, sub->cursor,
                             sub->page_rows > 0 ? sub->page_rows : FETCH_PAGE_FIRST,
                             f->settings.replay_page_bytes, f->settings.query_timeout_usec,
                             on_replay_page, sub);
        if (r < 0) {
                replay_db_done(f, db);
                replay_retry(sub);
                return;
        }
        sub->fetching = true;
        sub->replay_db = db;
}

void replay_fetch(Subscriber *sub) {
        replay_fetch_turn(sub, false);
}

/* The last page is written down to half a page: give the slot back (a
 * replay waiting goes first) and ask for the next one. */
static void on_stream_drained(Stream *stream, void *userdata) {
        Subscriber *sub = userdata;

        if (sub->state != SUBSCRIBER_REPLAYING || !sub->wants_room)
                return;
        replay_slot_release(sub);
        replay_fetch(sub);
}

void replay_begin(Subscriber *sub) {
        sub->state = SUBSCRIBER_REPLAYING;
        stream_set_drain_callback(sub->stream, sub->channel->fanout->settings.replay_page_bytes / 2,
                                  on_stream_drained, sub);
        replay_fetch(sub);
}

void replay_end(Subscriber *sub) {
        list_remove(&sub->in_cache_line);
        replay_cancel_fetch(sub);
        replay_slot_release(sub);
}
