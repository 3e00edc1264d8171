/* Stand-in for <linux/stddef.h>: NULL, offsetof, bool from the C library. */
#ifndef SHIM_LINUX_STDDEF_H
#define SHIM_LINUX_STDDEF_H
#include <stdbool.h>
#include <stddef.h>
#endif
