/* SPDX-License-Identifier: MIT */
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "log.h"
#include "event-bus-mailbox.h"

typedef struct Message {
        MailboxCallback cb;
        void *userdata;
        void *payload;
        struct Message *next;
} Message;

struct Mailbox {
        sd_event_source *source;
        int eventfd;
        pthread_mutex_t lock;           /* protects head and tail */
        Message *head, *tail;
};

static Message *take_all(Mailbox *m) {
        Message *list;

        pthread_mutex_lock(&m->lock);
        list = m->head;
        m->head = m->tail = NULL;
        pthread_mutex_unlock(&m->lock);
        return list;
}

static void deliver(Message *list, bool discarded) {
        while (list) {
                Message *next = list->next;
                list->cb(list->userdata, list->payload, discarded);
                free(list);
                list = next;
        }
}

static int on_eventfd(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Mailbox *m = userdata;
        uint64_t count;

        if (read(m->eventfd, &count, sizeof(count)) < 0 && errno != EAGAIN)
                log_debug_errno(errno, "Failed to read mailbox eventfd, ignoring: %s", strerror(abs(errno)));
        deliver(take_all(m), false);
        return 0;
}

int mailbox_new(sd_event *event, Mailbox **ret) {
        _cleanup_(mailbox_freep) Mailbox *m = NULL;
        int r;

        m = calloc(1, sizeof(Mailbox));
        if (!m)
                return -ENOMEM;
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
        if (!m)
                return NULL;
        sd_event_source_disable_unref(m->source);
        deliver(take_all(m), true);
        if (m->eventfd >= 0)
                close(m->eventfd);
        pthread_mutex_destroy(&m->lock);
        return mfree(m);
}

void mailbox_cancel(Mailbox *m, void *userdata) {
        Message *cancelled = NULL, **tail = &cancelled, *keep = NULL, **keep_tail = &keep;

        pthread_mutex_lock(&m->lock);
        for (Message *msg = m->head, *next; msg; msg = next) {
                next = msg->next;
                msg->next = NULL;
                if (msg->userdata == userdata) {
                        *tail = msg;
                        tail = &msg->next;
                } else {
                        *keep_tail = msg;
                        keep_tail = &msg->next;
                }
        }
        m->head = keep;
        m->tail = NULL;
        for (Message *msg = keep; msg; msg = msg->next)
                m->tail = msg;
        pthread_mutex_unlock(&m->lock);
        deliver(cancelled, true);
}

int mailbox_post(Mailbox *m, MailboxCallback cb, void *userdata, void *payload) {
        static const uint64_t one = 1;
        Message *msg = malloc(sizeof(Message));

        if (!msg)
                return -ENOMEM;
        *msg = (Message) { .cb = cb, .userdata = userdata, .payload = payload };

        pthread_mutex_lock(&m->lock);
        if (m->tail)
                m->tail->next = msg;
        else
                m->head = msg;
        m->tail = msg;
        pthread_mutex_unlock(&m->lock);

        /* Cannot fail short of a counter overflow (EAGAIN): then a wakeup is
         * already pending anyway. */
        (void) !write(m->eventfd, &one, sizeof(one));
        return 0;
}
