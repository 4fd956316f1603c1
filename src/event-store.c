/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#include "event-store.h"

/* The envelope's timestamp, to the microsecond, in UTC. */
#define TS_SQL "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

static const char select_position[] = "SELECT last_id FROM topics WHERE name = $1";

static const char select_range[] =
        "SELECT id, " TS_SQL ", payload FROM events WHERE topic = $1 AND id > $2 AND id <= $3 "
        "ORDER BY id LIMIT " STRINGIFY(STORE_RANGE_ROWS);

/* Up to $3 ids after $2, but only as many as start within $4 bytes of
 * payload: the running sum over the page says where each one starts.
 * Every row also carries the topic's oldest stored id and last id (one
 * row of NULL events when the page is empty), so that a reader can tell
 * when retention deleted what it asked for (order_pruned()). */
static const char select_page[] =
        "SELECT p.id, p.ts, p.payload, b.oldest, b.last_id FROM"
        " (SELECT (SELECT min(id) FROM events WHERE topic = $1) AS oldest,"
        "  (SELECT last_id FROM topics WHERE name = $1) AS last_id) AS b"
        " LEFT JOIN (SELECT id, ts, payload FROM ("
        "  SELECT id, " TS_SQL " AS ts, payload,"
        "  sum(octet_length(payload::text)) OVER (ORDER BY id) - octet_length(payload::text) AS before"
        "  FROM events WHERE topic = $1 AND id > $2 ORDER BY id LIMIT $3"
        " ) page WHERE before < $4) AS p ON true ORDER BY p.id";

static const char select_positions[] = "SELECT name, last_id FROM topics WHERE name = ANY($1::text[])";

static const char call_publish[] = "SELECT topic, first_id, n, ts FROM baton_publish($1::json, $2)";

static const char call_publish_keyed[] =
        "SELECT ord, id, ts, outcome FROM baton_publish_keyed($1::json, $2, $3::interval)";

static uint64_t column_u64(PGresult *res, size_t row, int column) {
        return strtoull(PQgetvalue(res, (int) row, column), NULL, 10);
}

int store_query_position(Db *db, const char *topic, usec_t timeout_usec, DbQueryCallback cb,
                         void *userdata) {
        assert(db && topic && cb);

        const char *params[] = { topic };

        return db_query_urgent(db, select_position, 1, params, timeout_usec, cb, userdata);
}

uint64_t store_position(const DbResult *result) {
        assert(result && !result->error);

        return PQntuples(result->result) > 0 ? column_u64(result->result, 0, 0) : 0;
}

int store_query_range(Db *db, const char *topic, uint64_t after, uint64_t up_to, usec_t timeout_usec,
                      DbQueryCallback cb, void *userdata) {
        assert(db && topic && cb && after < up_to);

        char a[24], b[24];
        const char *params[] = { topic, a, b };

        snprintf(a, sizeof(a), "%" PRIu64, after);
        snprintf(b, sizeof(b), "%" PRIu64, up_to);
        return db_query_urgent(db, select_range, 3, params, timeout_usec, cb, userdata);
}

int store_query_page(Db *db, const char *topic, uint64_t after, size_t max_rows, size_t max_bytes,
                     usec_t timeout_usec, DbQueryCallback cb, void *userdata) {
        assert(db && topic && cb && max_rows > 0 && max_bytes > 0);

        char a[24], rows[24], bytes[24];
        const char *params[] = { topic, a, rows, bytes };

        snprintf(a, sizeof(a), "%" PRIu64, after);
        snprintf(rows, sizeof(rows), "%zu", max_rows);
        snprintf(bytes, sizeof(bytes), "%zu", max_bytes);
        return db_query(db, select_page, 4, params, timeout_usec, cb, userdata);
}

size_t store_n_events(const DbResult *result) {
        assert(result && !result->error);

        int n = PQntuples(result->result);
        /* An empty page is one row of bounds with NULL events. */
        if (n == 1 && PQgetisnull(result->result, 0, 0))
                return 0;
        return (size_t) n;
}

void store_page_bounds(const DbResult *result, uint64_t *ret_oldest, uint64_t *ret_last_id) {
        assert(result && !result->error && ret_oldest && ret_last_id);

        PGresult *res = result->result;
        bool rows = PQntuples(res) > 0 && PQnfields(res) >= 5;

        *ret_oldest = rows && !PQgetisnull(res, 0, 3) ? column_u64(res, 0, 3) : 0;
        *ret_last_id = rows && !PQgetisnull(res, 0, 4) ? column_u64(res, 0, 4) : 0;
}

