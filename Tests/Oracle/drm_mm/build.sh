#!/bin/sh
# build.sh [OUTDIR] - build the drm_mm oracle from Debian's linux-source-6.12.
#
# Extracts drm_mm.c, lib/rbtree.c and the five kernel headers they need from
# the tarball into OUTDIR/ksrc (OUTDIR defaults to a fresh mktemp directory;
# an existing OUTDIR/ksrc is reused), compiles them against shim/ and writes:
#   OUTDIR/driver          command driver, DRM_MM_BUG_ON checks enabled
#   OUTDIR/driver-nocheck  command driver, DRM_MM_BUG_ON compiled out (as shipped)
#   OUTDIR/bench           benchmark, DRM_MM_BUG_ON compiled out
# Environment: KSRC_TARBALL (default /usr/src/linux-source-6.12.tar.xz), CC.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
tarball=${KSRC_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
cc=${CC:-gcc}
top=linux-source-6.12
members="drivers/gpu/drm/drm_mm.c lib/rbtree.c include/drm/drm_mm.h
	include/linux/rbtree.h include/linux/rbtree_types.h
	include/linux/rbtree_augmented.h include/linux/interval_tree_generic.h"

if [ $# -ge 1 ]; then
	out=$1
	mkdir -p "$out"
else
	out=$(mktemp -d "${TMPDIR:-/tmp}/drm_mm_oracle.XXXXXX")
fi
out=$(cd "$out" && pwd)
k=$out/ksrc/$top

missing=
for m in $members; do
	[ -f "$k/$m" ] || missing=1
done
if [ -n "$missing" ]; then
	[ -r "$tarball" ] || { echo "build.sh: cannot read $tarball" >&2; exit 1; }
	rm -rf "$out/ksrc"
	mkdir -p "$out/ksrc"
	list=
	for m in $members; do list="$list $top/$m"; done
	echo "extracting from $tarball ..."
	# Threaded xz (the Debian tarball has many blocks); stop at each member's
	# first occurrence.  Fall back to plain -J if the option is unsupported.
	# shellcheck disable=SC2086
	tar -C "$out/ksrc" --occurrence=1 -I 'xz -T0' -xf "$tarball" $list 2>/dev/null ||
		tar -C "$out/ksrc" -xJf "$tarball" $list
else
	echo "reusing kernel sources in $out/ksrc"
fi

cflags="-O2 -std=gnu11 -fno-strict-aliasing -fno-strict-overflow
	-fno-delete-null-pointer-checks -Wall"
inc="-I$here/shim -I$k/include"
obj=$out/obj
mkdir -p "$obj"

# shellcheck disable=SC2086
{
	$cc $cflags $inc -c "$k/lib/rbtree.c" -o "$obj/rbtree.o"
	$cc $cflags $inc -c "$k/drivers/gpu/drm/drm_mm.c" -o "$obj/drm_mm.o"
	$cc $cflags $inc -DSHIM_DRM_MM_CHECKS -c "$k/drivers/gpu/drm/drm_mm.c" \
		-o "$obj/drm_mm_checked.o"
	$cc $cflags $inc -DSHIM_DRM_MM_CHECKS "$here/driver.c" \
		"$obj/drm_mm_checked.o" "$obj/rbtree.o" -o "$out/driver"
	$cc $cflags $inc "$here/driver.c" "$obj/drm_mm.o" "$obj/rbtree.o" \
		-o "$out/driver-nocheck"
	$cc $cflags $inc "$here/bench.c" "$obj/drm_mm.o" "$obj/rbtree.o" \
		-o "$out/bench"
}

echo "$out/driver"
echo "$out/driver-nocheck"
echo "$out/bench"
