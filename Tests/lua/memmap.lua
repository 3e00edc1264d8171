-- A memory map with RAM, reserved and MMIO regions and holes.
local M = 1 << 20
kernel.boot{memmap = {
  {start = 0x100000, size = "16M", type = "ram"},
  {start = 32 * M, size = "1M", type = "reserved"},   -- firmware tables
  {start = 0xfe000000, size = "1M", type = "mmio"},   -- a device
  {start = 4 << 30, size = "16M"},                    -- RAM again above 4 GiB
}}
local Page = kernel.page.Page
local mem = kernel.mem
local pfn = function(pa) return pa >> 12 end

test("the machine reports its map; memory is the RAM in it", function()
  local m = kernel.machine()
  expect_eq(m.memory, 32 * M)
  expect_eq(#m.memmap, 4)
  expect_eq(m.memmap[2].type, "reserved")
  expect_eq(m.memmap[3].start, 0xfe000000)
  expect_eq(m.memmap[4].type, "ram")
  local s = mem.stats()
  expect_eq(s.total_pages, 8192, "the allocator uses every RAM page and nothing else")
  expect_eq(s.free_pages, 8192)
end)

test("pfn_valid and page_is_ram by region", function()
  for _, case in ipairs{
    {0x100000, true}, {0x100000 + 16 * M - 1, true}, {0x100000 + 16 * M, false},  -- hole after RAM
    {32 * M, true}, {33 * M - 1, true},                                         -- reserved
    {0xfe000000, false}, {0xfe0fffff, false},                                   -- MMIO
    {4 << 30, true}, {(4 << 30) + 16 * M, false}, {0, false},
  } do
    expect_eq(mem.pfn_valid(pfn(case[1])), case[2], ("pfn_valid(0x%x)"):format(case[1]))
    expect_eq(mem.page_is_ram(pfn(case[1])), case[2], ("page_is_ram(0x%x)"):format(case[1]))
  end
end)

test("borrow_phys: RAM and reserved, never MMIO or holes", function()
  local fw = kernel.page.borrow_phys(32 * M)
  assert(fw, "reserved RAM has page structs")
  expect_eq(fw:read_u32(0), 0, "reserved memory is accessible")
  fw:write_u32(0, 0x12345678)
  expect_eq(kernel.page.borrow_phys(32 * M + 8):read_u32(0), 0x12345678, "the offset in the page is ignored")
  expect_eq(kernel.page.borrow_phys(0xfe000000), nil)
  expect_eq(kernel.page.borrow_phys(0x100000 + 16 * M), nil)
  expect_eq(kernel.page.borrow_phys(-1), nil)
  local err = expect_error("BUG", kernel.page.borrow_phys_unchecked, 0xfe000000)
  assert(err.message:find("no struct page"), err.message)
end)

test("allocations come from both RAM regions and never from reserved memory", function()
  local held, low, high = {}, 0, 0
  while true do
    local ok, p = pcall(Page.alloc_page)
    if not ok then break end
    local pa = p:phys()
    assert(not (pa >= 32 * M and pa < 33 * M), "allocated reserved memory")
    if pa >= (4 << 30) then high = high + 1 else low = low + 1 end
    held[#held + 1] = p
  end
  -- Everything but the min watermark (sqrt(32768 kB * 16) = 724 kB: 181 pages).
  expect_eq(kernel.mem.zones()[1].min, 181)
  expect_eq(low + high + kernel.mem.stats().free_pages, 8192)
  assert(kernel.mem.stats().free_pages <= 181)
  for _, p in ipairs(held) do kernel.drop(p) end
  kernel.debug.check()
end)

test("blocks never merge across a hole", function()
  mem.drain_pages()
  local s = mem.stats()
  -- The low region (pfns 0x100-0x1100) is not 4 MiB aligned: an order-8 and
  -- an order-9 block at its start, three of order 10, an order-8 tail; the
  -- high one is four aligned order-10 blocks.
  expect_eq(s.nr_free[10], 7)
  expect_eq(s.nr_free[9], 1)
  expect_eq(s.nr_free[8], 2)
end)
