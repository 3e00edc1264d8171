-- The buddy allocator: boot state, split and merge, per-CPU lists, exhaustion.
kernel.boot{memory = "64M"}
local Page = kernel.page.Page
local mem = kernel.mem

local function same(a, b, path)
  path = path or "stats"
  if type(a) ~= "table" then return expect_eq(a, b, path) end
  for k, v in pairs(a) do same(v, b[k], path .. "." .. tostring(k)) end
  for k in pairs(b) do assert(a[k] ~= nil, path .. "." .. tostring(k) .. " appeared") end
end

local boot = mem.stats()

test("at boot every RAM page is free, in the largest aligned blocks", function()
  -- RAM is pfns 0x100-0x4100: an order-8 block, an order-9 block, 15 of
  -- order 10 from 0x400, and an order-8 tail at 0x4000.
  expect_eq(boot.total_pages, 16384)
  expect_eq(boot.free_pages, 16384)
  expect_eq(boot.pcp_pages, 0)
  local want = {[0] = 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 15}
  for order = 0, mem.MAX_ORDER do expect_eq(boot.nr_free[order], want[order], "order " .. order) end
  expect_eq(mem.buddyinfo(),
    "Node 0, zone   Normal      0      0      0      0      0      0      0      0      2      1     15 \n")
  kernel.debug.check()
end)

