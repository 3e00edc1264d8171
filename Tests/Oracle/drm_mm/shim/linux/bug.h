/* Stand-in for <linux/bug.h>: BUG_ON/WARN, and BUILD_BUG_ON_INVALID (what DRM_MM_BUG_ON expands to). */
#ifndef SHIM_LINUX_BUG_H
#define SHIM_LINUX_BUG_H

#include <stdio.h>
#include <stdlib.h>

static inline void shim_bug(const char *what, const char *file, int line)
{
	/* stdout too, so a parent reading our pipe sees why we stopped. */
	printf("BUG: %s at %s:%d\n", what, file, line);
	fflush(stdout);
	fprintf(stderr, "BUG: %s at %s:%d\n", what, file, line);
	abort();
}

#define BUG()		shim_bug("BUG()", __FILE__, __LINE__)
#define BUG_ON(c)	do { if (__builtin_expect(!!(c), 0)) shim_bug(#c, __FILE__, __LINE__); } while (0)

#define WARN(c, ...) ({ \
	int shim_warn_ = !!(c); \
	if (shim_warn_) fprintf(stderr, "WARNING: " __VA_ARGS__); \
	shim_warn_; })
#define WARN_ON(c)	WARN(c, "%s at %s:%d\n", #c, __FILE__, __LINE__)

/*
 * With CONFIG_DRM_DEBUG_MM unset, drm_mm.h defines DRM_MM_BUG_ON(e) as
 * BUILD_BUG_ON_INVALID(e), which normally only type-checks e.  Building with
 * -DSHIM_DRM_MM_CHECKS turns those assertions into run-time checks that abort.
 */
#ifdef SHIM_DRM_MM_CHECKS
#define BUILD_BUG_ON_INVALID(e)	BUG_ON(e)
#else
#define BUILD_BUG_ON_INVALID(e)	((void)sizeof((long)(e)))
#endif

#endif
