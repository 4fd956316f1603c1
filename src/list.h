/* SPDX-License-Identifier: MIT */
#pragma once

/* The one list of the code base: intrusive, circular and doubly linked, as
 * the Linux kernel's list.h (and libuv's and nginx's queues). An object
 * that can be on a list embeds a ListNode; the list itself is a ListNode
 * too (the head), which is never an element. Every operation is O(1),
 * nothing allocates, and an object can be on several lists through
 * several nodes.
 *
 * A node that is on no list points at itself (list_node_init(), and after
 * list_remove()) or is all zero (calloc()), so list_linked() says whether
 * it is on one and removing it twice is harmless.
 *
 *     typedef struct Query { ListNode queue; ... } Query;
 *     ListNode pending;
 *     list_init(&pending);
 *     list_append(&pending, &q->queue);
 *     LIST_FOREACH_SAFE(q, next, &pending, Query, queue)
 *             if (done(q))
 *                     list_remove(&q->queue);
 */

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct ListNode {
        struct ListNode *next, *prev;
} ListNode;

/* The object that embeds 'node' as its 'member'. */
#define container_of(node, type, member) ((type *) ((char *) (node) - offsetof(type, member)))

static inline void list_init(ListNode *head) {
        head->next = head->prev = head;
}

/* The same, for a node: on no list. */
static inline void list_node_init(ListNode *node) {
        list_init(node);
}

static inline bool list_empty(const ListNode *head) {
        return head->next == head;
}

static inline bool list_linked(const ListNode *node) {
        return node->next && node->next != node;
}

static inline void list_insert_between(ListNode *node, ListNode *prev, ListNode *next) {
        assert(!list_linked(node));
        node->prev = prev;
        node->next = next;
        prev->next = node;
        next->prev = node;
}

static inline void list_prepend(ListNode *head, ListNode *node) {
        list_insert_between(node, head, head->next);
}

static inline void list_append(ListNode *head, ListNode *node) {
        list_insert_between(node, head->prev, head);
}

/* Off whatever list it is on (if any); it is then on none. */
static inline void list_remove(ListNode *node) {
        if (!list_linked(node)) {
                list_node_init(node);
                return;
        }
        node->prev->next = node->next;
        node->next->prev = node->prev;
        list_node_init(node);
}

/* The first and last elements, or NULL on an empty list. */
#define list_first(head, type, member) \
        (list_empty(head) ? NULL : container_of((head)->next, type, member))
#define list_last(head, type, member) \
        (list_empty(head) ? NULL : container_of((head)->prev, type, member))

/* Moves every element of 'from' to the end of 'to'; 'from' is then empty. */
static inline void list_splice(ListNode *to, ListNode *from) {
        if (list_empty(from))
                return;
        from->next->prev = to->prev;
        to->prev->next = from->next;
        from->prev->next = to;
        to->prev = from->prev;
        list_init(from);
}

/* Walks the elements in order; the body must not remove the current one. */
#define LIST_FOREACH(item, head, type, member)                                  \
        for (type *item = container_of((head)->next, type, member);             \
             &item->member != (head);                                           \
             item = container_of(item->member.next, type, member))

/* The same, and the body may remove (or free) the current element. */
#define LIST_FOREACH_SAFE(item, next_item, head, type, member)                  \
        for (type *item = container_of((head)->next, type, member),             \
                  *next_item = container_of(item->member.next, type, member);   \
             &item->member != (head);                                           \
             item = next_item, next_item = container_of(item->member.next, type, member))