test("every order until memory is exhausted, freed in another order, returns to boot", function()
  local held = {}
  for order = mem.MAX_ORDER, 0, -1 do
    while true do
      local ok, p = pcall(Page.alloc_pages, kernel.gfp.GFP_KERNEL, order)
      if not ok then expect_eq(p.errno, "ENOMEM") break end
      expect_eq(p:order(), order)
      expect_eq(p:pfn() % (1 << order), 0, "blocks are aligned to their size")
      held[#held + 1] = p
    end
  end
  local s = mem.stats()
  local min = mem.zones()[1].min
  assert(s.free_pages <= min, "GFP_KERNEL stops at the min watermark")
  expect_eq(s.pcp_pages, 0, "reclaim drained the per-CPU lists")
  local pages = 0
  for _, p in ipairs(held) do pages = pages + (1 << p:order()) end
  expect_eq(pages + s.free_pages, 16384, "every page above the watermark was handed out")
  kernel.debug.check()
  -- Free in a shuffled order (the machine's seed decides it).
  for i = #held, 2, -1 do
    local j = math.random(i)
    held[i], held[j] = held[j], held[i]
  end
  for i, p in ipairs(held) do
    kernel.drop(p)
    if i % 97 == 0 then kernel.debug.check() end
  end
  mem.drain_pages()
  same(mem.stats(), boot)
  kernel.debug.check()
end)

test("exhaustion is ENOMEM; freeing one page makes one allocation possible", function()
  local held = {}
  while true do
    local ok, p = pcall(Page.alloc_page)
    if not ok then
      expect_eq(p.errno, "ENOMEM")
      expect_eq(p.code, 12)
      break
    end
    held[#held + 1] = p
  end
  local min = mem.zones()[1].min  -- 256 pages on 64M
  expect_eq(#held, 16384 - min, "down to the min watermark")
  expect_error("ENOMEM", Page.alloc_pages, 0, 1)
  kernel.drop(table.remove(held))
  mem.drain_pages()  -- the freed page leaves the per-CPU list: one page above min
  local p = Page.alloc_page()
  expect_error("ENOMEM", Page.alloc_page)
  kernel.drop(p)
  for _, q in ipairs(held) do kernel.drop(q) end
  mem.drain_pages()
  same(mem.stats(), boot)
end)

test("order-0 pages go through the per-CPU list", function()
  local p = Page.alloc_page()
  local s = mem.stats()
  -- 64M: batch 3 (zone_batchsize), so a refill of 3 and one handed out.
  expect_eq(s.pcp_pages, 2)
  expect_eq(s.free_pages, boot.free_pages - 3)
  local pfn = p:pfn()
  kernel.drop(p)
  expect_eq(mem.stats().pcp_pages, 3)
  local q = Page.alloc_page()
  expect_eq(q:pfn(), pfn, "the hot page comes back first")
  kernel.drop(q)
  mem.drain_pages()
  expect_eq(mem.stats().pcp_pages, 0)
  same(mem.stats(), boot)
end)

test("per-CPU lists past high return pages to the buddy allocator; a run of frees raises high", function()
  local held = {}
  for i = 1, 3000 do held[i] = Page.alloc_page() end
  for i = 1, 3000 do kernel.drop(held[i]) end
  local pcp = mem.zones()[1].pcp
  assert(mem.stats().pcp_pages <= pcp.high_max, "pcp_pages " .. mem.stats().pcp_pages)
  assert(pcp.high > pcp.high_min, "nr_pcp_high raised high for the run of frees: " .. pcp.high)
  mem.drain_pages()
  same(mem.stats(), boot)
end)

test("orders out of range are EINVAL", function()
  for _, order in ipairs{-1, 11, 64, math.maxinteger, math.mininteger} do
    expect_error("EINVAL", Page.alloc_pages, 0, order)
  end
  expect_error("number has no integer representation", Page.alloc_pages, 0, 1.5)
  same(mem.stats(), boot)
end)

test("higher orders: size, bounds and accessors", function()
  local p <close> = Page.alloc_pages(kernel.gfp.__GFP_ZERO, 2)
  expect_eq(p:size(), 4 * 4096)
  p:write_u64(4 * 4096 - 8, -1)
  expect_eq(p:read_u64(4 * 4096 - 8), -1)
  expect_eq(p:read_raw(4096, 4), "\0\0\0\0")
  expect_error("EINVAL", p.read_u8, p, 4 * 4096)
  expect_eq(#p:read_raw(0, p:size()), p:size())
  expect_eq(p:refcount(), 1)
end)

test("freed memory is poisoned with PAGE_POISON (mm/page_poison.c); __GFP_ZERO zeroes it", function()
  local p = Page.alloc_page()
  local pfn = p:pfn()
  p:write_raw("secret", 0)
  kernel.drop(p)
  local q <close> = Page.alloc_page()
  expect_eq(q:pfn(), pfn)
  expect_eq(q:read_raw(0, 8), string.rep(string.char(mem.PAGE_POISON), 8))
  expect_eq(mem.PAGE_POISON, 0xaa)
  kernel.drop(q)
  local z <close> = Page.alloc_page(kernel.gfp.GFP_KERNEL | kernel.gfp.__GFP_ZERO)
  expect_eq(z:pfn(), pfn)
  expect_eq(z:read_raw(0, 4096), string.rep("\0", 4096))
end)

-- A frame nobody reached keeps its poison when freed and is not poisoned
-- again; every way of writing a page must make its next free poison it.
test("a freed page is poisoned again, whichever way it was written", function()
  local POISON = string.char(mem.PAGE_POISON)
  -- Takes pages until the frame `pfn` comes back (freed frames are reused
  -- first), and checks it holds only the poison.
  local function poisoned_again(pfn, order)
    order = order or 0
    local taken = {}
    for _ = 1, 64 do
      local q = Page.alloc_pages(kernel.gfp.GFP_KERNEL, order)
      taken[#taken + 1] = q
      if q:pfn() == pfn then
        expect_eq(q:read_raw(0, q:size()) == POISON:rep(q:size()), true, ("pfn %#x is all poison"):format(pfn))
        break
      end
    end
    expect_eq(taken[#taken]:pfn(), pfn, "the frame came back")
    for _, q in ipairs(taken) do kernel.drop(q) end
  end
  local writers = {
    write_u8 = function(p) p:write_u8(4095, 1) end,
    write_u64 = function(p) p:write_u64(8, -1) end,
    write_raw = function(p) p:write_raw("secret", 100) end,
    fill_zero_raw = function(p) p:fill_zero_raw(0, 4096) end,
    with_page_mapped = function(p) p:with_page_mapped(function(map) map:write("kmap", 8) end) end,
    with_pointer_into_page = function(p) p:with_pointer_into_page(16, 4, function(ptr) ptr:write("ptr!") end) end,
    borrow_phys = function(p) kernel.page.borrow_phys(p:phys()):write_raw("borrowed", 0) end,
    user_mapping = function(p)
      local u = kernel.mm.mm_alloc()
      local a = u:mmap{len = 4096, hook = function(vma) vma:set_mixedmap():vm_insert_page(vma:vm_start(), p) end}
      kernel.uaccess.UserSlice(u, a, 4):writer():write_raw("user")
      kernel.drop(u)
    end,
  }
  local names = {}
  for name in pairs(writers) do names[#names + 1] = name end
  table.sort(names)
  kernel.drop(Page.alloc_page())  -- a frame that holds the poison, as each writer's will
  for _, name in ipairs(names) do
    local p = Page.alloc_page()
    local pfn = p:pfn()
    writers[name](p)
    kernel.drop(p)
    poisoned_again(pfn)
  end
  -- Read, or not touched at all: still the poison.
  local p = Page.alloc_page()
  local pfn = p:pfn()
  expect_eq(p:read_raw(0, 4096), POISON:rep(4096))
  kernel.drop(p)
  poisoned_again(pfn)
  -- Every frame of a block, not only its first.
  kernel.drop(Page.alloc_pages(kernel.gfp.GFP_KERNEL, 2))
  local b = Page.alloc_pages(kernel.gfp.GFP_KERNEL, 2)
  pfn = b:pfn()
  b:write_raw("third frame", 2 * 4096 + 7)
  kernel.drop(b)
  poisoned_again(pfn, 2)
end)

test("pfn and physical address helpers", function()
  expect_eq(mem.pfn_valid(0x100), true)
  expect_eq(mem.pfn_valid(0x40ff), true)
  expect_eq(mem.pfn_valid(0x4100), false)
  expect_eq(mem.pfn_valid(0xff), false, "below RAM")
  expect_eq(mem.pfn_valid(-1), false)
  expect_eq(mem.page_is_ram(0x100), true)
  expect_eq(mem.page_is_ram(0), false)
  expect_eq(mem.phys_to_pfn(0x100fff), 0x100)
  expect_eq(mem.phys_to_pfn(-1), (1 << 52) - 1, "unsigned")
  expect_eq(mem.pfn_to_phys(0x100), 0x100000)
end)
