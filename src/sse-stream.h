/* SPDX-License-Identifier: MIT */
#pragma once

/* Long-lived Server-Sent-Event responses. Every open stream is registered
 * in the hub, which the drain logic counts and can end all at once. An idle
 * stream costs a small struct and a suspended MHD connection: no thread, no
 * timer of its own. One hub timer sends heartbeats (which is also how dead
 * peers are found: MHD cannot notice a closed socket while suspended).
 *
 * Each stream has a bounded buffer. "Too slow" means staying behind over
 * time, never one burst: a stream may hold more than buffer_max_bytes for
 * up to slow_timeout_usec (a batch of a thousand events lands at once and
 * drains in a moment); one that stays over longer, or whose backlog
 * reaches buffer_hard_max_bytes or STREAM_FRAMES_MAX frames, is cut: what
 * it has not been sent is dropped, it gets a "reconnect" event (the client
 * resumes from its last id), and if it does not read even that within
 * slow_timeout_usec its connection is shut. Frames are shared by every
 * stream they go to, so a backlog pins memory once per event, not once per
 * stream. */

#include <systemd/sd-event.h>

#include "http-response.h"
#include "sse-frame.h"
#include "util.h"

/* Bytes queued for one client that it may stay over only for a while: at
 * least this, and room for four of the largest events. */
#define STREAM_BUFFER_MIN (256 * 1024)
#define STREAM_BUFFER_FOR(max_event_bytes) \
        ((max_event_bytes) * 4 > STREAM_BUFFER_MIN ? (max_event_bytes) * 4 : STREAM_BUFFER_MIN)
/* ... and what it is never let past: half of what all streams may hold
 * together (MAX_STREAM_BACKLOG_BYTES, the bound that protects memory), at
 * least 16 MiB (16 of the largest events). No burst of a sane size gets
 * there: 48 publishers x 150 events of 16 KB at once are 115 MB, and a
 * subscriber that keeps up was cut by a 16 MiB cap when its client
 * paused for a tenth of a second in the middle of it. */
#define STREAM_BUFFER_HARD_MIN (16 * 1024 * 1024)
#define STREAM_BUFFER_HARD_FOR(backlog_max_bytes) \
        ((backlog_max_bytes) / 2 > STREAM_BUFFER_HARD_MIN ? (backlog_max_bytes) / 2 : STREAM_BUFFER_HARD_MIN)
/* Frames queued for one client, whatever their size: the queue itself
 * (8 bytes a frame) stays bounded too, at 128 KiB. */
#define STREAM_FRAMES_MAX 16384

typedef struct StreamHub StreamHub;
typedef struct Stream Stream;

typedef struct StreamSettings {
        usec_t heartbeat_interval_usec;
        usec_t retry_hint_usec;         /* sent as "retry:" when a stream opens */
        size_t buffer_max_bytes;        /* see STREAM_BUFFER_FOR() */
        size_t buffer_hard_max_bytes;   /* see STREAM_BUFFER_HARD_FOR() */
        usec_t slow_timeout_usec;       /* STREAM_SLOW_TIMEOUT */
        size_t backlog_max_bytes;       /* MAX_STREAM_BACKLOG_BYTES: all streams together */
} StreamSettings;

/* The stream ended (client gone, finished, cut off, server stopping). The
 * stream must not be used after this returns. */
typedef void (*StreamCloseCallback)(Stream *stream, void *userdata);

/* What is queued went down to the stream's low-water mark as it was
 * handed to the connection: room for more. */
typedef void (*StreamDrainCallback)(Stream *stream, void *userdata);

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

/* The id a reconnecting client last saw: the Last-Event-ID header, else
 * ?lastEventId= (for clients that cannot set headers). 0 and *ret_present
 * false when neither is given; -EINVAL when it is not an event id. */
int stream_last_event_id(const HttpRequest *req, bool *ret_present, uint64_t *ret_id);

/* Answers req with a text/event-stream response and registers it. */
int stream_open(StreamHub *hub, HttpRequest *req, StreamCloseCallback close_cb, void *userdata,
                Stream **ret);

/* Queues a frame (takes a reference of its own). -EPIPE when the stream is
 * ending; -ENOBUFS when the client fell too far behind: then the stream
 * was just cut, with a "reconnect" event. */
int stream_send_frame(Stream *s, Frame *f);
int stream_send_event(Stream *s, const char *id, const char *event, const char *data);
size_t stream_queued_bytes(const Stream *s);
/* cb runs whenever a write leaves at most below_bytes queued. */
void stream_set_drain_callback(Stream *s, size_t below_bytes, StreamDrainCallback cb, void *userdata);

/* Ends the stream once what is queued has been sent. */
void stream_finish(Stream *s);

/* Ends the stream after a "reconnect" event telling the client why. */
void stream_end_with_reconnect(Stream *s, const char *reason);

/* Streams cut for being too slow, since the start. */
uint64_t stream_hub_cut(const StreamHub *hub);
/* Streams ended with a "reconnect" event so far (drain, cuts, refusals). */
uint64_t stream_hub_told_to_reconnect(const StreamHub *hub);

/* What all streams have queued, each frame counted once. Checked against
 * backlog_max_bytes every second: past it, the streams furthest behind
 * are cut (with "reconnect") until it holds again. */
size_t stream_hub_backlog_bytes(const StreamHub *hub);
