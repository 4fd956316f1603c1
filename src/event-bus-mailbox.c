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
        size_t size;
        ListNode queue;
} Message;

struct Mailbox {
        sd_event_source *source;
        int eventfd;
        pthread_mutex_t lock;           /* protects queue and bytes */
        ListNode queue;
        size_t bytes;                   /* the sizes of the messages in queue */
        size_t max_bytes;
};

/* Moves every message into 'to' (an empty list of the caller's). */
static void take_all(Mailbox *m, ListNode *to) {
        pthread_mutex_lock(&m->lock);
        list_splice(to, &m->queue);
        m->bytes = 0;
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

int mailbox_new(sd_event *event, size_t max_bytes, Mailbox **ret) {
        _cleanup_(mailbox_freep) Mailbox *m = NULL;
        int r;

        assert(event && ret);

        m = calloc(1, sizeof(Mailbox));
        if (!m)
                return -ENOMEM;
        list_init(&m->queue);
        m->max_bytes = max_bytes;
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
                        m->bytes -= msg->size;
                        list_remove(&msg->queue);
                        list_append(&cancelled, &msg->queue);
                }
        pthread_mutex_unlock(&m->lock);
        deliver(&cancelled, true);
}

int mailbox_post(Mailbox *m, MailboxCallback cb, void *userdata, void *payload, size_t size) {
        static const uint64_t one = 1;
        Message *msg;
        bool full;

        assert(m);

        msg = malloc(sizeof(Message));
        if (!msg)
                return -ENOMEM;
        *msg = (Message) { .cb = cb, .userdata = userdata, .payload = payload, .size = size };

        pthread_mutex_lock(&m->lock);
        full = size > 0 && m->bytes + size > m->max_bytes;
        if (!full) {
                list_append(&m->queue, &msg->queue);
                m->bytes += size;
        }
        pthread_mutex_unlock(&m->lock);
        if (full) {
                free(msg);
                return -ENOBUFS;
        }

        /* Cannot fail short of a counter overflow (EAGAIN): then a wakeup is
         * already pending anyway. */
        (void) !write(m->eventfd, &one, sizeof(one));
        return 0;
}
