/* SPDX-License-Identifier: MIT */
#include <assert.h>

#include "event-order.h"

void order_init(TopicOrder *o, const OrderOps *ops, const OrderLimits *limits, void *userdata) {
        assert(o && ops && ops->ref && ops->unref && ops->deliver && limits);

        *o = (TopicOrder) { .ops = ops, .limits = *limits, .userdata = userdata };
}

/* --- early events, held back in id order --- */

static OrderPending *pending_first(TopicOrder *o) {
        return &o->pending[o->start];
}

static void pending_pop(TopicOrder *o) {
        OrderPending *p = pending_first(o);

        assert(o->n > 0 && o->bytes >= p->size);
        o->bytes -= p->size;
        o->ops->unref(p->item);
        o->start++;
        if (--o->n == 0) {
                /* Early events are a moment's affair: give the memory back. */
                o->pending = mfree(o->pending);
                o->start = o->capacity = o->bytes = 0;
        }
}

void order_done(TopicOrder *o) {
        if (!o)
                return;
        while (o->n > 0)
                pending_pop(o);
}

/* Makes room for one more entry at the end of the active range. */
static int pending_reserve(TopicOrder *o) {
        OrderPending *p;
        size_t capacity;

        if (o->start + o->n < o->capacity)
                return 0;
        if (o->start > 0) {
                memmove(o->pending, pending_first(o), o->n * sizeof(OrderPending));
                o->start = 0;
                if (o->n < o->capacity)
                        return 0;
        }
        capacity = o->capacity ? o->capacity * 2 : 16;
        p = reallocarray(o->pending, capacity, sizeof(OrderPending));
        if (!p)
                return -ENOMEM;
        o->pending = p;
        o->capacity = capacity;
        return 0;
}

/* Holds an early event back; past the limits (or without memory) it is
 * not kept, and read back from the store when its turn comes. */
