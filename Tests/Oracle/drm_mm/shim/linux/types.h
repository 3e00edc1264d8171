/* Stand-in for <linux/types.h>: fixed-width integer names and struct list_head. */
#ifndef SHIM_LINUX_TYPES_H
#define SHIM_LINUX_TYPES_H

#include <stdbool.h>
#include <stddef.h>

typedef unsigned char		u8;
typedef unsigned short		u16;
typedef unsigned int		u32;
typedef unsigned long long	u64;	/* drm_mm.c prints u64 with %llu */
typedef signed char		s8;
typedef short			s16;
typedef int			s32;
typedef long long		s64;

struct list_head {
	struct list_head *next, *prev;
};

#endif
