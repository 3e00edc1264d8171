/* Stand-in for <drm/drm_print.h>: a drm_printer that writes to a stdio FILE. */
#ifndef SHIM_DRM_PRINT_H
#define SHIM_DRM_PRINT_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct drm_printer {
	FILE *out;
};

/*
 * The kernel's vsnprintf prints "%#018llx" of 0 as 0x0000000000000000, C's
 * printf as 000000000000000000.  Rewrite each "%#0<width>" as
 * "0x%0<width-2>" (the kernel counts the prefix in the width) first.
 */
static inline void shim_kernel_hex_fmt(char *dst, const char *src)
{
	while (*src) {
		if (src[0] == '%' && src[1] == '#' && src[2] == '0') {
			char *end;
			long width = strtol(src + 3, &end, 10);

			dst += sprintf(dst, "0x%%0%ld", width > 2 ? width - 2 : 0);
			src = end;
		} else {
			*dst++ = *src++;
		}
	}
	*dst = '\0';
}

__attribute__((__format__(__printf__, 2, 3)))
static inline void drm_printf(struct drm_printer *p, const char *fmt, ...)
{
	char kfmt[256];
	va_list ap;

	if (strlen(fmt) >= sizeof(kfmt) / 2)
		abort();
	shim_kernel_hex_fmt(kfmt, fmt);
	va_start(ap, fmt);
	vfprintf(p->out, kfmt, ap);
	va_end(ap);
}

#define DRM_ERROR(...)	fprintf(stderr, "[drm] *ERROR* " __VA_ARGS__)

#endif
