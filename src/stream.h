/* SPDX-License-Identifier: MIT */
#pragma once

/* Long-lived Server-Sent-Event responses. Every open stream is registered
 * in the hub, which the drain logic counts and can end all at once. An idle
 * stream costs a small struct and a suspended MHD connection: no thread, no
 * timer of its own. One hub timer sends heartbeats (which is also how dead
 * peers are found: MHD cannot notice a closed socket while suspended).
 *
 * Each stream has a bounded buffer: a client that does not read falls
 * behind, and once STREAM_BUFFER_MAX is queued it is ended with a
 * "reconnect" event instead of stalling anyone else. */

#include <systemd/sd-event.h>

#include "http.h"
#include "util.h"

/* Bytes queued for one client before it is cut off as too slow. */
#define STREAM_BUFFER_MAX (256 * 1024)

typedef struct StreamHub StreamHub;
typedef struct Stream Stream;

typedef struct StreamSettings {
        usec_t heartbeat_interval_usec;
        usec_t retry_hint_usec;         /* sent as "retry:" when a stream opens */
} StreamSettings;

/* The stream ended (client gone, finished, cut off, server stopping). The
 * stream must not be used after this returns. */
typedef void (*StreamCloseCallback)(Stream *stream, void *userdata);

int stream_hub_new(sd_event *event, const StreamSettings *settings, StreamHub **ret);
/* Streams must have ended (see stream_hub_end_all()) or their requests be
 * gone; the hub is only freed after the HTTP server. */
StreamHub *stream_hub_free(StreamHub *hub);
DEFINE_POINTER_CLEANUP(StreamHub, stream_hub_free);

void stream_hub_set_settings(StreamHub *hub, const StreamSettings *settings);
size_t stream_hub_count(const StreamHub *hub);
sd_event *stream_hub_event(StreamHub *hub);

/* Sends every stream a final "reconnect" event and ends it cleanly, so
 * clients resume elsewhere with their last event id. */
void stream_hub_end_all(StreamHub *hub, const char *reason);

/* From now on a stream that opens gets its "reconnect" event at once: a
 * draining instance must not take on new long-lived work. */
void stream_hub_refuse_new(StreamHub *hub, const char *reason);

/* Answers req with a text/event-stream response and registers it. */
int stream_open(StreamHub *hub, HttpRequest *req, StreamCloseCallback close_cb, void *userdata,
                Stream **ret);

int stream_send_event(Stream *s, const char *id, const char *event, const char *data);

/* Ends the stream once what is queued has been sent. */
void stream_finish(Stream *s);

/* Ends the stream after a "reconnect" event telling the client why. */
void stream_end_with_reconnect(Stream *s, const char *reason);
