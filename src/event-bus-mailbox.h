/* SPDX-License-Identifier: MIT */
#pragma once

/* Hands work from other threads (the NATS client's) to the main loop.
 * mailbox_post() is the only function safe to call from another thread; the
 * callback runs later on the loop, in posting order. sd-event itself is not
 * thread-safe, so this queue plus an eventfd is the one crossing point.
 *
 * Bounded: messages posted with a size (the events) may hold at most
 * max_bytes together; past that mailbox_post() refuses them, and the
 * poster must make up for what it dropped another way. Messages of size 0
 * (state changes: connected, lost) are never refused; there are few. */

#include <systemd/sd-event.h>

#include "util.h"

typedef struct Mailbox Mailbox;

/* Runs on the main loop; owns 'payload'. Also runs (with 'discarded' set)
 * for messages still queued when the mailbox is freed, so payloads are
 * always released exactly once. */
typedef void (*MailboxCallback)(void *userdata, void *payload, bool discarded);

int mailbox_new(sd_event *event, size_t max_bytes, Mailbox **ret);
Mailbox *mailbox_free(Mailbox *m);
DEFINE_POINTER_CLEANUP(Mailbox, mailbox_free);

/* Delivers every queued message for 'userdata' now, marked discarded: for
 * an owner that is going away after its threads stopped posting. */
void mailbox_cancel(Mailbox *m, void *userdata);

/* Thread-safe. size counts against the bound (0: never refused). Returns
 * -ENOBUFS when the mailbox is full, -ENOMEM when the message could not be
 * queued; the caller still owns payload then. */
int mailbox_post(Mailbox *m, MailboxCallback cb, void *userdata, void *payload, size_t size);
