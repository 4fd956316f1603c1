/* SPDX-License-Identifier: MIT */
#pragma once

/* Replay pages kept once they have been read, so that streams catching up
 * on the same stretch of a topic read it from memory instead of each
 * asking PostgreSQL for it. A thousand streams replaying one topic from
 * the start made the database's backends take a third of batond's CPU on
 * a two-core host, and live delivery's p99 grew fourfold while they did.
 *
 * A page read after id `from` holds every event of its topic in (from,
 * last]: ids are per topic and commit in order (baton_publish() locks the
 * topic's row), so no event can later appear inside that range. A page
 * therefore stays true once read, and the cache needs no invalidation;
 * only the least recently used pages go when it is full. An empty page
 * (nothing after `from` yet) would not stay true and is never kept.
 *
 * Pure bookkeeping: no loop, no I/O. Frames are shared by reference, so a
 * page served from here costs each stream only its queue entries. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"
#include "sse-frame.h"

/* A replay page's events as frames, built once for every stream it serves. */
typedef struct ReplayPage {
        uint64_t from;                  /* read after this id */
        uint64_t oldest, last_id;       /* the topic's then (store_page_bounds()) */
        size_t n;
        uint64_t *ids;                  /* ascending */
        Frame **frames;
} ReplayPage;

void replay_page_free(ReplayPage *page);
/* The bytes of the page's frames. */
size_t replay_page_bytes(const ReplayPage *page);

typedef struct ReplayCache {
        ListNode pages;                 /* least recently used first */
        size_t n_pages;
        size_t bytes;                   /* of their frames */
        size_t max_bytes;
        size_t max_pages;               /* bounds each lookup's scan */
} ReplayCache;

void replay_cache_init(ReplayCache *c, size_t max_bytes, size_t max_pages);
void replay_cache_done(ReplayCache *c);

/* A page of owner's (a channel: one topic) that holds the event after
 * cursor, the one reaching furthest if several do; NULL if none does. A
 * page found becomes the most recently used. */
const ReplayPage *replay_cache_find(ReplayCache *c, const void *owner, uint64_t cursor);

/* Keeps page for owner, sharing its frames, and lets the least recently
 * used pages go until the cache is within its bounds again. Not kept: an
 * empty page, one larger than the whole cache, and one that a kept page
 * of owner's already covers. */
int replay_cache_add(ReplayCache *c, const void *owner, const ReplayPage *page);

/* owner's pages go (its channel is freed). */
void replay_cache_forget(ReplayCache *c, const void *owner);

/* Lets the least recently used pages go until the cache holds at most
 * max_bytes (its settings changed). */
void replay_cache_resize(ReplayCache *c, size_t max_bytes);
