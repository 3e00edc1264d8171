/* Stand-in for <linux/slab.h>: kmalloc is only used with CONFIG_DRM_DEBUG_MM. */
#ifndef SHIM_LINUX_SLAB_H
#define SHIM_LINUX_SLAB_H
#endif
