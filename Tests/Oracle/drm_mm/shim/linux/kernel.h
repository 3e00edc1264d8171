/* Stand-in for <linux/kernel.h>/<linux/minmax.h>: min, max, ARRAY_SIZE. */
#ifndef SHIM_LINUX_KERNEL_H
#define SHIM_LINUX_KERNEL_H
#define min(a, b) ({ __typeof__(a) shim_a_ = (a); __typeof__(b) shim_b_ = (b); \
		     shim_a_ < shim_b_ ? shim_a_ : shim_b_; })
#define max(a, b) ({ __typeof__(a) shim_a_ = (a); __typeof__(b) shim_b_ = (b); \
		     shim_a_ > shim_b_ ? shim_a_ : shim_b_; })
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#endif
