/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/random.h>

#include "bus-signature.h"
#include "event-bus.h"
#include "loop-util.h"
#include "log.h"
#include "config-mask.h"
#include "event-format.h"
#include "parse-util.h"

#define BUS_ERROR_MAX 256

typedef enum BusEventType {
        BUS_EVENT_CONNECTED,
        BUS_EVENT_DISCONNECTED,
        BUS_EVENT_CLOSED,
        BUS_EVENT_ECHO,
        BUS_EVENT_ASYNC_ERROR,
        BUS_EVENT_MESSAGE,              /* a published event */
        BUS_EVENT_LOST,                 /* events dropped: the mailbox or nats.c's queue was full */
} BusEventType;

/* What a NATS thread hands to the loop. */
typedef struct BusEvent {
        BusEventType type;
        uint64_t echo_id;
        char text[BUS_ERROR_MAX];       /* an error, or the topic of a message */
        BusTrust trust;                 /* of a message */
        size_t size;
        char data[];                    /* the message, NUL-terminated */
} BusEvent;

struct Bus {
        sd_event *event;
        Mailbox *mailbox;
        char *url;
        char *masked_url;
        char *client_name;
        char *echo_subject;
        char *events_subject;           /* <prefix>.events.* */
        size_t events_prefix_len;       /* strlen("<prefix>.events.") */
        char *signing_key;              /* NULL: nothing is signed, nothing trusted */
        size_t signing_key_size;

        natsOptions *options;
        natsConnection *conn;
        natsSubscription *echo_sub;
        natsSubscription *events_sub;
        bool connected;
        usec_t lost_at;                 /* CLOCK_MONOTONIC; 0 while connected, or before the first connection */
        char last_error[BUS_ERROR_MAX];

        uint64_t echo_id;               /* the id the running check waits for */
        BusCheckCallback check_cb;
        void *check_userdata;
        sd_event_source *check_timer;
        usec_t check_timeout_usec;

        BusStateCallback state_cb;
        void *state_userdata;
        BusEventCallback event_cb;
        void *event_userdata;
        BusLostCallback lost_cb;
        void *lost_userdata;

        /* Set by a NATS thread that dropped an event, until the loop has
         * taken the BUS_EVENT_LOST it posted then: one per episode. */
        atomic_bool losing;
        atomic_uint_fast64_t dropped;   /* events dropped, since the start */
        uint64_t too_large;             /* events sent as hints (over max_payload) */
        uint64_t received[_BUS_TRUST_MAX];
};

static const char *nats_error_text(natsStatus s) {
        const char *text = nats_GetLastError(NULL);
        return !isempty(text) ? text : natsStatus_GetText(s);
}

static void on_event(void *userdata, void *payload, bool discarded);

/* --- NATS threads: copy what is needed and post it --- */

static void post_event(Bus *bus, BusEventType type, uint64_t echo_id, const char *text) {
        BusEvent *e = calloc(1, sizeof(BusEvent) + 1);

        if (!e)
                return;         /* out of memory on a library thread: nothing better to do */
        e->type = type;
        e->echo_id = echo_id;
        snprintf(e->text, sizeof(e->text), "%s", strempty(text));
        if (mailbox_post(bus->mailbox, on_event, bus, e, 0) < 0)
                free(e);
}

/* On a NATS thread: events were dropped before the loop saw them. The
 * loop learns it once per episode and reads them from PostgreSQL. */
static void post_lost(Bus *bus, uint64_t n) {
        atomic_fetch_add(&bus->dropped, n);
        if (!atomic_exchange(&bus->losing, true))
                post_event(bus, BUS_EVENT_LOST, 0, NULL);
}

static void on_nats_connected(natsConnection *nc, void *closure) {
        post_event(closure, BUS_EVENT_CONNECTED, 0, NULL);
}

static void on_nats_disconnected(natsConnection *nc, void *closure) {
        const char *text = NULL;

        if (natsConnection_GetLastError(nc, &text) == NATS_OK || !text)
                text = "connection lost";
        post_event(closure, BUS_EVENT_DISCONNECTED, 0, text);
}

static void on_nats_closed(natsConnection *nc, void *closure) {
        post_event(closure, BUS_EVENT_CLOSED, 0, "connection closed");
}

static void on_nats_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure) {
        Bus *bus = closure;

        /* nats.c's own queue for a subscription was full (a slow consumer):
         * it dropped messages (counted in bus_dropped()), which the loop
         * must make up for. */
        if (err == NATS_SLOW_CONSUMER)
                post_lost(bus, 0);
        post_event(bus, BUS_EVENT_ASYNC_ERROR, 0, natsStatus_GetText(err));
}

