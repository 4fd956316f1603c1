/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "event-bus-mailbox.h"
#include "list.h"
#include "log.h"

typedef struct Message {
        MailboxCallback cb;
        void *userdata;
        void *payload;
        ListNode queue;
} Message;

struct Mailbox {
        sd_event_source *source;
        int eventfd;
        pthread_mutex_t lock;           /* protects queue */
        ListNode queue;
};

/* Moves every message into 'to' (an empty list of the caller's). */
static void take_all(Mailbox *m, ListNode *to) {
        pthread_mutex_lock(&m->lock);
        list_splice(to, &m->queue);
        pthread_mutex_unlock(&m->lock);
}

static void deliver(ListNode *messages, bool discarded) {
        LIST_FOREACH_SAFE(msg, next, messages, Message, queue) {
                list_remove(&msg->queue);
                msg->cb(msg->userdata, msg->payload, discarded);
                free(msg);
        }
}

static int on_eventfd(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Mailbox *m = userdata;
        ListNode messages;
        uint64_t count;

        if (read(m->eventfd, &count, sizeof(count)) < 0 && errno != EAGAIN)
                log_debug_errno(errno, "Failed to read mailbox eventfd, ignoring: %m");
        list_init(&messages);
        take_all(m, &messages);
        deliver(&messages, false);
        return 0;
}

int mailbox_new(sd_event *event, Mailbox **ret) {
        _cleanup_(mailbox_freep) Mailbox *m = NULL;
        int r;

        assert(event && ret);

        m = calloc(1, sizeof(Mailbox));
        if (!m)
                return -ENOMEM;
        list_init(&m->queue);
        m->eventfd = -1;
        r = pthread_mutex_init(&m->lock, NULL);
        if (r != 0) {
                free(TAKE_PTR(m));
                return -r;
        }
        m->eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (m->eventfd < 0)
                return -errno;
        r = sd_event_add_io(event, &m->source, m->eventfd, EPOLLIN, on_eventfd, m);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

Mailbox *mailbox_free(Mailbox *m) {
        ListNode messages;

        if (!m)
                return NULL;
        sd_event_source_disable_unref(m->source);
        list_init(&messages);
        take_all(m, &messages);
        deliver(&messages, true);
        if (m->eventfd >= 0)
                close(m->eventfd);
        pthread_mutex_destroy(&m->lock);
        return mfree(m);
}

void mailbox_cancel(Mailbox *m, void *userdata) {
        ListNode cancelled;

        assert(m);

        list_init(&cancelled);
        pthread_mutex_lock(&m->lock);
        LIST_FOREACH_SAFE(msg, next, &m->queue, Message, queue)
                if (msg->userdata == userdata) {
                        list_remove(&msg->queue);
                        list_append(&cancelled, &msg->queue);
                }
        pthread_mutex_unlock(&m->lock);
        deliver(&cancelled, true);
}

int mailbox_post(Mailbox *m, MailboxCallback cb, void *userdata, void *payload) {
        static const uint64_t one = 1;
        Message *msg = malloc(sizeof(Message));

        assert(m);

        if (!msg)
                return -ENOMEM;
        *msg = (Message) { .cb = cb, .userdata = userdata, .payload = payload };

        pthread_mutex_lock(&m->lock);
        list_append(&m->queue, &msg->queue);
        pthread_mutex_unlock(&m->lock);

        /* Cannot fail short of a counter overflow (EAGAIN): then a wakeup is
         * already pending anyway. */
        (void) !write(m->eventfd, &one, sizeof(one));
        return 0;
}
