/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <sys/random.h>

#include "hashmap.h"

#define HASHMAP_MIN_BUCKETS 16

static inline uint64_t rotl(uint64_t x, unsigned b) {
        return (x << b) | (x >> (64 - b));
}

static inline uint64_t read_le64(const uint8_t *p) {
        uint64_t v = 0;

        for (unsigned i = 0; i < 8; i++)
                v |= (uint64_t) p[i] << (8 * i);
        return v;
}

#define SIPROUND(v0, v1, v2, v3)                                                \
        do {                                                                    \
                v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);       \
                v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                          \
                v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                          \
                v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);       \
        } while (0)

/* As in the reference implementation (https://github.com/veorq/SipHash). */
uint64_t siphash24(const void *data, size_t size, const uint64_t key[2]) {
        assert(data || size == 0);

        const uint8_t *p = data, *end = p + (size - size % 8);
        uint64_t v0 = 0x736f6d6570736575ULL ^ key[0];
        uint64_t v1 = 0x646f72616e646f6dULL ^ key[1];
        uint64_t v2 = 0x6c7967656e657261ULL ^ key[0];
        uint64_t v3 = 0x7465646279746573ULL ^ key[1];
        uint64_t m, last = (uint64_t) size << 56;

        for (; p != end; p += 8) {
                m = read_le64(p);
                v3 ^= m;
                SIPROUND(v0, v1, v2, v3);
                SIPROUND(v0, v1, v2, v3);
                v0 ^= m;
        }
        for (unsigned i = 0; i < size % 8; i++)
                last |= (uint64_t) p[i] << (8 * i);
        v3 ^= last;
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        v0 ^= last;
        v2 ^= 0xff;
        for (unsigned i = 0; i < 4; i++)
                SIPROUND(v0, v1, v2, v3);
        return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t hash_key(const Hashmap *h, const char *key) {
        return siphash24(key, strlen(key), h->sip_key);
}

int hashmap_init(Hashmap *h) {
        assert(h);

        *h = (Hashmap) { 0 };
        if (getrandom(h->sip_key, sizeof(h->sip_key), 0) != (ssize_t) sizeof(h->sip_key))
                return errno > 0 ? -errno : -EIO;
        h->buckets = calloc(HASHMAP_MIN_BUCKETS, sizeof(HashmapEntry *));
        if (!h->buckets)
                return -ENOMEM;
        h->n_buckets = HASHMAP_MIN_BUCKETS;
        return 0;
}

void hashmap_done(Hashmap *h) {
        if (!h)
                return;
        h->buckets = mfree(h->buckets);
        h->n_buckets = h->n_entries = 0;
}

HashmapEntry *hashmap_get(const Hashmap *h, const char *key) {
        uint64_t hash;

        assert(h && key);

        hash = hash_key(h, key);
        for (HashmapEntry *e = h->buckets[hash & (h->n_buckets - 1)]; e; e = e->next)
                if (e->hash == hash && streq(e->key, key))
                        return e;
        return NULL;
}

/* Rehashes into twice the buckets; keeps the table as it is without memory. */
static void hashmap_grow(Hashmap *h) {
        size_t n = h->n_buckets * 2;
        HashmapEntry **buckets = calloc(n, sizeof(HashmapEntry *));

        if (!buckets)
                return;
        for (size_t i = 0; i < h->n_buckets; i++)
                for (HashmapEntry *e = h->buckets[i], *next; e; e = next) {
                        next = e->next;
                        e->next = buckets[e->hash & (n - 1)];
                        buckets[e->hash & (n - 1)] = e;
                }
        free(h->buckets);
        h->buckets = buckets;
        h->n_buckets = n;
}

int hashmap_put(Hashmap *h, HashmapEntry *e, const char *key) {
        size_t b;

        assert(h && e && key);

        if (hashmap_get(h, key))
                return -EEXIST;
        if (h->n_entries >= h->n_buckets)
                hashmap_grow(h);
        e->key = key;
        e->hash = hash_key(h, key);
        b = e->hash & (h->n_buckets - 1);
        e->next = h->buckets[b];
        h->buckets[b] = e;
        h->n_entries++;
        return 0;
}

void hashmap_remove(Hashmap *h, HashmapEntry *e) {
        HashmapEntry **p;

        assert(h && e);

        for (p = &h->buckets[e->hash & (h->n_buckets - 1)]; *p != e; p = &(*p)->next)
                assert(*p);             /* e is not in h */
        *p = e->next;
        e->next = NULL;
        assert(h->n_entries > 0);
        h->n_entries--;
}

HashmapEntry *hashmap_iterate(const Hashmap *h, HashmapIter *it) {
        HashmapEntry *e;

        assert(h && it);

        if (!it->started) {
                it->started = true;
                it->bucket = 0;
                it->next = h->n_buckets > 0 ? h->buckets[0] : NULL;
        }
        while (!it->next) {
                if (++it->bucket >= h->n_buckets)
                        return NULL;
                it->next = h->buckets[it->bucket];
        }
        e = it->next;
        it->next = e->next;
        return e;
}
