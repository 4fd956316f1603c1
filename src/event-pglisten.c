/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#include "event-format.h"
#include "log.h"
#include "event-pglisten.h"

#define CHANNEL "baton_events"

struct PgListener {
        Db *db;
        Fanout *fanout;
};

int pglisten_parse(const char *payload, char topic[129], uint64_t *ret_last) {
        uint64_t first, last;
        int consumed = 0;

        assert(payload && topic && ret_last);

        if (sscanf(payload, "%128[A-Za-z0-9_-] %" SCNu64 " %" SCNu64 "%n", topic, &first, &last,
                   &consumed) != 3 || payload[consumed] != '\0' || first == 0 || last < first ||
            !topic_name_valid(topic, strlen(topic)))
                return -EBADMSG;
        *ret_last = last;
        return 0;
}

static void on_notify(Db *db, const char *channel, const char *payload, void *userdata) {
        PgListener *l = userdata;
        char topic[129];
        uint64_t last;

        if (!streq(channel, CHANNEL) || pglisten_parse(payload, topic, &last) < 0) {
                log_debug("Ignoring notification on %s: '%s'.", channel, payload);
                return;
        }
        fanout_hint(l->fanout, topic, last);
}

static void on_listening(Db *db, const DbResult *result, void *userdata) {
        PgListener *l = userdata;

        if (result->error) {
                log_warning("LISTEN " CHANNEL " failed: %s; reconnecting.", result->error);
                db_reset(db, "LISTEN failed");
                return;
        }
        /* Whatever was announced while we were not listening is lost. */
        fanout_resync(l->fanout);
}

static void on_state(Db *db, bool connected, void *userdata) {
        if (connected && db_query(db, "LISTEN " CHANNEL, 0, NULL, 10 * USEC_PER_SEC, on_listening,
                                  userdata) < 0)
                db_reset(db, "cannot queue LISTEN");
}

int pglisten_new(sd_event *event, const DbSettings *settings, Fanout *fanout, PgListener **ret) {
        PgListener *l = calloc(1, sizeof(PgListener));
        int r;

        assert(event && settings && fanout && ret);

        if (!l)
                return -ENOMEM;
        l->fanout = fanout;
        r = db_new(event, settings, &l->db);
        if (r < 0) {
                free(l);
                return r;
        }
        db_set_state_callback(l->db, on_state, l);
        db_set_notify_callback(l->db, on_notify, l);
        *ret = l;
        return 0;
}

PgListener *pglisten_free(PgListener *l) {
        if (!l)
                return NULL;
        db_free(l->db);
        return mfree(l);
}

int pglisten_start(PgListener *l) {
        assert(l);

        return db_start(l->db);
}

Db *pglisten_db(PgListener *l) {
        assert(l);

        return l->db;
}
