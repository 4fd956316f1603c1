/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "bus-signature.h"

/* The message signed: a version, the topic and the data, separated so
 * that no (topic, data) pair signs like another. */
static int mac(const char *key, size_t key_size, const char *topic, const char *data, size_t size,
               unsigned char out[static 32]) {
        static const char version[] = "baton-bus-v1\n";
        size_t topic_size = strlen(topic), n = sizeof(version) - 1 + topic_size + 1 + size;
        unsigned int out_size = 0;
        unsigned char *message;
        bool ok;

        message = malloc(n ? n : 1);
        if (!message)
                return -ENOMEM;
        memcpy(message, version, sizeof(version) - 1);
        memcpy(message + sizeof(version) - 1, topic, topic_size);
        message[sizeof(version) - 1 + topic_size] = '\n';
        memcpy(message + sizeof(version) + topic_size, data, size);
        ok = HMAC(EVP_sha256(), key, (int) key_size, message, n, out, &out_size) && out_size == 32;
        free(message);
        return ok ? 0 : -EIO;
}

int bus_signature(const char *key, size_t key_size, const char *topic, const char *data, size_t size,
                  char out[static BUS_SIGNATURE_MAX]) {
        unsigned char digest[32];
        int r;

        assert(key && topic && (data || size == 0));

        r = mac(key, key_size, topic, data, size, digest);
        if (r < 0)
                return r;
        memcpy(out, "v1=", 3);
        for (size_t i = 0; i < sizeof(digest); i++)
                snprintf(out + 3 + 2 * i, 3, "%02x", digest[i]);
        return 0;
}

bool bus_signature_valid(const char *key, size_t key_size, const char *topic, const char *data, size_t size,
                         const char *signature) {
        char expected[BUS_SIGNATURE_MAX];

        assert(key && topic && (data || size == 0));

        if (!signature || strlen(signature) != BUS_SIGNATURE_MAX - 1)
                return false;
        if (bus_signature(key, key_size, topic, data, size, expected) < 0)
                return false;
        return CRYPTO_memcmp(expected, signature, BUS_SIGNATURE_MAX - 1) == 0;
}
