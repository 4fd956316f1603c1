/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <microhttpd.h>
#include <stdio.h>

#include "health-checks.h"
#include "loop-util.h"
#include "log.h"
#include "parse-util.h"

#define WATCHED_MAX 4

typedef struct WatchedConnection {
        const char *name;
        Db *db;
} WatchedConnection;

struct Health {
        sd_event *event;
        Db *db;
        WatchedConnection watched[WATCHED_MAX];
        size_t n_watched;
        Bus *bus;
        HealthSettings settings;

        HealthSnapshot snapshot;
        char starting_reason[256];
        CheckStats database_stats;
        CheckStats nats_stats;

        bool round_active;
        unsigned round_pending;
        usec_t db_started, bus_started;
        uint64_t rounds;
        sd_event_source *timer;         /* next round */
        sd_event_source *bus_retry;     /* the NATS check again, during a failover */

        HttpSharedResponse *ready_response;     /* rebuilt when the snapshot changes */

        HealthChangeCallback change_cb;
        void *change_userdata;
};

static void round_start(Health *h);

/* A failed round while starting is retried this soon. */
#define HEALTH_STARTING_RETRY_USEC (50 * USEC_PER_MSEC)

/* When the NATS node an instance is connected to dies, nats.c moves to
 * another node of the cluster: 0.1 s in test_nats.py, on loopback. That is
 * not an outage, and readiness must not say so (an instance read as not
 * ready is taken out by load balancers and by baton-deploy). So a NATS
 * check that fails while the connection has been lost for less than this
 * is tried again every BUS_FAILOVER_RETRY_USEC, within the same round;
 * only a connection lost for longer, or a failure with the connection up
 * (no round trip), counts. With no node left, readiness turns red this
 * much later than it did. */
#define BUS_FAILOVER_GRACE_USEC (3 * USEC_PER_SEC)
#define BUS_FAILOVER_RETRY_USEC (100 * USEC_PER_MSEC)

static void changed(Health *h) {
        h->ready_response = http_shared_response_unref(h->ready_response);
        if (h->change_cb)
                h->change_cb(h, h->change_userdata);
}

/* Logs a dependency going down or coming back, once per transition. */
static void record(Health *h, CheckResult *c, CheckStats *stats, const char *name, bool up,
                   usec_t started, const char *error) {
        bool was_up = c->checked && c->up;
        char buf[FORMAT_DURATION_MAX];

        check_result_set(c, up, now_usec(CLOCK_MONOTONIC) - started, error);
        histogram_observe(&stats->duration, c->duration_usec);
        if (up)
                stats->passed++;
        else
                stats->failed++;
        if (was_up && !up)
                log_event(LOG_WARNING, "dependency_down", "Health check of %s failed: %s", name, c->error);
        else if (!was_up && up && c->checked && h->snapshot.phase != HEALTH_STARTING)
                log_event(LOG_INFO, "dependency_up", "Health check of %s passes again (%s).", name,
                          format_duration(buf, sizeof(buf), c->duration_usec));
}

static void round_finish(Health *h) {
        usec_t next = h->settings.interval_usec;
        int r;

        h->round_active = false;
        h->rounds++;
        /* Starting, a failed round is usually a work connection that is not
         * up yet, a moment behind the control connection: READY=1 (and a
         * restart, whose clients wait for it) must not wait a whole
         * interval for that. */
        if (h->snapshot.phase == HEALTH_STARTING && !health_snapshot_checks_pass(&h->snapshot) &&
            next > HEALTH_STARTING_RETRY_USEC)
                next = HEALTH_STARTING_RETRY_USEC;
        r = event_timer_arm(h->timer, next);
        if (r < 0)
                log_error_errno(r, "Failed to schedule the next health check round: %m");
        changed(h);
}

static void check_done(Health *h) {
        if (--h->round_pending == 0)
                round_finish(h);
}

static void on_db_checked(Db *db, const DbResult *result, void *userdata) {
        Health *h = userdata;
        char error[CHECK_ERROR_MAX];
        const char *failure = result->error ? db_error_code(result->sqlstate) : NULL;

        /* The health body gets the kind of failure, the journal the libpq
         * text (it names hosts and roles). */
        if (result->error)
                log_debug("Health check of PostgreSQL: %s", result->error);
        /* SELECT 1 proves the server; the other connections must be up too,
         * or publishing (say) fails while ready says UP. */
        for (size_t i = 0; !failure && i < h->n_watched; i++)
                if (!db_connected(h->watched[i].db)) {
                        snprintf(error, sizeof(error), "%s connection: %s", h->watched[i].name,
                                 db_error_code(NULL));
                        failure = error;
                }
        record(h, &h->snapshot.database, &h->database_stats, "PostgreSQL", !failure, h->db_started, failure);
        check_done(h);
}

/* True when a failed NATS check is a failover in progress, to be tried
 * again: the instance was ready on NATS, lost its connection less than
 * BUS_FAILOVER_GRACE_USEC ago, and this round's NATS check has not run
 * longer than that either (a node that accepts and drops connections
 * over and over would otherwise hold the round, and the database's check
 * with it, for ever). A node that stops answering without closing is no
 * failover until nats.c's pings notice (4 to 6 s): its echo times out
 * and counts, as it should. */
