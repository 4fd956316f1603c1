/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#include "event-publisher.h"
#include "event-store.h"
#include "list.h"
#include "log.h"
#include "loop-util.h"
#include "parse-util.h"

/* A batch ends at this many events or bytes, whichever comes first: the
 * transaction stays short and the statement small. */
#define BATCH_EVENTS_MAX 1000
#define BATCH_BYTES_MAX (4 * 1024 * 1024)
/* Events with an Idempotency-Key are stored one statement each inside
 * baton_publish_keyed(): their batches are smaller. */
#define KEYED_BATCH_EVENTS_MAX 100

struct PublishTicket {
        char topic[129];
        char *key;                      /* Idempotency-Key, or NULL */
        char *payload;
        size_t payload_size;
        PublishCallback cb;             /* NULL once cancelled */
        void *userdata;
        usec_t deadline_usec;           /* answered with an error if still queued then */
        uint64_t id;
        int row;                        /* the result row that gave the id; -1 before */
        ListNode queue;                 /* in the publisher's queue, or in a batch */
};

/* The tickets of one transaction. */
typedef struct Batch {
        ListNode tickets;
        size_t n;
        bool keyed;                     /* all with an Idempotency-Key, or none */
} Batch;

struct Publisher {
        sd_event *event;
        Db *db;
        PublisherSettings settings;
        ListNode queue;                 /* waiting for the next batch, oldest first */
        size_t n_queued;
        uint64_t queued_bytes;          /* PUBLISH_TICKET_BYTES() of queue and in_flight */
        Batch in_flight;
        bool busy;
        sd_event_source *kick;
        sd_event_source *expiry;        /* at the oldest queued ticket's deadline */
        PublishedCallback published_cb;
        void *published_userdata;
        PublisherCounters counters;
};

static void ticket_free(Publisher *p, PublishTicket *t) {
        uint64_t bytes = PUBLISH_TICKET_BYTES(t->payload_size);

        assert(p->queued_bytes >= bytes);
        p->queued_bytes -= bytes;
        free(t->payload);
        free(t->key);
        free(t);
}

static void tickets_free(Publisher *p, ListNode *tickets) {
        LIST_FOREACH_SAFE(t, next, tickets, PublishTicket, queue) {
                list_remove(&t->queue);
                ticket_free(p, t);
        }
}

static void batch_free(Publisher *p) {
        tickets_free(p, &p->in_flight.tickets);
        p->in_flight.n = 0;
}

/* Whether t may join the batch being taken: the same kind (keyed or not,
 * they go to different functions) and, keyed, a key not in it yet. */
static bool batch_admits(const Batch *b, const PublishTicket *t) {
        if (b->n == 0)
                return true;
        if (b->keyed != !!t->key)
                return false;
        if (!b->keyed)
                return true;
        if (b->n >= KEYED_BATCH_EVENTS_MAX)
                return false;
        LIST_FOREACH(other, &b->tickets, PublishTicket, queue)
                if (streq(other->key, t->key))
                        return false;
        return true;
}

/* Writes s as a JSON string; Idempotency-Keys are printable ASCII, so
 * only '"' and '\\' need escaping. */
static char *write_json_string(char *w, const char *s) {
        *w++ = '"';
        for (; *s; s++) {
                if (*s == '"' || *s == '\\')
                        *w++ = '\\';
                *w++ = *s;
        }
        *w++ = '"';
        return w;
}

/* Moves up to a batch's worth of queued tickets into the in-flight batch
 * and builds its JSON: [{"topic":"t","data":<payload>},...], with "key"
 * in a keyed batch. Topics need no escaping; payloads are validated JSON.
 * On allocation failure returns NULL with the tickets in flight, for the
 * caller to answer. */
