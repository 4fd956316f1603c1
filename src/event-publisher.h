/* SPDX-License-Identifier: MIT */
#pragma once

/* Stores published events in PostgreSQL with group commit: events that
 * arrive while a batch is being written wait and go together in the next
 * one (one transaction, one round trip: baton_publish()). Each publish is
 * answered only after its batch committed, with its id; or with the
 * database's error, never with an id that was not committed.
 *
 * The queue is bounded (queue_max_bytes, the events in flight included):
 * past it publisher_submit() refuses at once. An event that waits longer
 * than query_timeout_usec without being sent (the one batch in flight is
 * stuck on a frozen database) is answered with an error, known not to be
 * stored. A requester that goes away does not take its event back: once
 * its whole request was read, the event commits with its batch like any
 * other (batond cannot tell a client that left from one that half-closed
 * and still waits, and the two must not get different outcomes). */

#include <systemd/sd-event.h>

#include "db.h"

typedef struct Publisher Publisher;
typedef struct PublishTicket PublishTicket;

typedef struct PublishResult {
        const char *error;              /* NULL on success */
        /* On error: the batch reached the database and no answer came back
         * (a timeout, a broken connection), so it may have committed. */
        bool outcome_unknown;
        uint64_t id;
        const char *topic;
        const char *ts;                 /* commit time, as stored */
        const char *payload;            /* as stored */
        size_t payload_size;
        /* With an Idempotency-Key: stored before under this key (id and
         * ts are the original's, nothing was stored now), or used before
         * for another topic or payload (nothing stored, no id). */
        bool repeated;
        bool conflict;
} PublishResult;

typedef void (*PublishCallback)(const PublishResult *result, void *userdata);

typedef struct PublisherSettings {
        usec_t query_timeout_usec;
        uint64_t queue_max_bytes;
        bool notify;                    /* announce new events with NOTIFY (no NATS) */
        usec_t idempotency_ttl_usec;    /* how long an Idempotency-Key is remembered */
} PublisherSettings;

int publisher_new(sd_event *event, Db *write_db, const PublisherSettings *settings, Publisher **ret);
/* Pending publishes are dropped without their callbacks. */
Publisher *publisher_free(Publisher *p);
DEFINE_POINTER_CLEANUP(Publisher, publisher_free);

void publisher_set_settings(Publisher *p, const PublisherSettings *settings);

/* What an event costs the queue: its JSON and its ticket. */
#define PUBLISH_TICKET_BYTES(payload_size) ((uint64_t) (payload_size) + 256)

/* Queues an event, with an Idempotency-Key or NULL (printable ASCII, at
 * most IDEMPOTENCY_KEY_MAX, copied); takes ownership of payload (JSON, NUL-ended).
 * cb runs once, later, on the loop, unless the ticket is cancelled.
 * -ENOBUFS when the queue is full (payload is still the caller's then). */
#define IDEMPOTENCY_KEY_MAX 255
int publisher_submit(Publisher *p, const char *topic, const char *key, char *payload, size_t payload_size,
                     PublishCallback cb, void *userdata, PublishTicket **ret);

/* The requester went away: its callback will not run (the event is still
 * stored if its batch commits). */
void publisher_cancel(PublishTicket *t);

/* Every committed event, after its publisher was answered: for delivery. */
typedef void (*PublishedCallback)(const PublishResult *result, void *userdata);
void publisher_set_published_callback(Publisher *p, PublishedCallback cb, void *userdata);

typedef struct PublisherCounters {
        uint64_t published;             /* committed */
        uint64_t repeated;              /* answered from an Idempotency-Key, nothing stored */
        uint64_t conflicts;             /* an Idempotency-Key reused for another event: 422 */
        uint64_t failed;                /* answered with an error */
        uint64_t refused;               /* refused at once: the queue was full */
        uint64_t queued_bytes;          /* now, the events in flight included */
} PublisherCounters;

PublisherCounters publisher_counters(const Publisher *p);
