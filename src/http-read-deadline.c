/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <sys/socket.h>

#include "http-read-deadline.h"
#include "list.h"
#include "log.h"
#include "loop-util.h"

struct ReadDeadlines {
        sd_event *event;
        sd_event_source *timer;         /* fires at the head's due time */
        usec_t timeout;
        ListNode running;               /* running deadlines, oldest first */
        uint64_t expired;
};

struct ReadDeadline {
        ReadDeadlines *owner;
        int fd;
        usec_t due;
        ListNode running;               /* in the owner's, while it runs */
};

static ReadDeadline *oldest(ReadDeadlines *d) {
        return list_first(&d->running, ReadDeadline, running);
}

/* Arms the timer for the oldest running deadline, or leaves it off. */
static void arm_for_head(ReadDeadlines *d) {
        ReadDeadline *head = oldest(d);
        usec_t now;

        if (!head || event_finished(d->event))
                return;
        now = now_usec(CLOCK_MONOTONIC);
        if (event_timer_arm(d->timer, head->due > now ? head->due - now : 0) < 0)
                log_warning("Cannot arm the request read deadline timer; slow clients are not cut.");
}

static int on_timer(sd_event_source *source, usec_t usec, void *userdata) {
        ReadDeadlines *d = userdata;
        usec_t now = now_usec(CLOCK_MONOTONIC);

        for (ReadDeadline *x; (x = oldest(d)) && x->due <= now; ) {
                list_remove(&x->running);
                d->expired++;
                /* libmicrohttpd sees the end of the stream on its next read
                 * and closes the connection itself: its state stays its own. */
                if (shutdown(x->fd, SHUT_RDWR) < 0)
                        log_debug_errno(errno, "Cannot shut down a slow connection: %m");
                log_debug("Cut a connection that did not send a whole request within %.0f s.",
                          (double) d->timeout / (double) USEC_PER_SEC);
        }
        arm_for_head(d);
        return 0;
}

int read_deadlines_new(sd_event *event, usec_t timeout, ReadDeadlines **ret) {
        _cleanup_(read_deadlines_freep) ReadDeadlines *d = calloc(1, sizeof(ReadDeadlines));
        int r;

        assert(event && ret);

        if (!d)
                return -ENOMEM;
        list_init(&d->running);
        d->event = sd_event_ref(event);
        d->timeout = timeout;
        /* Cutting a slow client a little late costs nothing: a tenth of the
         * timeout, at most a tenth of a second. */
        r = event_timer_new(event, &d->timer, timeout / 10 < 100 * USEC_PER_MSEC ? timeout / 10 + 1 : 100 * USEC_PER_MSEC,
                            on_timer, d);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(d);
        return 0;
}

ReadDeadlines *read_deadlines_free(ReadDeadlines *d) {
        if (!d)
                return NULL;
        LIST_FOREACH_SAFE(x, next, &d->running, ReadDeadline, running)
                list_remove(&x->running);       /* a connection left behind: forget it */
        sd_event_source_disable_unref(d->timer);
        sd_event_unref(d->event);
        return mfree(d);
}

uint64_t read_deadlines_expired(const ReadDeadlines *d) {
        assert(d);

        return d->expired;
}

ReadDeadline *read_deadline_new(ReadDeadlines *d, int fd) {
        ReadDeadline *x = calloc(1, sizeof(ReadDeadline));

        assert(d);

        if (!x)
                return NULL;
        x->owner = d;
        x->fd = fd;
        read_deadline_restart(x);
        return x;
}

void read_deadline_free(ReadDeadline *x) {
        if (!x)
                return;
        list_remove(&x->running);
        free(x);
}

void read_deadline_stop(ReadDeadline *x) {
        if (x)
                list_remove(&x->running);
}

void read_deadline_restart(ReadDeadline *x) {
        ReadDeadlines *d;
        bool was_empty;

        if (!x)
                return;
        d = x->owner;
        list_remove(&x->running);
        was_empty = list_empty(&d->running);
        x->due = now_usec(CLOCK_MONOTONIC) + d->timeout;
        list_append(&d->running, &x->running);
        /* Later deadlines go behind the head: its timer stays right. */
        if (was_empty)
                arm_for_head(d);
}
