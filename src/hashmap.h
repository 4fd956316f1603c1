/* SPDX-License-Identifier: MIT */
#pragma once

/* The one hash table of the code base: string keys, intrusive entries
 * (an object embeds a HashmapEntry and owns its key), chained buckets
 * that double when they average more than one entry. Keys come from
 * clients (topic names), so the hash is SipHash-2-4 under a random key
 * per table: nobody can choose names that all land in one bucket.
 *
 *     typedef struct Channel { HashmapEntry by_topic; char *topic; ... } Channel;
 *     r = hashmap_put(&channels, &ch->by_topic, ch->topic);
 *     HashmapEntry *e = hashmap_get(&channels, "orders");
 *     Channel *ch = e ? container_of(e, Channel, by_topic) : NULL;
 */

#include <stdint.h>

#include "list.h"
#include "util.h"

typedef struct HashmapEntry {
        struct HashmapEntry *next;      /* in its bucket */
        uint64_t hash;
        const char *key;                /* the owner's, NUL-terminated */
} HashmapEntry;

typedef struct Hashmap {
        HashmapEntry **buckets;
        size_t n_buckets;               /* a power of two */
        size_t n_entries;
        uint64_t sip_key[2];
} Hashmap;

/* An empty table with a random key; -errno when no memory or randomness. */
int hashmap_init(Hashmap *h);
/* Frees the buckets; the entries belong to their owners. */
void hashmap_done(Hashmap *h);

HashmapEntry *hashmap_get(const Hashmap *h, const char *key);
/* Adds e under key (which must outlive its time in the table): 0, or
 * -EEXIST when the key is there already (nothing changes). A table that
 * cannot grow (no memory) keeps working with longer chains. */
int hashmap_put(Hashmap *h, HashmapEntry *e, const char *key);
/* e must be in h. */
void hashmap_remove(Hashmap *h, HashmapEntry *e);

static inline size_t hashmap_size(const Hashmap *h) {
        return h->n_entries;
}

/* Iteration in no particular order. hashmap_iterate() returns the next
 * entry (NULL at the end) and has already stepped past it, so the loop
 * may remove (and free) what it got; nothing may be added meanwhile.
 *
 *     HashmapIter it = HASHMAP_ITER_INIT;
 *     for (HashmapEntry *e; (e = hashmap_iterate(&channels, &it)); ) ... */
typedef struct HashmapIter {
        size_t bucket;
        HashmapEntry *next;
        bool started;
} HashmapIter;
#define HASHMAP_ITER_INIT ((HashmapIter) { 0 })
HashmapEntry *hashmap_iterate(const Hashmap *h, HashmapIter *it);

/* SipHash-2-4 (Aumasson and Bernstein) of data under a 128-bit key. */
uint64_t siphash24(const void *data, size_t size, const uint64_t key[2]);