static void on_nats_echo(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
        char buf[32];
        uint64_t id = 0;

        snprintf(buf, sizeof(buf), "%.*s", natsMsg_GetDataLength(msg), natsMsg_GetData(msg));
        if (sscanf(buf, "%" SCNu64, &id) == 1)
                post_event(closure, BUS_EVENT_ECHO, id, NULL);
        natsMsg_Destroy(msg);
}

/* Verified here, on a NATS thread, not on the loop: HMAC of a 64 KiB
 * event costs about 100 us. */
static BusTrust message_trust(Bus *bus, natsMsg *msg, const char *topic) {
        const char *signature = NULL;

        if (natsMsgHeader_Get(msg, BUS_SIGNATURE_HEADER, &signature) != NATS_OK)
                signature = NULL;
        if (!signature)
                return BUS_UNSIGNED;
        if (!bus->signing_key)
                return BUS_UNVERIFIABLE;
        return bus_signature_valid(bus->signing_key, bus->signing_key_size, topic, natsMsg_GetData(msg),
                                   (size_t) natsMsg_GetDataLength(msg), signature)
                ? BUS_SIGNED : BUS_FORGED;
}

/* Copies a published event for the loop; the topic is the subject's last
 * token (validated on the loop). */
static void on_nats_message(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
        Bus *bus = closure;
        const char *subject = natsMsg_GetSubject(msg);
        int size = natsMsg_GetDataLength(msg);
        BusEvent *e;

        if (size >= 0 && strlen(subject) > bus->events_prefix_len &&
            (e = malloc(sizeof(BusEvent) + (size_t) size + 1))) {
                e->type = BUS_EVENT_MESSAGE;
                e->echo_id = 0;
                snprintf(e->text, sizeof(e->text), "%s", subject + bus->events_prefix_len);
                e->trust = message_trust(bus, msg, e->text);
                e->size = (size_t) size;
                memcpy(e->data, natsMsg_GetData(msg), (size_t) size);
                e->data[size] = '\0';
                if (mailbox_post(bus->mailbox, on_event, bus, e, sizeof(BusEvent) + (size_t) size) < 0) {
                        free(e);
                        post_lost(bus, 1);
                }
        }
        natsMsg_Destroy(msg);
}

/* --- the loop side --- */

static void check_complete(Bus *bus, const char *error) {
        BusCheckCallback cb = bus->check_cb;

        if (!cb)
                return;
        bus->check_cb = NULL;
        (void) sd_event_source_set_enabled(bus->check_timer, SD_EVENT_OFF);
        cb(bus, error, bus->check_userdata);
}

static void set_connected(Bus *bus, bool connected, const char *error) {
        if (!connected && !isempty(error))
                snprintf(bus->last_error, sizeof(bus->last_error), "%s", error);
        if (bus->connected == connected)
                return;
        bus->connected = connected;
        bus->lost_at = connected ? 0 : now_usec(CLOCK_MONOTONIC);
        if (connected) {
                bus->last_error[0] = '\0';
                log_info("Connected to NATS at %s.", bus->masked_url);
        } else {
                log_warning("Lost the NATS connection to %s: %s", bus->masked_url, bus->last_error);
                check_complete(bus, bus->last_error);
        }
        if (bus->state_cb)
                bus->state_cb(bus, connected, bus->state_userdata);
}

/* All BusEvents arrive here, on the loop, in the order the threads posted. */
static void on_event(void *userdata, void *payload, bool discarded) {
        _cleanup_free_ BusEvent *e = payload;
        Bus *bus = userdata;

        if (discarded)
                return;
        switch (e->type) {
        case BUS_EVENT_CONNECTED:
                set_connected(bus, true, NULL);
                break;
        case BUS_EVENT_DISCONNECTED:
        case BUS_EVENT_CLOSED:
                set_connected(bus, false, e->text);
                break;
        case BUS_EVENT_ECHO:
                if (bus->check_cb && e->echo_id == bus->echo_id)
                        check_complete(bus, NULL);
                break;
        case BUS_EVENT_ASYNC_ERROR:
                log_warning("NATS reported an asynchronous error: %s", e->text);
                break;
        case BUS_EVENT_MESSAGE:
                bus->received[e->trust]++;
                if (bus->event_cb)
                        bus->event_cb(bus, e->text, e->data, e->size, e->trust, bus->event_userdata);
                break;
        case BUS_EVENT_LOST:
                /* Cleared first: a drop from now on posts another. */
                atomic_store(&bus->losing, false);
                log_warning("Events from NATS came faster than they were taken (%" PRIu64 " dropped "
                            "since the start); reading the missed ones from PostgreSQL.",
                            (uint64_t) atomic_load(&bus->dropped));
                if (bus->lost_cb)
                        bus->lost_cb(bus, bus->lost_userdata);
                break;
        }
}

