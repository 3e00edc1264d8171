/* Stand-in for <linux/spinlock.h>: drm_mm does no locking of its own. */
#ifndef SHIM_LINUX_SPINLOCK_H
#define SHIM_LINUX_SPINLOCK_H
#endif