static char *batch_take(Publisher *p, size_t *ret_size) {
        size_t size = 2, n = 0;
        bool first = true;
        char *json, *w;

        p->in_flight.n = 0;
        for (PublishTicket *t; n < BATCH_EVENTS_MAX && (t = list_first(&p->queue, PublishTicket, queue)); ) {
                size_t item = strlen(t->topic) + t->payload_size + 24 + (t->key ? 2 * strlen(t->key) + 10 : 0);
                if (n > 0 && (size + item > BATCH_BYTES_MAX || !batch_admits(&p->in_flight, t)))
                        break;
                if (n == 0)
                        p->in_flight.keyed = t->key != NULL;
                list_remove(&t->queue);
                assert(p->n_queued > 0);
                p->n_queued--;
                list_append(&p->in_flight.tickets, &t->queue);
                size += item;
                p->in_flight.n = ++n;
        }

        json = malloc(size + 1);
        if (!json)
                return NULL;
        w = json;
        *w++ = '[';
        LIST_FOREACH(t, &p->in_flight.tickets, PublishTicket, queue) {
                w += sprintf(w, "%s{\"topic\":\"%s\",", first ? "" : ",", t->topic);
                first = false;
                if (t->key) {
                        w += sprintf(w, "\"key\":");
                        w = write_json_string(w, t->key);
                        *w++ = ',';
                }
                w += sprintf(w, "\"data\":");
                memcpy(w, t->payload, t->payload_size);
                w += t->payload_size;
                *w++ = '}';
        }
        *w++ = ']';
        *w = '\0';
        *ret_size = (size_t) (w - json);
        return json;
}

static void answer(Publisher *p, PublishTicket *t, const PublishResult *r) {
        bool stored_now = !r->error && !r->repeated && !r->conflict;

        if (r->error)
                p->counters.failed++;
        else if (r->repeated)
                p->counters.repeated++;
        else if (r->conflict)
                p->counters.conflicts++;
        else
                p->counters.published++;
        if (t->cb)
                t->cb(r, t->userdata);
        /* A repeat was delivered when it was stored. */
        if (stored_now && p->published_cb)
                p->published_cb(r, p->published_userdata);
}

static void batch_fail(Publisher *p, const char *error, bool outcome_unknown) {
        PublishResult r = { .error = error, .outcome_unknown = outcome_unknown };

        LIST_FOREACH(t, &p->in_flight.tickets, PublishTicket, queue) {
                r.topic = t->topic;
                answer(p, t, &r);
        }
        batch_free(p);
}

/* Rows: one per topic, (topic, first_id, n, ts); each topic's ids run in
 * batch order. */
static void batch_succeed(Publisher *p, const DbResult *result) {
        StoredBatch b;

        for (size_t i = 0; i < store_n_batches(result); i++) {
                store_batch(result, i, &b);
                uint64_t next = b.first_id;
                LIST_FOREACH(t, &p->in_flight.tickets, PublishTicket, queue)
                        if (t->row < 0 && streq(t->topic, b.topic)) {
                                t->id = next++;
                                t->row = (int) i;
                        }
        }
        LIST_FOREACH(t, &p->in_flight.tickets, PublishTicket, queue) {
                if (t->row >= 0)
                        store_batch(result, (size_t) t->row, &b);
                PublishResult r = {
                        .topic = t->topic, .id = t->id, .payload = t->payload,
                        .payload_size = t->payload_size,
                        .ts = t->row >= 0 ? b.ts : NULL,
                        .error = t->row >= 0 ? NULL : "the database returned no id for this event",
                };
                answer(p, t, &r);
        }
        batch_free(p);
}

