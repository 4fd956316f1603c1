/* SPDX-License-Identifier: MIT */
#include <assert.h>

#include "loop-util.h"

/* Hands out a just-added source switched off, or drops it. */
static int take_disabled(sd_event_source *s, sd_event_source **ret) {
        int r = sd_event_source_set_enabled(s, SD_EVENT_OFF);

        if (r < 0) {
                sd_event_source_unref(s);
                return r;
        }
        *ret = s;
        return 0;
}

int event_timer_new(sd_event *event, sd_event_source **ret, usec_t accuracy_usec,
                    sd_event_time_handler_t callback, void *userdata) {
        assert(event && ret);

        sd_event_source *s = NULL;
        int r = sd_event_add_time_relative(event, &s, CLOCK_MONOTONIC, 0, accuracy_usec, callback, userdata);

        return r < 0 ? r : take_disabled(s, ret);
}

int event_defer_new(sd_event *event, sd_event_source **ret, sd_event_handler_t callback,
                    void *userdata) {
        assert(event && ret);

        sd_event_source *s = NULL;
        int r = sd_event_add_defer(event, &s, callback, userdata);

        return r < 0 ? r : take_disabled(s, ret);
}

int event_timer_arm(sd_event_source *source, usec_t usec) {
        assert(source);

        int r = sd_event_source_set_time_relative(source, usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
}

bool event_finished(sd_event *event) {
        assert(event);

        int state = sd_event_get_state(event);
        return state == SD_EVENT_EXITING || state == SD_EVENT_FINISHED || state < 0;
}
