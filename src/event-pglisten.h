/* SPDX-License-Identifier: MIT */
#pragma once

/* Cross-instance fan-out without NATS: a connection that LISTENs to
 * baton_events, where baton_publish() announces "topic first last" for
 * every committed batch (see migrations/0002). Each announcement is a hint
 * to the fanout, which reads the events itself (payloads can exceed
 * NOTIFY's limit). Notifications sent while this connection was down are
 * lost, so every (re)connect is followed by a resync from the tables. */

#include <systemd/sd-event.h>

#include "db.h"
#include "event-fanout.h"

typedef struct PgListener PgListener;

int pglisten_new(sd_event *event, const DbSettings *settings, Fanout *fanout, PgListener **ret);
PgListener *pglisten_free(PgListener *l);
DEFINE_POINTER_CLEANUP(PgListener, pglisten_free);

int pglisten_start(PgListener *l);
/* The connection, for readiness and timeouts. */
Db *pglisten_db(PgListener *l);

/* Parses "topic first last"; -EBADMSG for anything else. */
int pglisten_parse(const char *payload, char topic[129], uint64_t *ret_last);