static void pending_insert(TopicOrder *o, uint64_t id, void *item, size_t size) {
        size_t lo = 0, hi = o->n;
        OrderPending *first;

        if (o->n >= o->limits.pending_max || o->bytes + size > o->limits.pending_bytes_max ||
            pending_reserve(o) < 0)
                return;
        first = pending_first(o);
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (first[mid].id < id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (lo < o->n && first[lo].id == id)
                return;         /* already held */
        memmove(first + lo + 1, first + lo, (o->n - lo) * sizeof(OrderPending));
        first[lo] = (OrderPending) { .id = id, .item = o->ops->ref(item), .size = size };
        o->n++;
        o->bytes += size;
}

/* --- handing on --- */

static void deliver(TopicOrder *o, uint64_t id, void *item) {
        assert(id == o->position + 1);
        o->position = id;
        if (o->target < id)
                o->target = id;
        o->ops->deliver(id, item, o->userdata);
}

/* Hands on what was held back and now follows the position; drops what
 * the position passed. */
static void drain_pending(TopicOrder *o) {
        while (o->n > 0 && pending_first(o)->id <= o->position + 1) {
                OrderPending *p = pending_first(o);
                if (p->id == o->position + 1)
                        deliver(o, p->id, p->item);
                pending_pop(o);
        }
}

static OrderPlan plan_fetch(TopicOrder *o) {
        o->fetching = true;
        o->fetch_up_to = o->target;
        return (OrderPlan) { .action = ORDER_FETCH, .fetch_after = o->position, .fetch_up_to = o->target };
}

static OrderPlan plan_wait(usec_t at) {
        return (OrderPlan) { .action = ORDER_WAIT, .at = at };
}

/* What to do next, whatever the input was. */
static OrderPlan plan(TopicOrder *o, usec_t now) {
        if (!o->positioned || o->fetching)
                return (OrderPlan) { .action = ORDER_NOTHING };
        if (o->position >= o->target) {
                o->gap_until = o->hole_since = 0;
                return (OrderPlan) { .action = ORDER_NOTHING };
        }
        if (o->hole_since > 0) {
                /* Read again once the hole had its time. */
                if (now < o->hole_since + o->limits.hole_wait_usec)
                        return plan_wait(o->hole_since + o->limits.hole_wait_usec);
                return plan_fetch(o);
        }
        if (o->gap_until > 0 && now < o->gap_until)
                return plan_wait(o->gap_until);
        o->gap_until = 0;
        return plan_fetch(o);
}

OrderPlan order_positioned(TopicOrder *o, uint64_t last_id, usec_t now) {
        assert(o && !o->positioned);

        o->positioned = true;
        o->position = last_id;
        if (o->target < last_id)
                o->target = last_id;
        drain_pending(o);
        /* Early events that came while the store was asked wait their
         * gap's time from now. */
        if (o->n > 0 && o->gap_until == 0)
                o->gap_until = now + o->limits.gap_wait_usec;
        return plan(o, now);
}

OrderPlan order_receive(TopicOrder *o, uint64_t id, void *item, size_t size, usec_t now) {
        assert(o && item);

        if (o->positioned && id <= o->position)
                return plan(o, now);            /* seen before: our own echo, a resync */
        if (o->positioned && id == o->position + 1) {
                deliver(o, id, item);
                drain_pending(o);
                return plan(o, now);
        }
        if (o->target < id)
                o->target = id;
        pending_insert(o, id, item, size);
        /* Not moved by each further early event: under steady out-of-order
         * traffic the wait would never end. */
        if (o->gap_until == 0)
                o->gap_until = now + o->limits.gap_wait_usec;
        return plan(o, now);
}

OrderPlan order_hint(TopicOrder *o, uint64_t last_id, usec_t now) {
        assert(o);

        if (o->target < last_id)
                o->target = last_id;
        /* The ids exist: no reason to wait for them to come by themselves. */
        o->gap_until = 0;
        return plan(o, now);
}

void order_fetch_failed(TopicOrder *o) {
        assert(o && o->fetching);

        o->fetching = false;
}

/* Gives up on ids [position + 1, next - 1], which the store does not have. */
static void skip_hole(TopicOrder *o, uint64_t next, OrderPlan *report) {
        assert(next > o->position + 1);
        report->skipped_from = o->position + 1;
        report->skipped_to = next - 1;
        o->skipped += next - 1 - o->position;
        o->position = next - 1;
        if (o->target < o->position)
                o->target = o->position;
        o->hole_since = 0;
}

OrderPlan order_fetched(TopicOrder *o, const OrderPending *rows, size_t n_rows, usec_t now) {
        uint64_t up_to;
        size_t i;
        OrderPlan p, report = { 0 };

        assert(o && (rows || n_rows == 0) && o->fetching);

        o->fetching = false;
        /* What this read covered: the target may have moved since. */
        up_to = o->fetch_up_to;
        for (i = 0; i < n_rows && rows[i].id <= o->position + 1; i++)
                if (rows[i].id == o->position + 1)
                        deliver(o, rows[i].id, rows[i].item);
        /* Past a hole, the rest waits with the early events. */
        for (size_t j = i; j < n_rows; j++)
                pending_insert(o, rows[j].id, rows[j].item, rows[j].size);
        drain_pending(o);

        /* Nothing at all past the position, and nothing held that proves
         * more ids exist. A newer hint raised the target past this read:
         * read that range now. Otherwise it is read once more, HOLE_WAIT
         * later (an event can be hinted a moment before this connection
         * sees it: a system test lost one when it was given up at once);
         * still nothing then, and the store is believed over the hint: the
         * target falls back and nothing is skipped. A hint is not trusted
         * (a bus message anyone may publish): skipping to its id would
         * drop the real events up to it as duplicates. */
        if (n_rows == 0 && o->n == 0 && o->position < up_to) {
                if (o->target > up_to)
                        o->hole_since = 0;
                else if (o->hole_since == 0)
                        o->hole_since = now;
                else if (now >= o->hole_since + o->limits.hole_wait_usec) {
                        o->target = o->position;
                        o->hole_since = 0;
                }
                return plan(o, now);
        }

        /* A hole: the store returned the range without position + 1 (rows
         * after it, or none at all). The first time it gets a while to
         * appear; the next time it is skipped. */
        if (o->position < up_to && (i < n_rows || n_rows == 0)) {
                uint64_t next = i < n_rows ? rows[i].id : up_to + 1;
                if (o->hole_since == 0)
                        o->hole_since = now;
                else if (now >= o->hole_since + o->limits.hole_wait_usec) {
                        skip_hole(o, next, &report);
                        drain_pending(o);
                }
        } else
                o->hole_since = 0;
        p = plan(o, now);
        p.skipped_from = report.skipped_from;
        p.skipped_to = report.skipped_to;
        return p;
}

OrderPlan order_tick(TopicOrder *o, usec_t now) {
        assert(o);

        return plan(o, now);
}

/* --- subscribers --- */

bool order_subscriber_start(uint64_t position, bool has_after, uint64_t *cursor) {
        assert(cursor);

        if (!has_after) {
                *cursor = position;
                return true;
        }
        return *cursor >= position;
}

ReplayNext order_replay_next(uint64_t position, size_t n_rows, uint64_t page_last_id, usec_t now,
                             usec_t *empty_since, uint64_t *cursor) {
        assert(cursor && empty_since);

        if (*cursor >= position) {
                *empty_since = 0;
                return REPLAY_LIVE;
        }
        if (n_rows > 0) {
                *empty_since = 0;
                return REPLAY_MORE;
        }
        /* An empty page says only what the store had when it was read: no
         * row after the cursor up to the topic's last id then. Ids up to
         * there are holes (deleted by hand) and are passed; ids the
         * channel has since seen committed are read again, never skipped.
         * (Jumping to the position on any empty page lost the first event
         * of a run: its page was read just before that event committed.)
         * No topic row at all: nothing to wait for. */
        if (page_last_id == 0 || page_last_id >= position) {
                *cursor = position;
                *empty_since = 0;
                return REPLAY_LIVE;
        }
        if (page_last_id > *cursor)
                *cursor = page_last_id;
        /* The commit race costs one more read, at once. A store that stays
         * behind what the channel delivered (a failover to a replica that
         * lost the last commits, a topic re-created by hand) will not
         * catch up: after HOLE_WAIT the ids are given up on, as holes are,
         * instead of being read for ever. */
        if (*empty_since == 0) {
                *empty_since = now;
                return REPLAY_MORE;
        }
        if (now - *empty_since >= ORDER_HOLE_WAIT_USEC) {
                *cursor = position;
                *empty_since = 0;
                return REPLAY_LIVE;
        }
        return REPLAY_WAIT;
}

bool order_page_serves(uint64_t page_from, size_t n_rows, uint64_t last_id, uint64_t cursor) {
        /* An empty page is a moment's view: events may have come since, so
         * it serves no one but the subscriber that read it. */
        if (n_rows == 0)
                return false;
        if (cursor < page_from)
                return false;           /* the page starts after what it lacks */
        return cursor < last_id;
}

bool order_pruned(uint64_t cursor, uint64_t oldest, uint64_t last_id, uint64_t *ret_next) {
        assert(ret_next);

        if (oldest == 0) {
                if (cursor >= last_id)
                        return false;
                *ret_next = last_id + 1;
                return true;
        }
        if (cursor + 1 >= oldest)
                return false;
        *ret_next = oldest;
        return true;
}
