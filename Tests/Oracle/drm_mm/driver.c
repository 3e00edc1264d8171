/*
 * driver.c - drive one kernel drm_mm (drivers/gpu/drm/drm_mm.c, built in
 * userspace against the headers in shim/) from line commands on stdin.
 *
 * One output line per command; blank lines and lines starting with '#'
 * produce no output.  Numbers are unsigned decimal.  Commands:
 *
 *   init START SIZE                       -> ok   (also clears color_adjust
 *                                                   and forgets all slots)
 *   color_adjust on GUARD | off           -> ok   (i915-style guard pages)
 *   insert ID SIZE ALIGN COLOR RSTART REND MODE   -> ok START | err -ERRNO
 *        MODE: best low high evict lowest highest
 *   reserve ID START SIZE COLOR           -> ok | err -ERRNO
 *   remove ID                             -> ok
 *   holes                                 -> holes S:Z ...   (address order)
 *   hole_stack                            -> hole_stack S:Z ... (hole_stack
 *                                            order = drm_mm_for_each_hole)
 *   nodes                                 -> nodes S:Z:C ... (address order)
 *   scan_init SIZE ALIGN COLOR RSTART REND MODE   -> ok
 *   scan_add ID | scan_remove ID          -> 1 | 0
 *   color_evict                           -> node ID | none
 *   print                                 -> drm_mm_print() output, then "end"
 *
 * Misuse the kernel would not survive (inserting into a slot that is in use,
 * removing or scanning a free slot, bad syntax) is refused with "bad ...".
 * Other precondition violations reach drm_mm's DRM_MM_BUG_ON, which in the
 * checked build prints "BUG: ..." and aborts.
 *
 * stdout is flushed after every line unless run as "driver --batch".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <drm/drm_mm.h>

#define MAX_SLOTS 2000000u
#define MAX_TOKENS 16

static struct drm_mm mm;
static bool mm_ready;
static struct drm_mm_scan scan;
static struct drm_mm_node *slots;
static unsigned long slots_used;	/* slots[0, slots_used) may be dirty */
static u64 guard;

/* i915_gem_color_adjust look-alike: a guard gap between differently coloured neighbours. */
static void guard_color_adjust(const struct drm_mm_node *hole, unsigned long color,
			       u64 *start, u64 *end)
{
	const struct drm_mm_node *next;

	if (drm_mm_node_allocated(hole) && hole->color != color)
		*start += guard;

	next = list_next_entry(hole, node_list);
	if (drm_mm_node_allocated(next) && next->color != color)
		*end -= guard;
}

static bool parse_u64(const char *s, u64 *out)
{
	char *end;

	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno == 0 && *end == '\0';
}

static bool parse_mode(const char *s, enum drm_mm_insert_mode *out)
{
	static const struct { const char *name; enum drm_mm_insert_mode mode; } modes[] = {
		{ "best", DRM_MM_INSERT_BEST },
		{ "low", DRM_MM_INSERT_LOW },
		{ "high", DRM_MM_INSERT_HIGH },
		{ "evict", DRM_MM_INSERT_EVICT },
		{ "lowest", DRM_MM_INSERT_LOWEST },
		{ "highest", DRM_MM_INSERT_HIGHEST },
	};

	for (size_t i = 0; s && i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (strcmp(s, modes[i].name) == 0) {
			*out = modes[i].mode;
			return true;
		}
	}
	return false;
}

static struct drm_mm_node *parse_slot(const char *s)
{
	u64 id;

	if (!parse_u64(s, &id) || id >= MAX_SLOTS)
		return NULL;
	if (id >= slots_used)
		slots_used = id + 1;
	return &slots[id];
}

struct hole { u64 start, size; };