void store_event(const DbResult *result, size_t i, StoredEvent *ret) {
        assert(result && !result->error && ret && i < store_n_events(result));

        *ret = (StoredEvent) {
                .id = column_u64(result->result, i, 0),
                .ts = PQgetvalue(result->result, (int) i, 1),
                .payload = PQgetvalue(result->result, (int) i, 2),
                .payload_size = (size_t) PQgetlength(result->result, (int) i, 2),
        };
}

/* A text[] literal of the topics; their names need no quoting ([A-Za-z0-9_-]). */
static char *text_array(const char *const *topics, size_t n_topics) {
        size_t size = 3, len = 0;
        char *s;

        for (size_t i = 0; i < n_topics; i++)
                size += strlen(topics[i]) + 1;
        s = malloc(size);
        if (!s)
                return NULL;
        s[len++] = '{';
        for (size_t i = 0; i < n_topics; i++) {
                size_t n = strlen(topics[i]);
                if (i > 0)
                        s[len++] = ',';
                memcpy(s + len, topics[i], n);
                len += n;
        }
        s[len++] = '}';
        s[len] = '\0';
        return s;
}

int store_query_positions(Db *db, const char *const *topics, size_t n_topics, usec_t timeout_usec,
                          DbQueryCallback cb, void *userdata) {
        _cleanup_free_ char *names = NULL;
        const char *params[1];

        assert(db && (topics || n_topics == 0) && cb);

        names = text_array(topics, n_topics);
        if (!names)
                return -ENOMEM;
        params[0] = names;
        return db_query_urgent(db, select_positions, 1, params, timeout_usec, cb, userdata);
}

size_t store_n_positions(const DbResult *result) {
        assert(result && !result->error);

        return (size_t) PQntuples(result->result);
}

void store_position_at(const DbResult *result, size_t i, const char **ret_topic, uint64_t *ret_last_id) {
        assert(result && !result->error && ret_topic && ret_last_id && i < store_n_positions(result));

        *ret_topic = PQgetvalue(result->result, (int) i, 0);
        *ret_last_id = column_u64(result->result, i, 1);
}

int store_query_publish(Db *db, const char *batch_json, bool notify, usec_t timeout_usec,
                        DbQueryCallback cb, void *userdata) {
        assert(db && batch_json && cb);

        const char *params[] = { batch_json, notify ? "t" : "f" };

        return db_query(db, call_publish, 2, params, timeout_usec, cb, userdata);
}

size_t store_n_batches(const DbResult *result) {
        assert(result && !result->error);

        return (size_t) PQntuples(result->result);
}

void store_batch(const DbResult *result, size_t i, StoredBatch *ret) {
        assert(result && !result->error && ret && i < store_n_batches(result));

        *ret = (StoredBatch) {
                .topic = PQgetvalue(result->result, (int) i, 0),
                .first_id = column_u64(result->result, i, 1),
                .n = (unsigned) column_u64(result->result, i, 2),
                .ts = PQgetvalue(result->result, (int) i, 3),
        };
}

int store_query_publish_keyed(Db *db, const char *batch_json, bool notify, usec_t ttl_usec,
                              usec_t timeout_usec, DbQueryCallback cb, void *userdata) {
        char ttl[64];

        assert(db && batch_json && cb);

        snprintf(ttl, sizeof(ttl), "%" PRIu64 " microseconds", (uint64_t) ttl_usec);
        const char *params[] = { batch_json, notify ? "t" : "f", ttl };

        return db_query(db, call_publish_keyed, 3, params, timeout_usec, cb, userdata);
}

size_t store_n_keyed(const DbResult *result) {
        assert(result && !result->error);

        return (size_t) PQntuples(result->result);
}

void store_keyed(const DbResult *result, size_t i, StoredKeyed *ret) {
        assert(result && !result->error && ret && i < store_n_keyed(result));

        const char *outcome = PQgetvalue(result->result, (int) i, 3);
        uint64_t ord = column_u64(result->result, i, 0);

        *ret = (StoredKeyed) {
                .index = ord > 0 ? (size_t) ord - 1 : SIZE_MAX,
                .outcome = streq(outcome, "new") ? KEYED_NEW : streq(outcome, "repeat") ? KEYED_REPEAT
                        : KEYED_CONFLICT,
                .id = PQgetisnull(result->result, (int) i, 1) ? 0 : column_u64(result->result, i, 1),
                .ts = PQgetisnull(result->result, (int) i, 2) ? NULL : PQgetvalue(result->result, (int) i, 2),
        };
}
