/*
 * bench.c - time the kernel's drm_mm (built in userspace) on a random
 * remove+insert churn, and checksum its placements so that another
 * implementation can replay the exact same operation sequence.
 *
 * Usage:  bench                         default matrix (below)
 *         bench MODE N PAIRS ROUNDS     one configuration
 * Output: drm_mm MODE N NS_PER_PAIR fill_sum=F sum=S fails=K
 *
 * Reproducing the operation sequence exactly (per configuration):
 *
 *   PRNG: xorshift64, state x (u64), seeded x = 0x9E3779B97F4A7C15 afresh
 *         for every (MODE, N) configuration; each draw is
 *             x ^= x << 13;  x ^= x >> 7;  x ^= x << 17;  return x;
 *   Allocator: drm_mm_init(mm, 0, 1 << 40), no color_adjust.
 *   Every insert: size = (1 + next() % 64) * 4096, alignment 0, color 0,
 *         range [0, U64_MAX) - i.e. drm_mm_insert_node_generic() - in MODE
 *         (best = DRM_MM_INSERT_BEST, low = _LOW, high = _HIGH).
 *   Fill: for i in 0..N-1: insert into node slot i (one draw for the size);
 *         on success append i to the dense array live[] (live_count++).
 *         fill_sum = sum of the start addresses of these inserts (mod 2^64).
 *   Then ROUNDS rounds of PAIRS pairs each, one continuous sequence:
 *         k = next() % live_count;  s = live[k];
 *         remove slot s;  live[k] = live[live_count - 1];  live_count--;
 *         insert into slot s (second draw, for the size);
 *         on success live[live_count++] = s and sum += start, else fails++.
 *   sum covers all pairs of all rounds (mod 2^64).  Each round is timed
 *   with CLOCK_MONOTONIC; NS_PER_PAIR is the best round's ns / PAIRS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <drm/drm_mm.h>

#define SPAN (1ULL << 40)
#define PAGE 4096ULL

static u64 rng_state;

static u64 next(void)
{
	u64 x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

struct cfg {
	const char *name;
	enum drm_mm_insert_mode mode;
};

static const struct cfg cfgs[] = {
	{ "best", DRM_MM_INSERT_BEST },
	{ "low", DRM_MM_INSERT_LOW },
	{ "high", DRM_MM_INSERT_HIGH },
};

static void run(const struct cfg *c, unsigned long n, unsigned long pairs, int rounds)
{
	struct drm_mm_node *nodes = calloc(n, sizeof(*nodes));
	unsigned long *live = calloc(n, sizeof(*live));
	unsigned long live_count = 0, fails = 0;
	u64 fill_sum = 0, sum = 0;
	double best = 0;
	struct drm_mm mm;

	if (!nodes || !live) {
		perror("calloc");
		exit(1);
	}
	memset(&mm, 0, sizeof(mm));
	drm_mm_init(&mm, 0, SPAN);
	rng_state = 0x9E3779B97F4A7C15ULL;

	for (unsigned long i = 0; i < n; i++) {
		u64 size = (1 + next() % 64) * PAGE;

		if (drm_mm_insert_node_generic(&mm, &nodes[i], size, 0, 0, c->mode) == 0) {
			fill_sum += nodes[i].start;
			live[live_count++] = i;
		} else {
			fails++;
		}
	}

	for (int r = 0; r < rounds; r++) {
		double t0 = now_ns();

		for (unsigned long p = 0; p < pairs && live_count; p++) {
			unsigned long k = next() % live_count;
			unsigned long s = live[k];
			u64 size;

			drm_mm_remove_node(&nodes[s]);
			live[k] = live[--live_count];

			size = (1 + next() % 64) * PAGE;
			if (drm_mm_insert_node_generic(&mm, &nodes[s], size, 0, 0, c->mode) == 0) {
				sum += nodes[s].start;
				live[live_count++] = s;
			} else {
				fails++;
			}
		}

		double ns = (now_ns() - t0) / pairs;
		if (r == 0 || ns < best)
			best = ns;
	}

	printf("drm_mm %s %lu %.1f fill_sum=%llu sum=%llu fails=%lu\n",
	       c->name, n, best, fill_sum, sum, fails);
	fflush(stdout);

	for (unsigned long i = 0; i < live_count; i++)
		drm_mm_remove_node(&nodes[live[i]]);
	drm_mm_takedown(&mm);
	free(nodes);
	free(live);
}

int main(int argc, char **argv)
{
	if (argc == 5) {
		for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
			if (strcmp(argv[1], cfgs[i].name) == 0) {
				run(&cfgs[i], strtoul(argv[2], NULL, 10),
				    strtoul(argv[3], NULL, 10), atoi(argv[4]));
				return 0;
			}
	}
	if (argc != 1) {
		fprintf(stderr, "usage: %s [best|low|high N PAIRS ROUNDS]\n", argv[0]);
		return 2;
	}

	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
		run(&cfgs[i], 1000, 2000000, 5);
	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
		run(&cfgs[i], 1000000, 500000, 5);
	return 0;
}
