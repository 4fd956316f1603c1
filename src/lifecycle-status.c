/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#include "lifecycle-status.h"

static const char *plural(uint64_t n, const char *one, const char *many) {
        return n == 1 ? one : many;
}

void status_format_running(const RunningStatus *s, char *buf, size_t size) {
        assert(s && buf);

        const HttpCounters *c = &s->counters;
        const char *color_sep = isempty(s->color) ? "" : ", colour ";

        /* The counts before a reason: a long error is what gets cut. */
        snprintf(buf, size, "%s%s%s%s: %" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64
                 " served%s%s",
                 s->ready ? "Ready on " : "Not ready", s->ready ? s->listen : "",
                 color_sep, strempty(s->color),
                 c->active_requests, plural(c->active_requests, "request", "requests"),
                 c->active_streams, plural(c->active_streams, "stream", "streams"),
                 c->active_connections, plural(c->active_connections, "connection", "connections"),
                 c->requests_total,
                 s->ready ? "" : "; ", s->ready ? "" : strempty(s->not_ready_reason));
}
