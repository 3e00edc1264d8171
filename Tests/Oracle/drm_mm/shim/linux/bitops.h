/* Stand-in for <linux/bitops.h>: BIT() and the non-atomic single-word bit helpers. */
#ifndef SHIM_LINUX_BITOPS_H
#define SHIM_LINUX_BITOPS_H
#include <stdbool.h>

#define BIT(n)	(1UL << (n))

static inline bool test_bit(unsigned int nr, const volatile unsigned long *w)
{
	return (*w >> nr) & 1UL;
}

static inline void __set_bit(unsigned int nr, volatile unsigned long *w)
{
	*w |= BIT(nr);
}

static inline void __clear_bit(unsigned int nr, volatile unsigned long *w)
{
	*w &= ~BIT(nr);
}

/* The kernel's version has release ordering; one thread needs none. */
#define clear_bit_unlock(nr, w)	__clear_bit(nr, w)

#endif
