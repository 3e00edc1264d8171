-- pages: owned pages, physical addresses, the kernel's bounds rule, and how handles drop
--
-- What it shows:
--   * Page.alloc_page hands out order-0 frames of the machine's RAM, which
--     starts at physical 0x100000; p:phys() is p:pfn() << PAGE_SHIFT.
--   * Every accessor follows rust/kernel/page.rs: an access at `off` of
--     `len` bytes is allowed only if off <= size, len <= size and
--     off + len <= size; otherwise EINVAL, and nothing is touched.
--   * with_pointer_into_page lends a pointer that is valid only inside its
--     callback; a page cannot be dropped while the pointer lives.
--   * A handle is dropped by kernel.drop, by <close> at scope exit, or by
--     the collector; kernel.debug counts each, and a dropped handle says
--     where it was dropped when used again.
-- What to look at: which accesses raise, the freed frame being reused, and
-- the drop statistics at the end.
-- Writes: pages-memory.svg (physical memory with blocks of each order
-- allocated) with --out DIR; the bounds checks with --results FILE.
local Page = kernel.page.Page
local gfp = kernel.gfp

local m = kernel.machine()
print(("machine: %d MiB of RAM at 0x%x, %d CPUs, seed %d"):format(
  m.memory >> 20, m.memmap[1].start, m.cpus, m.seed))

-- 1. Allocate and write.
local p = Page.alloc_page(gfp.GFP_KERNEL | gfp.__GFP_ZERO)
print(("\nallocated %s: phys 0x%x, %d bytes"):format(tostring(p), p:phys(), p:size()))
p:write_u32(0, 0xdeadbeef)
p:write_raw("hello, page", 64)
print(("read_u32(0) = 0x%x, read_u8(0) = 0x%x (little-endian)"):format(p:read_u32(0), p:read_u8(0)))
print(("read_raw(64, 11) = %q"):format(p:read_raw(64, 11)))

-- 2. The bounds rule, at its edges.
print("\naccess (off, len)      result")
local size = p:size()
for _, e in ipairs{{size, 0}, {0, size}, {size - 1, 1}, {size - 1, 2}, {1, size}, {size + 1, 0}, {-1, 1}} do
  local ok, err = pcall(p.read_raw, p, e[1], e[2])
  print(("  (%5d, %4d)        %s"):format(e[1], e[2], ok and "ok" or tostring(err)))
  kernel.results.record{off = e[1], len = e[2], allowed = ok}
end

-- 3. A pointer valid only inside its callback.
local kept
local sum = p:with_pointer_into_page(64, 5, function(ptr)
  kept = ptr
  local s = 0
  for c in ptr:read(5):gmatch(".") do s = s + c:byte() end
  local ok, err = pcall(kernel.drop, p)
  print(("\ninside the callback, dropping the page: %s"):format(tostring(err)))
  return s
end)
print(("bytes of %q sum to %d"):format(p:read_raw(64, 5), sum))
print(("the pointer afterwards: %s"):format(select(2, pcall(kept.read, kept, 1))))

-- 4. Three ways to drop.
local pfn = p:pfn()
kernel.drop(p)
print(("\nafter kernel.drop: state %s; using it: %s"):format(kernel.state(p), select(2, pcall(p.read_u8, p, 0))))
do
  local q <close> = Page.alloc_page()
  print(("a new page reuses the freed frame: pfn 0x%x == 0x%x"):format(q:pfn(), pfn))
end
-- Blocks of each order, to see in the physical memory map.
do
  local blocks = {}
  for order = 0, 10 do
    for _ = 1, 4 do blocks[#blocks + 1] = Page.alloc_pages(gfp.GFP_KERNEL, order) end
  end
  kernel.plot.memory{file = "pages-memory.svg", title = "Physical memory: 4 blocks of each order 0 to 10 allocated"}
  for _, b in ipairs(blocks) do kernel.drop(b) end
end
for _ = 1, 10 do Page.alloc_page() end  -- never dropped: the collector will
print(("live before collecting: %d pages"):format(kernel.debug.live().Page))
collectgarbage()
local s = kernel.debug.stats()
print(("dropped by kernel.drop %d, by <close> %d, by the collector %d; live now %d"):format(
  s.dropped_by_drop, s.dropped_by_close, s.dropped_by_gc, s.live))
