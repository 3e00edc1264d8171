/* Stand-in for <linux/list.h>: our own circular doubly-linked list with the kernel's names. */
#ifndef SHIM_LINUX_LIST_H
#define SHIM_LINUX_LIST_H

#include <linux/container_of.h>
#include <linux/types.h>

static inline void INIT_LIST_HEAD(struct list_head *h)
{
	h->next = h;
	h->prev = h;
}

static inline bool list_empty(const struct list_head *h)
{
	return h->next == h;
}

/* Link n between two adjacent entries a (before) and b (after). */
static inline void shim_list_link(struct list_head *n, struct list_head *a, struct list_head *b)
{
	b->prev = n;
	n->next = b;
	n->prev = a;
	a->next = n;
}

/* Insert n right after pos. */
static inline void list_add(struct list_head *n, struct list_head *pos)
{
	shim_list_link(n, pos, pos->next);
}

static inline void list_add_tail(struct list_head *n, struct list_head *pos)
{
	shim_list_link(n, pos->prev, pos);
}

/* Unlink e but leave e's own pointers alone (the drm_mm scanner relies on that). */
static inline void __list_del_entry(struct list_head *e)
{
	e->next->prev = e->prev;
	e->prev->next = e->next;
}

/* Unlink e and clear its pointers so stale use faults. */
static inline void list_del(struct list_head *e)
{
	__list_del_entry(e);
	e->next = NULL;
	e->prev = NULL;
}

#define list_entry(p, type, member)	container_of(p, type, member)
#define list_first_entry(h, type, member)	list_entry((h)->next, type, member)
#define list_first_entry_or_null(h, type, member) \
	(list_empty(h) ? NULL : list_first_entry(h, type, member))
#define list_next_entry(o, member) \
	list_entry((o)->member.next, __typeof__(*(o)), member)
#define list_prev_entry(o, member) \
	list_entry((o)->member.prev, __typeof__(*(o)), member)

#define list_for_each_entry(o, h, member) \
	for (o = list_first_entry(h, __typeof__(*(o)), member); \
	     &(o)->member != (h); \
	     o = list_next_entry(o, member))

#define list_for_each_entry_safe(o, t, h, member) \
	for (o = list_first_entry(h, __typeof__(*(o)), member), \
	     t = list_next_entry(o, member); \
	     &(o)->member != (h); \
	     o = t, t = list_next_entry(t, member))

#endif