static int on_check_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        Bus *bus = userdata;
        char buf[FORMAT_DURATION_MAX], message[128];

        snprintf(message, sizeof(message), "no round trip through the server within %s",
                 format_duration(buf, sizeof(buf), bus->check_timeout_usec));
        check_complete(bus, message);
        return 0;
}

static int make_options(Bus *bus) {
        _cleanup_(list_freep) char **servers = NULL;
        natsOptions *o = NULL;
        size_t n_servers;
        natsStatus s;

        /* natsOptions_SetURL() takes one URL: "a,b" there is one server
         * named "a,b" that never answers. The list goes to the server pool,
         * which also learns the cluster's other nodes from their INFO
         * (connect_urls) and reconnects to any of them. */
        if (parse_list(bus->url, &servers, &n_servers) < 0)
                return -ENOMEM;
        s = natsOptions_Create(&o);
        if (s != NATS_OK)
                return -ENOMEM;
        /* Retry for ever, the first connect included. A server that dies
         * resets the connection, which is noticed at once; one whose host
         * vanishes (power, cable) is noticed by pings only: every 2 s, and
         * two unanswered ones (4 to 6 s) move to another node. Until then
         * this instance's events reach the others through the database
         * (their gap checks and resyncs), more slowly. */
        if ((s = natsOptions_SetServers(o, (const char **) servers, (int) n_servers)) != NATS_OK ||
            (s = natsOptions_SetName(o, bus->client_name)) != NATS_OK ||
            (s = natsOptions_SetTimeout(o, 2000)) != NATS_OK ||
            (s = natsOptions_SetMaxReconnect(o, -1)) != NATS_OK ||
            (s = natsOptions_SetReconnectWait(o, 1000)) != NATS_OK ||
            (s = natsOptions_SetReconnectJitter(o, 500, 1000)) != NATS_OK ||
            (s = natsOptions_SetPingInterval(o, 2000)) != NATS_OK ||
            (s = natsOptions_SetMaxPingsOut(o, 2)) != NATS_OK ||
            (s = natsOptions_SetRetryOnFailedConnect(o, true, on_nats_connected, bus)) != NATS_OK ||
            (s = natsOptions_SetReconnectedCB(o, on_nats_connected, bus)) != NATS_OK ||
            (s = natsOptions_SetDisconnectedCB(o, on_nats_disconnected, bus)) != NATS_OK ||
            (s = natsOptions_SetClosedCB(o, on_nats_closed, bus)) != NATS_OK ||
            (s = natsOptions_SetErrorHandler(o, on_nats_error, bus)) != NATS_OK) {
                log_error("Failed to set NATS options: %s", natsStatus_GetText(s));
                natsOptions_Destroy(o);
                return -EINVAL;
        }
        bus->options = o;
        return 0;
}

int bus_new(sd_event *event, Mailbox *mailbox, const BusSettings *settings, Bus **ret) {
        _cleanup_(bus_freep) Bus *bus = NULL;
        uint64_t nonce = 0;
        int r;

        assert(event && mailbox && settings && ret);

        bus = calloc(1, sizeof(Bus));
        if (!bus)
                return -ENOMEM;
        bus->event = sd_event_ref(event);
        bus->mailbox = mailbox;
        bus->url = strdup(settings->url);
        bus->masked_url = mask_nats_urls(settings->url);
        bus->client_name = strdup(settings->client_name);
        if (!isempty(settings->signing_key)) {
                bus->signing_key = strdup(settings->signing_key);
                if (!bus->signing_key)
                        return -ENOMEM;
                bus->signing_key_size = strlen(settings->signing_key);
        }
        /* Unique per process, so that only this instance sees its echoes. */
        if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
                nonce = now_usec(CLOCK_REALTIME) ^ (uint64_t) getpid();
        if (asprintf(&bus->echo_subject, "%s.health.%016" PRIx64, settings->subject_prefix, nonce) < 0)
                bus->echo_subject = NULL;
        if (asprintf(&bus->events_subject, "%s.events.*", settings->subject_prefix) < 0)
                bus->events_subject = NULL;
        if (!bus->url || !bus->masked_url || !bus->client_name || !bus->echo_subject ||
            !bus->events_subject)
                return -ENOMEM;
        bus->events_prefix_len = strlen(bus->events_subject) - 1;
        snprintf(bus->last_error, sizeof(bus->last_error), "not connected yet");

        r = event_timer_new(event, &bus->check_timer, USEC_PER_MSEC, on_check_timeout, bus);
        if (r < 0)
                return r;
        r = make_options(bus);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(bus);
        return 0;
}

