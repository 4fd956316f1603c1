/* SPDX-License-Identifier: MIT */
#pragma once

/* The NATS connection (only when NATS__ENABLED). nats.c runs its own
 * threads; everything they report (connected, disconnected, messages) is
 * handed to the main loop through the mailbox, so Bus state is only ever
 * touched on the loop.
 *
 * The connection retries for ever: the initial connect included (nats.c's
 * default gives up after 60 attempts and then stays closed for good). */

#include <systemd/sd-event.h>

#include "event-bus-mailbox.h"
#include "util.h"

typedef struct Bus Bus;

/* What may wait between the NATS connection and the loop: nats.c's queue
 * for the events subscription, then the mailbox. Past either, events are
 * dropped there and read from PostgreSQL instead (BusLostCallback). */
#define BUS_PENDING_MESSAGES 65536
#define BUS_PENDING_BYTES (16 * 1024 * 1024)
#define BUS_MAILBOX_BYTES (16 * 1024 * 1024)

typedef struct BusSettings {
        const char *url;                /* one or more, comma-separated */
        const char *subject_prefix;
        const char *client_name;
        const char *signing_key;        /* NULL or "": unsigned (see bus-signature.h) */
} BusSettings;

/* What a message's signature says (bus-signature.h): only a BUS_SIGNED
 * message may be delivered as it is; the others are hints at most. */
typedef enum BusTrust {
        BUS_SIGNED,                     /* signed with our key */
        BUS_UNSIGNED,                   /* no signature: no key anywhere, or an older batond */
        BUS_UNVERIFIABLE,               /* signed, and this instance has no key */
        BUS_FORGED,                     /* signed, and the signature is wrong */
        _BUS_TRUST_MAX,
} BusTrust;

typedef void (*BusStateCallback)(Bus *bus, bool connected, void *userdata);
/* An event another instance (or this one) published; on the loop. */
typedef void (*BusEventCallback)(Bus *bus, const char *topic, const char *data, size_t size,
                                 BusTrust trust, void *userdata);
/* Events from the bus were dropped on the way in: the receiver must read
 * what it missed from the store. On the loop, once per episode. */
typedef void (*BusLostCallback)(Bus *bus, void *userdata);
/* error is NULL when the round trip succeeded. */
typedef void (*BusCheckCallback)(Bus *bus, const char *error, void *userdata);

int bus_new(sd_event *event, Mailbox *mailbox, const BusSettings *settings, Bus **ret);

/* Closes the connection and waits (up to 2 s) for the client's threads to
 * end. -ETIMEDOUT when they did not: then they may still post to the
 * mailbox, and neither the bus nor the mailbox may be freed. */
int bus_close(Bus *bus);

/* Closes (see bus_close()) and frees. */
Bus *bus_free(Bus *bus);
DEFINE_POINTER_CLEANUP(Bus, bus_free);

void bus_set_state_callback(Bus *bus, BusStateCallback cb, void *userdata);
void bus_set_event_callback(Bus *bus, BusEventCallback cb, void *userdata);
void bus_set_lost_callback(Bus *bus, BusLostCallback cb, void *userdata);

/* Publishes an event (its envelope) on <prefix>.events.<topic>; one over
 * the server's max_payload goes as a hint (event_hint()) instead. While
 * disconnected the client only buffers it: receivers catch up from
 * PostgreSQL anyway. */
int bus_publish_event(Bus *bus, const char *topic, uint64_t id, const char *data, size_t size);

typedef struct BusCounters {
        uint64_t dropped;               /* events dropped on the way in, since the start */
        uint64_t hinted;                /* events sent as hints: over max_payload */
        uint64_t received[_BUS_TRUST_MAX];      /* messages taken in, by their signature */
} BusCounters;

BusCounters bus_counters(const Bus *bus);

/* Starts connecting; returns at once whether or not a server answered
 * (connecting to an unresponsive host blocks for the client's connect
 * timeout, 2 s, once per server in the list). */
int bus_start(Bus *bus);

bool bus_connected(const Bus *bus);
/* When an established connection was lost (CLOCK_MONOTONIC), while
 * nats.c looks for another server; 0 when connected or never connected;
 * now when nats.c says it is lost and the loop has not heard yet. */
usec_t bus_lost_at(const Bus *bus, usec_t now);
const char *bus_last_error(const Bus *bus);

/* Proves the bus works end to end: publishes to a subject only this
 * instance subscribes to and waits for the message to come back through
 * the server. cb runs once, on the loop, within timeout_usec. One check at
 * a time: -EBUSY otherwise. */
int bus_check(Bus *bus, usec_t timeout_usec, BusCheckCallback cb, void *userdata);
