/* Stand-in for <linux/stacktrace.h>: stack traces are only saved with CONFIG_DRM_DEBUG_MM. */
#ifndef SHIM_LINUX_STACKTRACE_H
#define SHIM_LINUX_STACKTRACE_H
#endif
