-- vm.max_map_count (kernel.boot{max_map_count=}): do_mmap refuses a new
-- mapping once the mm has more VMAs than that, and munmap refuses a split
-- that would go past it (vms_gather_munmap_vmas), before changing anything.
kernel.boot{memory = "16M", max_map_count = 4}
local mm = kernel.mm
local PAGE = kernel.PAGE_SIZE
local ANON = mm.MAP_PRIVATE | mm.MAP_ANONYMOUS

test("max_map_count is the machine's", function()
  expect_eq(kernel.machine().max_map_count, 4)
end)

test("mmap fails with ENOMEM once map_count exceeds the limit; munmap will not split past it", function()
  local u = mm.mm_alloc()
  local base = 0x100000
  -- five VMAs, one apart each: do_mmap checks map_count > max_map_count
  for i = 0, 4 do u:mmap{addr = base + 2 * i * PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON} end
  expect_eq(u:map_count(), 5)
  local err = expect_error("ENOMEM", u.mmap, u, {addr = base + 20 * PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON})
  expect_eq(err.message, "mmap: the mm has more than max_map_count (4) VMAs")
  expect_eq(u:map_count(), 5, "nothing changed")
  -- A munmap that trims or removes needs no split: fine at the limit.
  u:munmap(base + 8 * PAGE, PAGE)
  expect_eq(u:map_count(), 4)
  local big = u:mmap{addr = base + 20 * PAGE, len = 3 * PAGE, flags = mm.MAP_FIXED | ANON}
  expect_eq(u:map_count(), 5)
  -- Punching a hole into one VMA makes two of it: ENOMEM, and the VMA is whole.
  err = expect_error("ENOMEM", u.munmap, u, big + PAGE, PAGE)
  expect_eq(err.message, ("munmap of [0x%x, 0x%x) would split Vma{0x%x-0x%x rw-p} past max_map_count (4)"):format(
    big + PAGE, big + 2 * PAGE, big, big + 3 * PAGE))
  expect_eq(u:map_count(), 5, "nothing changed")
  -- A MAP_FIXED mapping over its middle is refused the same way.
  expect_error("ENOMEM", u.mmap, u, {addr = big + PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON, prot = mm.PROT_READ})
  u:munmap(big + 2 * PAGE, PAGE)  -- the tail only: no split
  expect_eq(u:map_count(), 5)
  kernel.drop(u)
end)
