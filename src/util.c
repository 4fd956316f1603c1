/* SPDX-License-Identifier: MIT */
#include "util.h"

int free_and_strdup(char **dst, const char *src) {
        char *copy = NULL;

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
