/* SPDX-License-Identifier: MIT */
#pragma once

/* sd-event timer idioms used across modules. Timers here are monotonic and
 * one-shot: whoever wants another tick re-arms. */

#include <systemd/sd-event.h>

#include "util.h"

/* Creates a timer that does not fire until event_timer_arm(). Accuracy 0
 * would mean sd-event's default of 250 ms: pass what the timer needs. */
int event_timer_new(sd_event *event, sd_event_source **ret, usec_t accuracy_usec,
                    sd_event_time_handler_t callback, void *userdata);

/* Creates a defer source that does not run until enabled SD_EVENT_ONESHOT:
 * "do this once, soon, from the loop", however often it is asked for. */
int event_defer_new(sd_event *event, sd_event_source **ret, sd_event_handler_t callback,
                    void *userdata);

/* (Re)arms the timer to fire once, usec from now. */
int event_timer_arm(sd_event_source *source, usec_t usec);

/* True once sd_event_exit() ended the loop: sources can no longer be armed,
 * so teardown code should not try. */
bool event_finished(sd_event *event);
