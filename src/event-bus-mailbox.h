/* SPDX-License-Identifier: MIT */
#pragma once

/* Hands work from other threads (the NATS client's) to the main loop.
 * mailbox_post() is the only function safe to call from another thread; the
 * callback runs later on the loop, in posting order. sd-event itself is not
 * thread-safe, so this queue plus an eventfd is the one crossing point. */

#include <systemd/sd-event.h>

#include "util.h"

typedef struct Mailbox Mailbox;

/* Runs on the main loop; owns 'payload'. Also runs (with 'discarded' set)
 * for messages still queued when the mailbox is freed, so payloads are
 * always released exactly once. */
typedef void (*MailboxCallback)(void *userdata, void *payload, bool discarded);

int mailbox_new(sd_event *event, Mailbox **ret);
Mailbox *mailbox_free(Mailbox *m);
DEFINE_POINTER_CLEANUP(Mailbox, mailbox_free);

/* Delivers every queued message for 'userdata' now, marked discarded: for
 * an owner that is going away after its threads stopped posting. */
void mailbox_cancel(Mailbox *m, void *userdata);

/* Thread-safe. Returns -ENOMEM when the message could not be queued (the
 * caller still owns payload then). */
int mailbox_post(Mailbox *m, MailboxCallback cb, void *userdata, void *payload);
