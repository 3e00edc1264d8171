/* Stand-in for <linux/seq_file.h>: nothing from it is used by drm_mm.c. */
#ifndef SHIM_LINUX_SEQ_FILE_H
#define SHIM_LINUX_SEQ_FILE_H
#endif
