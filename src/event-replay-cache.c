/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "event-order.h"
#include "event-replay-cache.h"

typedef struct CachedPage {
        const void *owner;
        ReplayPage page;
        size_t bytes;
        ListNode in_cache;
} CachedPage;

static void *copy_of(const void *p, size_t size) {
        void *q = malloc(size);

        return q ? memcpy(q, p, size) : NULL;
}

void replay_page_free(ReplayPage *page) {
        assert(page);

        for (size_t i = 0; i < page->n; i++)
                frame_unref(page->frames[i]);
        free(page->ids);
        free(page->frames);
        *page = (ReplayPage) { .from = page->from, .oldest = page->oldest, .last_id = page->last_id };
}

size_t replay_page_bytes(const ReplayPage *page) {
        size_t bytes = 0;

        assert(page);

        for (size_t i = 0; i < page->n; i++)
                bytes += page->frames[i]->size;
        return bytes;
}

static uint64_t page_last(const ReplayPage *page) {
        return page->n > 0 ? page->ids[page->n - 1] : page->from;
}

void replay_cache_init(ReplayCache *c, size_t max_bytes, size_t max_pages) {
        assert(c);

        *c = (ReplayCache) { .max_bytes = max_bytes, .max_pages = max_pages };
        list_init(&c->pages);
}

static void cached_page_drop(ReplayCache *c, CachedPage *cp) {
        list_remove(&cp->in_cache);
        assert(c->n_pages > 0 && c->bytes >= cp->bytes);
        c->n_pages--;
        c->bytes -= cp->bytes;
        replay_page_free(&cp->page);
        free(cp);
}

void replay_cache_done(ReplayCache *c) {
        assert(c);

        while (!list_empty(&c->pages))
                cached_page_drop(c, list_first(&c->pages, CachedPage, in_cache));
        assert(c->n_pages == 0 && c->bytes == 0);
}

const ReplayPage *replay_cache_find(ReplayCache *c, const void *owner, uint64_t cursor) {
        CachedPage *best = NULL;

        assert(c);

        LIST_FOREACH(cp, &c->pages, CachedPage, in_cache)
                if (cp->owner == owner &&
                    order_page_serves(cp->page.from, cp->page.n, page_last(&cp->page), cursor) &&
                    (!best || page_last(&cp->page) > page_last(&best->page)))
                        best = cp;
        if (!best)
                return NULL;
        list_remove(&best->in_cache);
        list_append(&c->pages, &best->in_cache);
        return &best->page;
}

static bool covered(const ReplayCache *c, const void *owner, const ReplayPage *page) {
        LIST_FOREACH(cp, &c->pages, CachedPage, in_cache)
                if (cp->owner == owner && cp->page.from <= page->from && page_last(&cp->page) >= page_last(page))
                        return true;
        return false;
}

static void evict_to(ReplayCache *c, size_t max_bytes, size_t max_pages) {
        while (!list_empty(&c->pages) && (c->bytes > max_bytes || c->n_pages > max_pages))
                cached_page_drop(c, list_first(&c->pages, CachedPage, in_cache));
}

int replay_cache_add(ReplayCache *c, const void *owner, const ReplayPage *page) {
        size_t bytes;
        CachedPage *cp;

        assert(c && page);

        if (page->n == 0 || c->max_pages == 0)
                return 0;
        bytes = replay_page_bytes(page);
        if (bytes > c->max_bytes || covered(c, owner, page))
                return 0;
        cp = calloc(1, sizeof(CachedPage));
        if (!cp)
                return -ENOMEM;
        cp->page.ids = copy_of(page->ids, page->n * sizeof(uint64_t));
        cp->page.frames = copy_of(page->frames, page->n * sizeof(Frame *));
        if (!cp->page.ids || !cp->page.frames) {
                free(cp->page.ids);
                free(cp->page.frames);
                free(cp);
                return -ENOMEM;
        }
        cp->owner = owner;
        cp->page.from = page->from;
        cp->page.oldest = page->oldest;
        cp->page.last_id = page->last_id;
        cp->page.n = page->n;
        for (size_t i = 0; i < page->n; i++)
                frame_ref(cp->page.frames[i]);
        cp->bytes = bytes;
        /* Room first, so the new page is never the one to go. */
        evict_to(c, c->max_bytes - bytes, c->max_pages - 1);
        list_append(&c->pages, &cp->in_cache);
        c->n_pages++;
        c->bytes += bytes;
        return 0;
}

void replay_cache_forget(ReplayCache *c, const void *owner) {
        assert(c);

        LIST_FOREACH_SAFE(cp, next, &c->pages, CachedPage, in_cache)
                if (cp->owner == owner)
                        cached_page_drop(c, cp);
}

void replay_cache_resize(ReplayCache *c, size_t max_bytes) {
        assert(c);

        c->max_bytes = max_bytes;
        evict_to(c, c->max_bytes, c->max_pages);
}
