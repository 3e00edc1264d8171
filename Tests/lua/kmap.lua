-- with_page_mapped: kmap_local mappings (__kmap_local_page_prot). A lowmem
-- page maps at its direct-map address and takes no slot; a highmem page
-- takes one of 16 slots, nested LIFO.
kernel.boot{memory = "64M", highmem = "16M"}
local Page = kernel.page.Page
local PAGE_OFFSET = 0xffff888000000000
local FIXADDR_TOP = 0xffffffffff7ff000
local function highmem_page() return Page.alloc_page(kernel.gfp.GFP_KERNEL | kernel.gfp.__GFP_HIGHMEM) end

test("a mapping reads and writes the page and knows its address", function()
  local p <close> = Page.alloc_page(kernel.gfp.__GFP_ZERO)
  local a, b = p:with_page_mapped(function(map)
    expect_eq(map:addr(), PAGE_OFFSET + p:phys())
    map:write("kmap", 8)
    assert(tostring(map):match("^Mapping{pfn=0x%x+, addr=0xffff888%x+}$"), tostring(map))
    return map:read(8, 4), 2
  end)
  expect_eq(a, "kmap") expect_eq(b, 2)
  expect_eq(p:read_raw(8, 4), "kmap")
end)

test("a mapping covers one page, and ends with its callback", function()
  local p <close> = Page.alloc_pages(0, 1)
  local saved
  p:with_page_mapped(function(map)
    saved = map
    expect_eq(#map:read(0, 4096), 4096)
    expect_error("BUG", map.read, map, 4096, 1)
    expect_error("BUG", map.write, map, "x", 4096)
    expect_error("BUG", map.read, map, -1, 1)
  end)
  local err = expect_error("BUG", saved.read, saved, 0, 1)
  assert(err.message:find("use after scope"), err.message)
  expect_error("use after scope", saved.addr, saved)
end)

test("a lowmem page maps at its direct-map address and takes no slot, however deep", function()
  local p <close> = Page.alloc_page()
  local depth = 0
  local function nest(n)
    if n == 0 then return end
    p:with_page_mapped(function(map)
      expect_eq(map:addr(), PAGE_OFFSET + p:phys())
      depth = depth + 1
      expect_eq(p:read_u8(0), p:read_u8(0), "the accessors need no slot either")
      nest(n - 1)
    end)
  end
  nest(40)
  expect_eq(depth, 40)
end)

test("highmem mappings nest 16 deep; the 17th is a bug, and so is an access that maps", function()
  local p <close> = highmem_page()
  local low <close> = Page.alloc_page()
  local depth = 0
  local function nest(n)
    if n == 0 then
      expect_eq(expect_error("BUG", p.with_page_mapped, p, function() end).message,
        "kmap_local_page: more than 16 nested mappings")
      expect_error("more than 16 nested mappings", p.read_u8, p, 0)
      low:with_page_mapped(function() end)  -- a lowmem page still maps
      expect_eq(low:read_u8(0), low:read_u8(0))
      return
    end
    p:with_page_mapped(function(map)
      depth = depth + 1
      expect_eq(map:addr(), FIXADDR_TOP - (depth - 1 + 16 * kernel.sched.raw_smp_processor_id()) * kernel.PAGE_SIZE)
      nest(n - 1)
    end)
  end
  nest(16)
  expect_eq(depth, 16)
  expect_eq(p:read_u8(0), p:read_u8(0), "all unmapped again")
  p:with_pointer_into_page(0, 1, function() end)
end)

test("with_pointer_into_page of a highmem page takes a slot too", function()
  local p <close> = highmem_page()
  local function nest(n, fn)
    if n == 0 then return fn() end
    return p:with_page_mapped(function() return nest(n - 1, fn) end)
  end
  nest(15, function()
    p:with_pointer_into_page(0, 1, function(ptr)
      expect_error("more than 16 nested mappings", p.with_page_mapped, p, function() end)
      ptr:write("x")
      expect_eq(ptr:read(1), "x", "the pointer's own mapping holds its slot: it needs no 17th")
    end)
  end)
end)

test("unmapping highmem out of order is a bug, and the stack stays consistent", function()
  local p <close> = highmem_page()
  local co = coroutine.create(function()
    return p:with_page_mapped(function() coroutine.yield("mapped") end)
  end)
  expect_eq(select(2, coroutine.resume(co)), "mapped")  -- the coroutine holds a slot
  p:with_page_mapped(function()
    local ok, err = coroutine.resume(co)  -- it unmaps while this newer mapping lives
    expect_eq(ok, false)
    expect_eq(err.bug, true)
    assert(err.message:find("^kunmap_local of Mapping{.*} out of order"), err.message)
  end)
  local depth = 0
  local function nest(n)
    if n == 0 then return end
    p:with_page_mapped(function() depth = depth + 1 nest(n - 1) end)
  end
  nest(16)
  expect_eq(depth, 16, "all 16 slots are free again")
  -- A lowmem mapping needs no order: kunmap_local of a direct-map address does nothing.
  local low <close> = Page.alloc_page()
  local co2 = coroutine.create(function()
    return low:with_page_mapped(function() coroutine.yield("mapped") end)
  end)
  coroutine.resume(co2)
  low:with_page_mapped(function()
    expect_eq(coroutine.resume(co2), true)
  end)
end)

test("a mapping of a borrowed page whose owner frees it is a use after free, as KASAN reports", function()
  for _, gfp in ipairs{kernel.gfp.GFP_KERNEL, kernel.gfp.GFP_KERNEL | kernel.gfp.__GFP_HIGHMEM} do
    local p = Page.alloc_page(gfp)
    local b = kernel.page.borrow_phys(p:phys())
    b:with_page_mapped(function(map)
      map:write("ok", 0)
      kernel.drop(p) local at = here()  -- the same line
      local want = ("use after free: BorrowedPage{pfn=%#x} freed at %s"):format(b:pfn(), at)
      expect_eq(expect_error("BUG", map.write, map, "late", 0).message, want)
      expect_eq(expect_error("BUG", map.read, map, 0, 4).message, want)
    end)
    p = Page.alloc_page(gfp)
    b = kernel.page.borrow_phys(p:phys())
    b:with_pointer_into_page(0, 4, function(ptr)
      ptr:write("ok")
      kernel.drop(p) local at = here()  -- the same line
      local want = ("use after free: BorrowedPage{pfn=%#x} freed at %s"):format(b:pfn(), at)
      expect_eq(expect_error("BUG", ptr.write, ptr, "late").message, want)
    end)
  end
end)