static bool bus_failing_over(Health *h) {
        usec_t now = now_usec(CLOCK_MONOTONIC), lost_at = bus_lost_at(h->bus, now);
        int r;

        if (!h->snapshot.nats.checked || !h->snapshot.nats.up || lost_at == 0 ||
            now - lost_at >= BUS_FAILOVER_GRACE_USEC || now - h->bus_started >= BUS_FAILOVER_GRACE_USEC)
                return false;
        r = event_timer_arm(h->bus_retry, BUS_FAILOVER_RETRY_USEC);
        if (r < 0) {
                log_error_errno(r, "Failed to schedule the NATS check again: %m");
                return false;
        }
        return true;
}

static void bus_check_failed(Health *h, const char *error) {
        if (bus_failing_over(h))
                return;
        record(h, &h->snapshot.nats, &h->nats_stats, "NATS", false, h->bus_started, error);
        check_done(h);
}

static void on_bus_checked(Bus *bus, const char *error, void *userdata) {
        Health *h = userdata;

        if (error) {
                bus_check_failed(h, error);
                return;
        }
        record(h, &h->snapshot.nats, &h->nats_stats, "NATS", true, h->bus_started, NULL);
        check_done(h);
}

static void bus_check_start(Health *h) {
        int r;

        r = bus_check(h->bus, h->settings.timeout_usec, on_bus_checked, h);
        if (r < 0)
                bus_check_failed(h, r == -ENOTCONN || r == -EIO ? bus_last_error(h->bus) : strerror(-r));
}

static int on_bus_retry(sd_event_source *source, uint64_t usec, void *userdata) {
        bus_check_start(userdata);
        return 0;
}

static void round_start(Health *h) {
        int r;

        if (h->round_active)
                return;
        h->round_active = true;
        /* Both counted before either starts: one may complete at once. */
        h->round_pending = h->bus ? 2 : 1;

        h->db_started = now_usec(CLOCK_MONOTONIC);
        r = db_query(h->db, "SELECT 1", 0, NULL, h->settings.timeout_usec, on_db_checked, h);
        if (r < 0) {
                record(h, &h->snapshot.database, &h->database_stats, "PostgreSQL", false, h->db_started,
                       r == -ENOTCONN ? db_error_code(NULL) : strerror(-r));
                check_done(h);
        }
        if (!h->bus)
                return;
        h->bus_started = now_usec(CLOCK_MONOTONIC);
        bus_check_start(h);
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        round_start(userdata);
        return 0;
}

int health_new(sd_event *event, Db *db, Bus *bus, const HealthSettings *settings, Health **ret) {
        _cleanup_(health_freep) Health *h = NULL;
        int r;

        assert(event && db && settings && ret);

        h = calloc(1, sizeof(Health));
        if (!h)
                return -ENOMEM;
        h->event = sd_event_ref(event);
        h->db = db;
        h->bus = bus;
        h->settings = *settings;
        h->snapshot.phase = HEALTH_STARTING;
        h->snapshot.nats_enabled = bus != NULL;
        h->snapshot.starting_reason = h->starting_reason;

        r = event_timer_new(event, &h->timer, 10 * USEC_PER_MSEC, on_timer, h);
        if (r < 0)
                return r;
        r = event_timer_new(event, &h->bus_retry, 0, on_bus_retry, h);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(h);
        return 0;
}

Health *health_free(Health *h) {
        if (!h)
                return NULL;
        sd_event_source_disable_unref(h->timer);
        sd_event_source_disable_unref(h->bus_retry);
        http_shared_response_unref(h->ready_response);
        sd_event_unref(h->event);
        return mfree(h);
}

void health_set_change_callback(Health *h, HealthChangeCallback cb, void *userdata) {
        assert(h);

        h->change_cb = cb;
        h->change_userdata = userdata;
}

int health_watch_connection(Health *h, const char *name, Db *db) {
        assert(h && name && db);

        if (h->n_watched >= WATCHED_MAX)
                return -E2BIG;
        h->watched[h->n_watched++] = (WatchedConnection) { .name = name, .db = db };
        return 0;
}

void health_set_settings(Health *h, const HealthSettings *settings) {
        assert(h && settings);

        h->settings = *settings;
}

void health_set_phase(Health *h, HealthPhase phase, const char *starting_reason) {
        assert(h);

        bool same_reason = streq(h->starting_reason, strempty(starting_reason));

        if (h->snapshot.phase == phase && same_reason)
                return;
        h->snapshot.phase = phase;
        snprintf(h->starting_reason, sizeof(h->starting_reason), "%s", strempty(starting_reason));
        changed(h);
}

int health_start(Health *h) {
        assert(h);

        round_start(h);
        return 0;
}

bool health_ready(const Health *h) {
        assert(h);

        return health_snapshot_ready(&h->snapshot);
}

const HealthSnapshot *health_snapshot(const Health *h) {
        assert(h);

        return &h->snapshot;
}

uint64_t health_rounds(const Health *h) {
        assert(h);

        return h->rounds;
}

const CheckStats *health_database_stats(const Health *h) {
        assert(h);

        return &h->database_stats;
}

const CheckStats *health_nats_stats(const Health *h) {
        assert(h);

        return &h->nats_stats;
}

void health_respond_ready(Health *h, HttpRequest *req) {
        assert(h && req);

        if (!h->ready_response) {
                unsigned status = health_ready(h) ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
                if (http_shared_response_new(status, health_snapshot_to_json(&h->snapshot),
                                             &h->ready_response) < 0) {
                        http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                                           "out of memory");
                        return;
                }
        }
        http_respond_shared(req, h->ready_response);
}
