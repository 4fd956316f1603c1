/* SPDX-License-Identifier: MIT */
#pragma once

/* Every statement on the topics and events tables, in one place: where a
 * topic stands, ranges for gap fills, pages for replays and the history
 * API, the positions of many topics for a resync, and the publish batch.
 * Each store_query_*() queues the statement on the connection given (the
 * caller's userdata is the query's, so db_cancel(db, userdata) cancels
 * it); the callback reads its rows with store_*() below, as plain values
 * valid during the callback. Nothing outside this module knows a column. */

#include "db.h"

/* One stored event, as read back. */
typedef struct StoredEvent {
        uint64_t id;
        const char *ts;                 /* RFC 3339 in UTC, as the envelope shows it */
        const char *payload;            /* JSON text, as stored */
        size_t payload_size;
} StoredEvent;

/* The last id of a topic (0 for one nobody published to). Urgent: live
 * delivery waits on it. */
int store_query_position(Db *db, const char *topic, usec_t timeout_usec, DbQueryCallback cb,
                         void *userdata);
uint64_t store_position(const DbResult *result);

/* Ids of topic in (after, up_to], at most STORE_RANGE_ROWS of them, in
 * order. Urgent: live delivery waits on gap fills. */
#define STORE_RANGE_ROWS 500
int store_query_range(Db *db, const char *topic, uint64_t after, uint64_t up_to, usec_t timeout_usec,
                      DbQueryCallback cb, void *userdata);

/* Ids of topic after 'after', in order: at most max_rows, and only as many
 * as start within max_bytes of payload (at least one), so that a page is
 * bounded in memory whatever the events' size. For replays and history. */
int store_query_page(Db *db, const char *topic, uint64_t after, size_t max_rows, size_t max_bytes,
                     usec_t timeout_usec, DbQueryCallback cb, void *userdata);

/* The rows of a range or a page. */
size_t store_n_events(const DbResult *result);
void store_event(const DbResult *result, size_t i, StoredEvent *ret);
/* Of a page: the topic's oldest stored id and its last id when it was
 * read (0: none stored; 0: no such topic). */
void store_page_bounds(const DbResult *result, uint64_t *ret_oldest, uint64_t *ret_last_id);

/* The last ids of the named topics (those that exist), for a resync. Urgent. */
int store_query_positions(Db *db, const char *const *topics, size_t n_topics, usec_t timeout_usec,
                          DbQueryCallback cb, void *userdata);
size_t store_n_positions(const DbResult *result);
void store_position_at(const DbResult *result, size_t i, const char **ret_topic, uint64_t *ret_last_id);

/* Stores a batch ([{"topic": ..., "data": ...}, ...], JSON text) in one
 * transaction; ids are per topic in batch order. notify: announce each
 * topic's new ids on LISTEN/NOTIFY (when NATS is off). */
int store_query_publish(Db *db, const char *batch_json, bool notify, usec_t timeout_usec,
                        DbQueryCallback cb, void *userdata);
/* One row per topic of the batch: its first id, how many, the commit time. */
typedef struct StoredBatch {
        const char *topic;
        uint64_t first_id;
        unsigned n;
        const char *ts;
} StoredBatch;
size_t store_n_batches(const DbResult *result);
void store_batch(const DbResult *result, size_t i, StoredBatch *ret);

/* Stores a batch of events with Idempotency-Keys ([{"topic": ..., "key":
 * ..., "data": ...}, ...], keys distinct) in one transaction; a key used
 * within ttl_usec is answered from the table instead (migration 0003). */
int store_query_publish_keyed(Db *db, const char *batch_json, bool notify, usec_t ttl_usec,
                              usec_t timeout_usec, DbQueryCallback cb, void *userdata);
typedef enum KeyedOutcome {
        KEYED_NEW,                      /* stored now */
        KEYED_REPEAT,                   /* stored before under this key: its id and time */
        KEYED_CONFLICT,                 /* the key was used for another topic or payload */
} KeyedOutcome;
/* One row per element of the batch, in no particular order. */
typedef struct StoredKeyed {
        size_t index;                   /* in the batch, from 0 */
        KeyedOutcome outcome;
        uint64_t id;                    /* 0 for a conflict */
        const char *ts;                 /* NULL for a conflict */
} StoredKeyed;
size_t store_n_keyed(const DbResult *result);
void store_keyed(const DbResult *result, size_t i, StoredKeyed *ret);