static int cmp_hole(const void *a, const void *b)
{
	const struct hole *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void print_holes(const char *tag, bool sorted)
{
	struct drm_mm_node *pos;
	u64 start, end;
	size_t n = 0, cap = 64;
	struct hole *h = malloc(cap * sizeof(*h));

	drm_mm_for_each_hole(pos, &mm, start, end) {
		if (n == cap)
			h = realloc(h, (cap *= 2) * sizeof(*h));
		h[n].start = start;
		h[n].size = end - start;
		n++;
	}
	if (sorted)
		qsort(h, n, sizeof(*h), cmp_hole);

	fputs(tag, stdout);
	for (size_t i = 0; i < n; i++)
		printf(" %llu:%llu", h[i].start, h[i].size);
	putchar('\n');
	free(h);
}

static void print_nodes(void)
{
	struct drm_mm_node *n;

	fputs("nodes", stdout);
	drm_mm_for_each_node(n, &mm)
		printf(" %llu:%llu:%lu", n->start, n->size, n->color);
	putchar('\n');
}

/* Run one tokenised command; returns the "bad ..." reason or NULL. */
static const char *run(char **t, int nt)
{
	const char *cmd = t[0];
	struct drm_mm_node *node;
	enum drm_mm_insert_mode mode;
	u64 a[6];

	if (strcmp(cmd, "init") == 0) {
		if (nt != 3 || !parse_u64(t[1], &a[0]) || !parse_u64(t[2], &a[1]))
			return "usage: init START SIZE";
		memset(slots, 0, slots_used * sizeof(*slots));
		slots_used = 0;
		memset(&mm, 0, sizeof(mm));
		drm_mm_init(&mm, a[0], a[1]);
		mm_ready = true;
		puts("ok");
		return NULL;
	}

	if (!mm_ready)
		return "not initialised (use init START SIZE)";

	if (strcmp(cmd, "color_adjust") == 0) {
		if (nt == 3 && strcmp(t[1], "on") == 0 && parse_u64(t[2], &guard))
			mm.color_adjust = guard_color_adjust;
		else if (nt == 2 && strcmp(t[1], "off") == 0)
			mm.color_adjust = NULL;
		else
			return "usage: color_adjust on GUARD | color_adjust off";
		puts("ok");
	} else if (strcmp(cmd, "insert") == 0) {
		if (nt != 8 || !(node = parse_slot(t[1])) ||
		    !parse_u64(t[2], &a[0]) || !parse_u64(t[3], &a[1]) ||
		    !parse_u64(t[4], &a[2]) || !parse_u64(t[5], &a[3]) ||
		    !parse_u64(t[6], &a[4]) || !parse_mode(t[7], &mode))
			return "usage: insert ID SIZE ALIGN COLOR RSTART REND MODE";
		if (drm_mm_node_allocated(node))
			return "slot in use";
		memset(node, 0, sizeof(*node));
		int ret = drm_mm_insert_node_in_range(&mm, node, a[0], a[1], a[2],
						      a[3], a[4], mode);
		if (ret)
			printf("err %d\n", ret);
		else
			printf("ok %llu\n", node->start);
	} else if (strcmp(cmd, "reserve") == 0) {
		if (nt != 5 || !(node = parse_slot(t[1])) ||
		    !parse_u64(t[2], &a[0]) || !parse_u64(t[3], &a[1]) ||
		    !parse_u64(t[4], &a[2]))
			return "usage: reserve ID START SIZE COLOR";
		if (drm_mm_node_allocated(node))
			return "slot in use";
		memset(node, 0, sizeof(*node));
		node->start = a[0];
		node->size = a[1];
		node->color = a[2];
		int ret = drm_mm_reserve_node(&mm, node);
		if (ret)
			printf("err %d\n", ret);
		else
			puts("ok");
	} else if (strcmp(cmd, "remove") == 0) {
		if (nt != 2 || !(node = parse_slot(t[1])))
			return "usage: remove ID";
		if (!drm_mm_node_allocated(node))
			return "slot not allocated";
		drm_mm_remove_node(node);
		puts("ok");
	} else if (strcmp(cmd, "holes") == 0 && nt == 1) {
		print_holes("holes", true);
	} else if (strcmp(cmd, "hole_stack") == 0 && nt == 1) {
		print_holes("hole_stack", false);
	} else if (strcmp(cmd, "nodes") == 0 && nt == 1) {
		print_nodes();
	} else if (strcmp(cmd, "scan_init") == 0) {
		if (nt != 7 || !parse_u64(t[1], &a[0]) || !parse_u64(t[2], &a[1]) ||
		    !parse_u64(t[3], &a[2]) || !parse_u64(t[4], &a[3]) ||
		    !parse_u64(t[5], &a[4]) || !parse_mode(t[6], &mode))
			return "usage: scan_init SIZE ALIGN COLOR RSTART REND MODE";
		drm_mm_scan_init_with_range(&scan, &mm, a[0], a[1], a[2], a[3], a[4], mode);
		puts("ok");
	} else if (strcmp(cmd, "scan_add") == 0 || strcmp(cmd, "scan_remove") == 0) {
		if (nt != 2 || !(node = parse_slot(t[1])))
			return "usage: scan_add ID | scan_remove ID";
		if (!drm_mm_node_allocated(node))
			return "slot not allocated";
		bool hit = cmd[5] == 'a' ? drm_mm_scan_add_block(&scan, node)
					 : drm_mm_scan_remove_block(&scan, node);
		puts(hit ? "1" : "0");
	} else if (strcmp(cmd, "color_evict") == 0 && nt == 1) {
		node = drm_mm_scan_color_evict(&scan);
		if (!node)
			puts("none");
		else if (node >= slots && node < slots + MAX_SLOTS)
			printf("node %ld\n", (long)(node - slots));
		else
			puts("node head");
	} else if (strcmp(cmd, "print") == 0 && nt == 1) {
		struct drm_printer p = { .out = stdout };

		drm_mm_print(&mm, &p);
		puts("end");
	} else {
		return "unknown command";
	}
	return NULL;
}

int main(int argc, char **argv)
{
	bool batch = argc > 1 && strcmp(argv[1], "--batch") == 0;
	static char line[1 << 16];

	slots = calloc(MAX_SLOTS, sizeof(*slots));
	if (!slots) {
		perror("calloc");
		return 1;
	}

	while (fgets(line, sizeof(line), stdin)) {
		char *t[MAX_TOKENS];
		int nt = 0;

		for (char *s = strtok(line, " \t\r\n"); s && nt < MAX_TOKENS;
		     s = strtok(NULL, " \t\r\n"))
			t[nt++] = s;
		if (nt == 0 || t[0][0] == '#')
			continue;

		const char *bad = run(t, nt);
		if (bad)
			printf("bad %s\n", bad);
		if (!batch)
			fflush(stdout);
	}
	return 0;
}
