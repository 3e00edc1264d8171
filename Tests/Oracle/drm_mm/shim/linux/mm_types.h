/* Stand-in for <linux/mm_types.h>: in the kernel its include chain supplies the helpers below. */
#ifndef SHIM_LINUX_MM_TYPES_H
#define SHIM_LINUX_MM_TYPES_H
#include <errno.h>		/* ENOSPC; same value as the kernel's */
#include <linux/bitops.h>
#include <linux/compiler.h>
#include <linux/kernel.h>
#include <linux/log2.h>
#include <linux/math64.h>
#include <linux/types.h>
#endif