/* One row per ticket, by its index in the batch (migration 0003). */
static void batch_succeed_keyed(Publisher *p, const DbResult *result) {
        StoredKeyed k;

        for (size_t i = 0; i < store_n_keyed(result); i++) {
                store_keyed(result, i, &k);
                size_t index = 0;
                LIST_FOREACH(t, &p->in_flight.tickets, PublishTicket, queue)
                        if (index++ == k.index && t->row < 0) {
                                t->row = (int) i;
                                t->id = k.id;
                        }
        }
        LIST_FOREACH(t, &p->in_flight.tickets, PublishTicket, queue) {
                if (t->row >= 0)
                        store_keyed(result, (size_t) t->row, &k);
                PublishResult r = {
                        .topic = t->topic, .id = t->id, .payload = t->payload,
                        .payload_size = t->payload_size,
                        .ts = t->row >= 0 ? k.ts : NULL,
                        .repeated = t->row >= 0 && k.outcome == KEYED_REPEAT,
                        .conflict = t->row >= 0 && k.outcome == KEYED_CONFLICT,
                        .error = t->row >= 0 ? NULL : "the database returned no id for this event",
                };
                answer(p, t, &r);
        }
        batch_free(p);
}

static void schedule(Publisher *p);

/* The oldest queued ticket is the next to expire. */
static void expiry_arm(Publisher *p) {
        PublishTicket *t = list_first(&p->queue, PublishTicket, queue);
        int r;

        if (!t)
                r = sd_event_source_set_enabled(p->expiry, SD_EVENT_OFF);
        else {
                r = sd_event_source_set_time(p->expiry, t->deadline_usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(p->expiry, SD_EVENT_ONESHOT);
        }
        if (r < 0)
                log_error_errno(r, "Failed to arm the publish queue's expiry timer: %m");
}

/* Events that never reached the database in time: not stored, and known
 * not to be, so the publisher may simply retry. */
static int on_expiry(sd_event_source *source, uint64_t usec, void *userdata) {
        Publisher *p = userdata;
        char buf[FORMAT_DURATION_MAX], error[128];
        size_t n = 0;

        snprintf(error, sizeof(error), "database unavailable: the event waited %s for the database "
                 "and was not stored", format_duration(buf, sizeof(buf), p->settings.query_timeout_usec));
        for (PublishTicket *t; (t = list_first(&p->queue, PublishTicket, queue)) && t->deadline_usec <= usec; n++) {
                PublishResult r = { .error = error, .topic = t->topic };
                list_remove(&t->queue);
                assert(p->n_queued > 0);
                p->n_queued--;
                answer(p, t, &r);
                ticket_free(p, t);
        }
        if (n > 0)
                log_warning("%zu queued event(s) waited %s for the database; answered 503.", n, buf);
        expiry_arm(p);
        return 0;
}

static void on_batch_done(Db *db, const DbResult *result, void *userdata) {
        Publisher *p = userdata;
        char error[300];

        p->busy = false;
        if (result->error) {
                /* The client gets the kind of failure, the journal the
                 * libpq text (it names hosts and roles). */
                snprintf(error, sizeof(error), "database unavailable (%s)", db_error_code(result->sqlstate));
                log_warning("Publishing %zu event(s) failed: %s", p->in_flight.n, result->error);
                /* An error from the server (it has an SQLSTATE) rolled the
                 * statement back; anything else came after it was sent. */
                batch_fail(p, error, !result->sqlstate);
        } else if (p->in_flight.keyed)
                batch_succeed_keyed(p, result);
        else
                batch_succeed(p, result);
        schedule(p);
}

static void send_batch(Publisher *p) {
        _cleanup_free_ char *json = NULL;
        char error[300];
        size_t size;
        int r;

        if (p->busy || list_empty(&p->queue))
                return;
        json = batch_take(p, &size);
        expiry_arm(p);
        if (!json) {
                /* Retrying at once would spin while memory is short: answer
                 * this batch's share of the queue now instead. */
                log_error("Out of memory building a batch of events.");
                batch_fail(p, "out of memory", false);
                schedule(p);
                return;
        }
        if (p->in_flight.keyed)
                r = store_query_publish_keyed(p->db, json, p->settings.notify, p->settings.idempotency_ttl_usec,
                                              p->settings.query_timeout_usec, on_batch_done, p);
        else
                r = store_query_publish(p->db, json, p->settings.notify, p->settings.query_timeout_usec,
                                        on_batch_done, p);
        if (r < 0) {
                snprintf(error, sizeof(error), "database unavailable (%s)",
                         r == -ENOTCONN ? db_error_code(NULL) : strerror(-r));
                batch_fail(p, error, false);
                schedule(p);
                return;
        }
        p->busy = true;
}

static int on_kick(sd_event_source *source, void *userdata) {
        send_batch(userdata);
        return 0;
}

/* Sends from the loop, never inside submit: everything submitted in the
 * same loop turn goes into one batch, and callbacks never run before
 * publisher_submit() returned. */
static void schedule(Publisher *p) {
        if (!list_empty(&p->queue) && !p->busy &&
            sd_event_source_set_enabled(p->kick, SD_EVENT_ONESHOT) < 0)
                log_error("Failed to schedule a batch of events.");
}

int publisher_submit(Publisher *p, const char *topic, const char *key, char *payload, size_t payload_size,
                     PublishCallback cb, void *userdata, PublishTicket **ret) {
        PublishTicket *t;
        bool was_empty;

        assert(p && topic && payload && ret);

        if (p->queued_bytes + PUBLISH_TICKET_BYTES(payload_size) > p->settings.queue_max_bytes) {
                p->counters.refused++;
                return -ENOBUFS;
        }
        t = calloc(1, sizeof(PublishTicket));
        if (!t)
                return -ENOMEM;
        t->row = -1;
        if (key) {
                t->key = strdup(key);
                if (!t->key) {
                        free(t);
                        return -ENOMEM;
                }
        }
        snprintf(t->topic, sizeof(t->topic), "%s", topic);
        t->payload = payload;
        t->payload_size = payload_size;
        t->cb = cb;
        t->userdata = userdata;
        t->deadline_usec = now_usec(CLOCK_MONOTONIC) + p->settings.query_timeout_usec;
        was_empty = list_empty(&p->queue);
        list_append(&p->queue, &t->queue);
        p->n_queued++;
        p->queued_bytes += PUBLISH_TICKET_BYTES(payload_size);
        if (was_empty)
                expiry_arm(p);
        schedule(p);
        *ret = t;
        return 0;
}

void publisher_cancel(PublishTicket *t) {
        assert(t);

        t->cb = NULL;
}

int publisher_new(sd_event *event, Db *write_db, const PublisherSettings *settings, Publisher **ret) {
        Publisher *p = calloc(1, sizeof(Publisher));
        int r;

        assert(event && write_db && settings && ret);

        if (!p)
                return -ENOMEM;
        list_init(&p->queue);
        list_init(&p->in_flight.tickets);
        p->event = sd_event_ref(event);
        p->db = write_db;
        p->settings = *settings;
        r = event_defer_new(event, &p->kick, on_kick, p);
        if (r >= 0)
                r = event_timer_new(event, &p->expiry, 10 * USEC_PER_MSEC, on_expiry, p);
        if (r < 0) {
                publisher_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

Publisher *publisher_free(Publisher *p) {
        if (!p)
                return NULL;
        db_cancel(p->db, p);
        batch_free(p);
        tickets_free(p, &p->queue);
        sd_event_source_disable_unref(p->kick);
        sd_event_source_disable_unref(p->expiry);
        sd_event_unref(p->event);
        return mfree(p);
}

void publisher_set_settings(Publisher *p, const PublisherSettings *settings) {
        assert(p && settings);

        p->settings = *settings;
}

void publisher_set_published_callback(Publisher *p, PublishedCallback cb, void *userdata) {
        assert(p);

        p->published_cb = cb;
        p->published_userdata = userdata;
}

PublisherCounters publisher_counters(const Publisher *p) {
        assert(p);

        PublisherCounters c = p->counters;

        c.queued_bytes = p->queued_bytes;
        return c;
}
