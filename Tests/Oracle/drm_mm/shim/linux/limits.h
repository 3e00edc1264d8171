/* Stand-in for the kernel's <linux/limits.h>: adds U64_MAX etc. to the C library's header. */
#ifndef SHIM_LINUX_LIMITS_H
#define SHIM_LINUX_LIMITS_H
#include_next <linux/limits.h>	/* glibc's <limits.h> includes this name too */
#define U32_MAX	((unsigned int)~0U)
#define U64_MAX	((unsigned long long)~0ULL)
#define S64_MAX	((long long)(U64_MAX >> 1))
#endif
