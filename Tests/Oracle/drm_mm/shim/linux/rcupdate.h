/* Stand-in for <linux/rcupdate.h>: no concurrent readers here, so plain once-accesses. */
#ifndef SHIM_LINUX_RCUPDATE_H
#define SHIM_LINUX_RCUPDATE_H
#include <linux/compiler.h>
#define rcu_assign_pointer(p, v)	WRITE_ONCE(p, v)
#define rcu_dereference_raw(p)		READ_ONCE(p)
#endif
