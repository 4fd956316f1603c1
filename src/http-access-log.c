/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#include "http-access-log.h"
#include "loop-util.h"
#include "log.h"

#define PATH_SHOWN_MAX 200

struct AccessLog {
        bool enabled;
        sd_event_source *window_timer;  /* ends the current second of error records */
        bool window_open;
        unsigned errors_in_window;
        uint64_t suppressed;
};

static int on_window_end(sd_event_source *source, uint64_t usec, void *userdata) {
        AccessLog *a = userdata;

        a->window_open = false;
        a->errors_in_window = 0;
        if (a->suppressed > 0) {
                log_warning("%" PRIu64 " more request(s) answered with a server error in the last "
                            "second; their records were held back.", a->suppressed);
                a->suppressed = 0;
        }
        return 0;
}

int access_log_new(sd_event *event, AccessLog **ret) {
        _cleanup_(access_log_freep) AccessLog *a = calloc(1, sizeof(AccessLog));
        int r;

        assert(event && ret);

        if (!a)
                return -ENOMEM;
        r = event_timer_new(event, &a->window_timer, 10 * USEC_PER_MSEC, on_window_end, a);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(a);
        return 0;
}

AccessLog *access_log_free(AccessLog *a) {
        if (!a)
                return NULL;
        sd_event_source_disable_unref(a->window_timer);
        return mfree(a);
}

void access_log_set_enabled(AccessLog *a, bool enabled) {
        assert(a);

        a->enabled = enabled;
}

void access_log_format_path(const char *path, char *buf, size_t size) {
        size_t n = 0;

        assert(path && buf);

        for (const unsigned char *p = (const unsigned char *) path; *p && n + 5 < size; p++) {
                if ((size_t) (p - (const unsigned char *) path) >= PATH_SHOWN_MAX) {
                        n += (size_t) snprintf(buf + n, size - n, "...");
                        break;
                }
                if (*p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\')
                        n += (size_t) snprintf(buf + n, size - n, "\\x%02x", *p);
                else
                        buf[n++] = (char) *p;
        }
        buf[n < size ? n : size - 1] = '\0';
}

/* True when this error record may be written now. */
static bool error_admitted(AccessLog *a) {
        if (!a->window_open) {
                a->window_open = true;
                a->errors_in_window = 0;
                if (event_timer_arm(a->window_timer, USEC_PER_SEC) < 0)
                        return true;    /* no window, no limit */
        }
        if (a->errors_in_window >= ACCESS_LOG_ERROR_BURST) {
                a->suppressed++;
                return false;
        }
        a->errors_in_window++;
        return true;
}

void access_log_request(const HttpRequestRecord *r, void *userdata) {
        assert(r);

        AccessLog *a = userdata;
        bool error = r->status >= 500 && !(r->route_flags & ROUTE_QUIET);
        int level = error ? LOG_WARNING : LOG_INFO;
        char path[PATH_SHOWN_MAX * 4 + 8], status[16], status_field[32], duration[32];
        char id[HTTP_REQUEST_ID_MAX + 1], id_field[HTTP_REQUEST_ID_MAX + 32], route_field[96];
        char method_field[32];
        const char *request_id;

        if (!error && !a->enabled)
                return;
        if (log_get_max_level() < level)
                return;
        if (error && !error_admitted(a))
                return;

        request_id = http_request_id(r->request, id);
        access_log_format_path(r->path, path, sizeof(path));
        if (r->status > 0)
                snprintf(status, sizeof(status), "%u", r->status);
        else
                snprintf(status, sizeof(status), "-");
        snprintf(status_field, sizeof(status_field), "BATON_STATUS=%s", status);
        snprintf(duration, sizeof(duration), "BATON_DURATION_MS=%.3f", usec_to_msec(r->duration_usec));
        snprintf(id_field, sizeof(id_field), "BATON_REQUEST_ID=%s", request_id);
        snprintf(route_field, sizeof(route_field), "BATON_ROUTE=%s", r->route);
        snprintf(method_field, sizeof(method_field), "BATON_METHOD=%s", r->method);
        const char *const fields[] = {
                "BATON_EVENT=http_request", id_field, route_field, method_field, status_field,
                duration, NULL,
        };
        log_full(level, 0, fields, "%s %s %s %.1fms%s (request %s)", r->method, path, status,
                 usec_to_msec(r->duration_usec), r->stream ? " to stream start" : "", request_id);
}
