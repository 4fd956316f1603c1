/* SPDX-License-Identifier: MIT */
#pragma once

/* Small helpers shared by every module: time units, cleanup attributes and
 * string predicates. Nothing here allocates behind the caller's back. */

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Every build keeps its assert()s, as systemd's do: an impossible state
 * stops the process (systemd restarts it) rather than going on hidden, and
 * the fuzzers and sanitizer runs find what it catches. Measured: the
 * asserts cost nothing visible in the benchmarks (README, Benchmarks). */
#ifdef NDEBUG
#error "batond is built with its assertions on; do not define NDEBUG"
#endif

/* The error (negated) for a configuration that cannot work: main() exits
 * 78 for it, and 1 for any other -errno. An errno of its own, so that a
 * library's EINVAL deep down never reads as a configuration error; its
 * strerror() text is never shown (the failure is logged with what is wrong). */
#define ECONFIG EBADRQC

typedef uint64_t usec_t;

#define USEC_INFINITY ((usec_t) UINT64_MAX)
#define USEC_PER_SEC  ((usec_t) 1000000ULL)
#define USEC_PER_MSEC ((usec_t) 1000ULL)
#define MSEC_PER_SEC  1000ULL

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

#define _cleanup_(f)    __attribute__((cleanup(f)))
#define _printf_(a, b)  __attribute__((format(printf, a, b)))
#define _unused_        __attribute__((unused))
#define _warn_unused_   __attribute__((warn_unused_result))
#define _fallthrough_   __attribute__((fallthrough))

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Closes a descriptor on scope exit; keeps errno so error paths stay honest. */
static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                (void) close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

/* For types whose destructor accepts NULL: declares func##p for _cleanup_.
 * The trailing declaration swallows the ';' written after each use. */
#define DEFINE_POINTER_CLEANUP(type, func)              \
        static inline void func##p(type **p) {          \
                if (*p)                                 \
                        func(*p);                       \
        }                                               \
        struct func##_cleanup_semicolon_swallower

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return streq(a, b);
}

static inline bool isempty(const char *s) {
        return !s || !*s;
}

static inline const char *strempty(const char *s) {
        return s ? s : "";
}

/* Returns the old pointer's replacement: lets "p = mfree(p)" read as one step. */
static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

/* Swaps *dst for a copy of src; returns -ENOMEM and leaves *dst alone on failure. */
int free_and_strdup(char **dst, const char *src);

/* Returns src's address and zeroes it, for handing ownership to a caller. */
#define TAKE_PTR(p) take_ptr_impl((void **) &(p))
static inline void *take_ptr_impl(void **p) {
        void *v = *p;
        *p = NULL;
        return v;
}

static inline int take_fd(int *fd) {
        int v = *fd;
        *fd = -1;
        return v;
}

usec_t now_usec(clockid_t clock);

/* Milliseconds as a double, for durations in JSON and logs. */
static inline double usec_to_msec(usec_t u) {
        return (double) u / (double) USEC_PER_MSEC;
}

/* Compares two strings of possibly different lengths in time that depends
 * only on the length of 'secret', so tokens cannot be guessed byte by byte. */
bool streq_constant_time(const char *given, const char *secret);

/* Replaces, in place, every byte of s that is not part of a well-formed
 * UTF-8 sequence (stray continuation bytes, overlong forms, surrogates,
 * code points past U+10FFFF, a sequence cut short) with '?'. Error
 * messages echo client input (a path) into JSON, which must be UTF-8:
 * jansson refuses anything else. Returns the number of bytes replaced. */
size_t utf8_scrub(char *s);