int bus_close(Bus *bus) {
        assert(bus);

        bool started = bus->conn || bus->echo_sub;
        natsStatus s;

        bus->check_cb = NULL;
        /* Unsubscribe before destroying: nats.c before 3.5 could crash when a
         * subscription was destroyed while its connection still delivered. */
        if (bus->echo_sub) {
                (void) natsSubscription_Unsubscribe(bus->echo_sub);
                natsSubscription_Destroy(bus->echo_sub);
                bus->echo_sub = NULL;
        }
        if (bus->events_sub) {
                (void) natsSubscription_Unsubscribe(bus->events_sub);
                natsSubscription_Destroy(bus->events_sub);
                bus->events_sub = NULL;
        }
        if (bus->conn) {
                natsConnection_Close(bus->conn);
                natsConnection_Destroy(bus->conn);
                bus->conn = NULL;
        }
        natsOptions_Destroy(bus->options);
        bus->options = NULL;
        if (!started)
                return 0;
        /* Wait for the client's threads: after this nothing posts. */
        s = nats_CloseAndWait(2000);
        if (s != NATS_OK) {
                log_error("The NATS client did not stop within 2s (%s).", natsStatus_GetText(s));
                return -ETIMEDOUT;
        }
        mailbox_cancel(bus->mailbox, bus);
        return 0;
}

Bus *bus_free(Bus *bus) {
        if (!bus)
                return NULL;
        if (bus_close(bus) < 0)
                /* Its threads may still read this memory: leave it. */
                return NULL;
        sd_event_source_disable_unref(bus->check_timer);
        sd_event_unref(bus->event);
        free(bus->url);
        free(bus->masked_url);
        free(bus->client_name);
        if (bus->signing_key)
                explicit_bzero(bus->signing_key, bus->signing_key_size);
        free(bus->signing_key);
        free(bus->echo_subject);
        free(bus->events_subject);
        return mfree(bus);
}

void bus_set_state_callback(Bus *bus, BusStateCallback cb, void *userdata) {
        assert(bus);

        bus->state_cb = cb;
        bus->state_userdata = userdata;
}

int bus_start(Bus *bus) {
        natsStatus s;

        assert(bus);

        if (bus->conn)
                return 0;
        log_info("Connecting to NATS at %s.", bus->masked_url);
        s = natsConnection_Connect(&bus->conn, bus->options);
        if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
                snprintf(bus->last_error, sizeof(bus->last_error), "%s", nats_error_text(s));
                return log_error_errno(-EIO, "Failed to set up the NATS connection: %s", bus->last_error);
        }
        if (s == NATS_NOT_YET_CONNECTED)
                snprintf(bus->last_error, sizeof(bus->last_error), "%s", "connection refused or "
                         "unreachable; retrying");
        /* Subscriptions made before the connection is up are sent once it is. */
        s = natsConnection_Subscribe(&bus->echo_sub, bus->conn, bus->echo_subject, on_nats_echo, bus);
        if (s != NATS_OK)
                return log_error_errno(-EIO, "Failed to subscribe to %s: %s", bus->echo_subject,
                                       nats_error_text(s));
        s = natsConnection_Subscribe(&bus->events_sub, bus->conn, bus->events_subject, on_nats_message, bus);
        if (s == NATS_OK)
                s = natsSubscription_SetPendingLimits(bus->events_sub, BUS_PENDING_MESSAGES, BUS_PENDING_BYTES);
        if (s != NATS_OK)
                return log_error_errno(-EIO, "Failed to subscribe to %s: %s", bus->events_subject,
                                       nats_error_text(s));
        if (natsConnection_Status(bus->conn) == NATS_CONN_STATUS_CONNECTED)
                set_connected(bus, true, NULL);
        return 0;
}

void bus_set_event_callback(Bus *bus, BusEventCallback cb, void *userdata) {
        assert(bus);

        bus->event_cb = cb;
        bus->event_userdata = userdata;
}

