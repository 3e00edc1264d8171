/* Stand-in for <linux/export.h>: EXPORT_SYMBOL becomes a harmless redeclaration. */
#ifndef SHIM_LINUX_EXPORT_H
#define SHIM_LINUX_EXPORT_H
#define EXPORT_SYMBOL(sym)	extern __typeof__(sym) sym
#endif
