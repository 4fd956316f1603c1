/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared by the libFuzzer harnesses: an invariant check that aborts (so
 * libFuzzer saves the input), and a reference Server-Sent Events parser
 * written from the WHATWG "event stream interpretation" algorithm, to read
 * back what src/sse-frame.c framed. */

#include <stdint.h>
#include <stdio.h>

#include "util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant that does not hold is a bug: say which (also where the
 * sanitizers report, which survives libFuzzer's -close_fd_mask=2), and
 * crash so that libFuzzer keeps the input. */
_Noreturn void fuzz_fail(const char *file, int line, const char *cond, const char *format, ...)
        _printf_(4, 5);

#define fuzz_check(cond, ...)                                                   \
        do {                                                                    \
                if (!(cond))                                                    \
                        fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);      \
        } while (0)

/* One dispatched event. Strings are NUL-ended copies (the framing under
 * test never carries NUL); has_* say whether the field appeared at all. */
typedef struct SseEvent {
        char *type;             /* the "event" field; NULL: none */
        char *data;             /* the data buffer, last LF removed */
        char *last_id;          /* the last event id when it was dispatched; NULL: none yet */
} SseEvent;

typedef struct SseParse {
        SseEvent *events;
        size_t n_events;
        unsigned n_comments;
        unsigned n_retry;       /* valid "retry:" fields */
        uint64_t retry_ms;
        unsigned n_unknown;     /* fields other than event, data, id, retry */
        bool trailing;          /* bytes after the last dispatched event */
} SseParse;

/* Parses a whole stream; returns 0, or -ENOMEM. */
int sse_parse(const char *stream, size_t size, SseParse *ret);
void sse_parse_done(SseParse *p);