void bus_set_lost_callback(Bus *bus, BusLostCallback cb, void *userdata) {
        assert(bus);

        bus->lost_cb = cb;
        bus->lost_userdata = userdata;
}

static natsStatus publish_signed(Bus *bus, const char *subject, const char *topic, const char *data,
                                 size_t size) {
        char signature[BUS_SIGNATURE_MAX];
        natsMsg *msg = NULL;
        natsStatus s;

        if (bus_signature(bus->signing_key, bus->signing_key_size, topic, data, size, signature) < 0)
                return NATS_ERR;
        s = natsMsg_Create(&msg, subject, NULL, data, (int) size);
        if (s == NATS_OK)
                s = natsMsgHeader_Set(msg, BUS_SIGNATURE_HEADER, signature);
        if (s == NATS_OK)
                s = natsConnection_PublishMsg(bus->conn, msg);
        natsMsg_Destroy(msg);
        return s;
}

int bus_publish_event(Bus *bus, const char *topic, uint64_t id, const char *data, size_t size) {
        char subject[256], hint[EVENT_HINT_MAX];
        int64_t max_payload;
        natsStatus s;

        assert(bus && topic && data);

        if (!bus->conn)
                return -ENOTCONN;
        snprintf(subject, sizeof(subject), "%.*s%s", (int) bus->events_prefix_len,
                 bus->events_subject, topic);
        /* The server refuses a message over its max_payload (1 MiB by
         * default; MAX_EVENT_BYTES may be larger): the others are told the
         * event exists instead and read it from PostgreSQL. 0 while not
         * connected: the client only buffers then, and checks again. */
        max_payload = natsConnection_GetMaxPayload(bus->conn);
        if (max_payload > 0 && size > (uint64_t) max_payload) {
                if (bus->too_large++ == 0)
                        log_notice("Event %" PRIu64 " of %s is %zu bytes, over the NATS server's "
                                   "max_payload (%" PRIi64 "); sending such events' ids instead, for "
                                   "the other instances to read them from PostgreSQL.",
                                   id, topic, size, max_payload);
                size = event_hint(id, topic, hint);
                data = hint;
        }
        if (!bus->signing_key)
                s = natsConnection_Publish(bus->conn, subject, data, (int) size);
        else
                s = publish_signed(bus, subject, topic, data, size);
        return s == NATS_OK ? 0 : -EIO;
}

BusCounters bus_counters(const Bus *bus) {
        assert(bus);

        BusCounters c = { .dropped = atomic_load(&bus->dropped), .hinted = bus->too_large };

        memcpy(c.received, bus->received, sizeof(c.received));
        int64_t dropped = 0;

        if (bus->events_sub && natsSubscription_GetDropped(bus->events_sub, &dropped) == NATS_OK && dropped > 0)
                c.dropped += (uint64_t) dropped;
        return c;
}

bool bus_connected(const Bus *bus) {
        assert(bus);

        return bus->connected;
}

usec_t bus_lost_at(const Bus *bus, usec_t now) {
        assert(bus);

        /* nats.c's threads may know of the loss before its event reached
         * the loop: then it is a loss of just now. */
        if (bus->connected && bus->conn && natsConnection_Status(bus->conn) != NATS_CONN_STATUS_CONNECTED)
                return now;
        return bus->lost_at;
}

const char *bus_last_error(const Bus *bus) {
        assert(bus);

        return bus->last_error;
}

int bus_check(Bus *bus, usec_t timeout_usec, BusCheckCallback cb, void *userdata) {
        char payload[32];
        natsStatus s;
        int r;

        assert(bus);

        if (bus->check_cb)
                return -EBUSY;
        /* Publishing while disconnected only buffers the message: do not
         * mistake that for a working bus. */
        if (!bus->connected || !bus->conn ||
            natsConnection_Status(bus->conn) != NATS_CONN_STATUS_CONNECTED)
                return -ENOTCONN;

        /* Never reused: a late echo of an earlier check must not pass this one. */
        bus->echo_id++;
        snprintf(payload, sizeof(payload), "%" PRIu64, bus->echo_id);
        s = natsConnection_PublishString(bus->conn, bus->echo_subject, payload);
        if (s != NATS_OK) {
                snprintf(bus->last_error, sizeof(bus->last_error), "publish failed: %s",
                         nats_error_text(s));
                return -EIO;
        }
        bus->check_timeout_usec = timeout_usec;
        r = event_timer_arm(bus->check_timer, timeout_usec);
        if (r < 0)
                return r;
        bus->check_cb = cb;
        bus->check_userdata = userdata;
        return 0;
}
