/* SPDX-License-Identifier: MIT */
#include <assert.h>

#include "util.h"

int free_and_strdup(char **dst, const char *src) {
        char *copy = NULL;

        assert(dst);

        if (src) {
                copy = strdup(src);
                if (!copy)
                        return -ENOMEM;
        }
        free(*dst);
        *dst = copy;
        return 0;
}

usec_t now_usec(clockid_t clock) {
        struct timespec ts;

        /* clock_gettime() only fails for an invalid clock id: a programming error. */
        if (clock_gettime(clock, &ts) < 0)
                return 0;
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

bool streq_constant_time(const char *given, const char *secret) {
        assert(given && secret);

        size_t given_len = strlen(given), secret_len = strlen(secret);
        unsigned char diff = given_len != secret_len;

        /* Walk the secret's length whatever 'given' is; index 'given' modulo its
         * length so a short guess never reads out of bounds nor exits early. */
        for (size_t i = 0; i < secret_len; i++) {
                unsigned char g = given_len > 0 ? (unsigned char) given[i % given_len] : 0;
                diff |= g ^ (unsigned char) secret[i];
        }
        return diff == 0 && secret_len > 0;
}

/* The length of the well-formed UTF-8 sequence at s (RFC 3629, table 3-7
 * of Unicode), or 0. */
static size_t utf8_sequence_length(const unsigned char *s) {
        unsigned char c = s[0];
        unsigned char lo = 0x80, hi = 0xbf;
        size_t n;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                n = 2;
        else if (c >= 0xe0 && c <= 0xef) {
                n = 3;
                if (c == 0xe0)
                        lo = 0xa0;      /* overlong */
                else if (c == 0xed)
                        hi = 0x9f;      /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
                n = 4;
                if (c == 0xf0)
                        lo = 0x90;      /* overlong */
                else if (c == 0xf4)
                        hi = 0x8f;      /* past U+10FFFF */
        } else
                return 0;               /* 0x80-0xc1 (0xc0, 0xc1: overlong), 0xf5-0xff */
        if (s[1] < lo || s[1] > hi)
                return 0;               /* also the NUL that ends a cut-short sequence */
        for (size_t i = 2; i < n; i++)
                if (s[i] < 0x80 || s[i] > 0xbf)
                        return 0;
        return n;
}

size_t utf8_scrub(char *s) {
        assert(s);

        unsigned char *p = (unsigned char *) s;
        size_t replaced = 0;

        while (*p) {
                size_t n = utf8_sequence_length(p);
                if (n == 0) {
                        *p++ = '?';
                        replaced++;
                } else
                        p += n;
        }
        return replaced;
}
