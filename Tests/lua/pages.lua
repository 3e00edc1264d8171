-- Page: allocation, accessors and the kernel's exact bounds rule.
local Page = kernel.page.Page
local gfp = kernel.gfp
local SIZE = kernel.PAGE_SIZE

test("constants follow the kernel", function()
  expect_eq(kernel.PAGE_SIZE, 4096)
  expect_eq(kernel.PAGE_SHIFT, 12)
  expect_eq(kernel.PAGE_MASK, -4096, "PAGE_MASK is ~(PAGE_SIZE-1)")
  expect_eq(kernel.PAGE_MASK, ~(kernel.PAGE_SIZE - 1))
  expect_eq(kernel.mem.MAX_ORDER, 10)
end)

test("page_align rounds up and returns nil on overflow", function()
  expect_eq(kernel.page_align(0), 0)
  expect_eq(kernel.page_align(1), 4096)
  expect_eq(kernel.page_align(4096), 4096)
  expect_eq(kernel.page_align(4097), 8192)
  expect_eq(kernel.page_align(-4096), -4096, "2^64-4096 is aligned")
  expect_eq(kernel.page_align(-4095), nil)
  expect_eq(kernel.page_align(math.maxinteger), math.mininteger)
end)

test("gfp flags have the kernel's values", function()
  expect_eq(gfp.__GFP_ZERO, 0x100)
  expect_eq(gfp.__GFP_HIGHMEM, 0x02)
  expect_eq(gfp.__GFP_COMP, 0x40000)
  expect_eq(gfp.__GFP_NOWARN, 0x2000)
  expect_eq(gfp.GFP_KERNEL, 0x400 | 0x800 | 0x40 | 0x80)
  expect_eq(gfp.GFP_ATOMIC, 0x20 | 0x800)
  expect_eq(gfp.GFP_NOWAIT, 0x800 | 0x2000)
end)

test("alloc_page gives an order-0 page with its physical address", function()
  local p <close> = Page.alloc_page(gfp.GFP_KERNEL)
  expect_eq(p:size(), SIZE)
  expect_eq(p:order(), 0)
  expect_eq(p:phys(), p:pfn() << kernel.PAGE_SHIFT)
  expect_eq(p:nid(), 0)
  assert(p:phys() >= 0x100000, "RAM starts at 1 MiB")
  assert(tostring(p):match("^Page{pfn=0x%x+, order=0}$"), tostring(p))
  local q <close> = Page.alloc_page()
  assert(q:pfn() ~= p:pfn(), "two pages, two frames")
end)

test("__GFP_ZERO zeroes the page", function()
  local p = Page.alloc_page()
  p:write_raw(string.rep("\xff", SIZE), 0)
  kernel.drop(p)
  local z <close> = Page.alloc_page(gfp.GFP_KERNEL | gfp.__GFP_ZERO)
  expect_eq(z:read_raw(0, SIZE), string.rep("\0", SIZE))
end)

test("integers are little-endian and writes truncate to the width", function()
  local p <close> = Page.alloc_page(gfp.__GFP_ZERO)
  p:write_u64(0, 0x0807060504030201)
  expect_eq(p:read_raw(0, 8), "\1\2\3\4\5\6\7\8")
  expect_eq(p:read_u8(0), 1)
  expect_eq(p:read_u16(0), 0x0201)
  expect_eq(p:read_u32(0), 0x04030201)
  expect_eq(p:read_u64(0), 0x0807060504030201)
  p:write_u8(16, 0x1ff)
  expect_eq(p:read_u8(16), 0xff)
  p:write_u16(16, -1)
  expect_eq(p:read_u16(16), 0xffff)
  p:write_u32(16, 0x123456789)
  expect_eq(p:read_u32(16), 0x23456789)
  p:write_u64(16, -1)
  expect_eq(p:read_u64(16), -1, "u64 reads back in two's complement")
  expect_eq(p:read_u32(16), 0xffffffff, "u32 is unsigned")
  p:write_u64(SIZE - 8, 42)
  expect_eq(p:read_u64(SIZE - 8), 42, "the last 8 bytes")
end)

test("raw reads, writes and zero fill", function()
  local p <close> = Page.alloc_page()
  p:write_raw("hello", 100)
  expect_eq(p:read_raw(100, 5), "hello")
  p:fill_zero_raw(101, 3)
  expect_eq(p:read_raw(100, 5), "h\0\0\0o")
  expect_eq(p:read_raw(7, 0), "")
  p:write_raw(12345, 200)
  expect_eq(p:read_raw(200, 5), "12345", "numbers convert like Lua strings")
end)

-- off <= size and len <= size and off + len <= size, else EINVAL and nothing touched.
local edges = {
  {SIZE, 0, true}, {0, SIZE, true}, {SIZE - 1, 1, true}, {0, 0, true},
  {1, SIZE, false}, {SIZE + 1, 0, false}, {SIZE - 1, 2, false}, {0, SIZE + 1, false},
  {-1, 1, false}, {-1, 0, false}, {0, -1, false}, {-SIZE, SIZE, false},
  {math.maxinteger, 1, false}, {1, math.maxinteger, false}, {math.mininteger, 0, false},
}

test("bounds at exactly the size", function()
  local p <close> = Page.alloc_page(gfp.__GFP_ZERO)
  local before = p:read_raw(0, SIZE)
  for _, e in ipairs(edges) do
    local off, len, ok = e[1], e[2], e[3]
    local what = ("(%d, %d)"):format(off, len)
    if ok then
      expect_eq(#p:read_raw(off, len), len, what)
      p:fill_zero_raw(off, len)
      p:write_raw(string.rep("\0", len), off)
      expect_eq(p:with_pointer_into_page(off, len, function(ptr) return ptr:len() end), len, what)
    else
      local err = expect_error("EINVAL", p.read_raw, p, off, len)
      expect_eq(err.code, kernel.errno.EINVAL)
      expect_eq(err.bug, false)
      assert(err.message:find("exceeds the page %(4096%)"), err.message)
      expect_error("EINVAL", p.fill_zero_raw, p, off, len)
      if len >= 0 and len <= 2 * SIZE then
        expect_error("EINVAL", p.write_raw, p, string.rep("\xee", len), off)
      end
      local called = false
      expect_error("EINVAL", p.with_pointer_into_page, p, off, len, function() called = true end)
      assert(not called, "fn must not be called on EINVAL " .. what)
    end
  end
  expect_eq(p:read_raw(0, SIZE), before, "a rejected access touches nothing")
end)

test("integer accessors obey the same rule", function()
  local p <close> = Page.alloc_page(gfp.__GFP_ZERO)
  for _, w in ipairs{{"u8", 1}, {"u16", 2}, {"u32", 4}, {"u64", 8}} do
    local read, write, n = p["read_" .. w[1]], p["write_" .. w[1]], w[2]
    expect_eq(read(p, SIZE - n), 0)
    write(p, SIZE - n, 7)
    expect_error("EINVAL", read, p, SIZE - n + 1)
    expect_error("EINVAL", write, p, SIZE - n + 1, 1)
    expect_error("EINVAL", read, p, -1)
    expect_error("EINVAL", write, p, SIZE, 1)
    write(p, SIZE - n, 0)
  end
  expect_eq(p:read_raw(0, SIZE), string.rep("\0", SIZE))
end)

test("accounting follows allocation and drop", function()
  collectgarbage()
  local before = kernel.debug.live().Page or 0
  local pages = {}
  for i = 1, 32 do pages[i] = Page.alloc_page() end
  expect_eq(kernel.debug.live().Page, before + 32)
  for i = 1, 32 do kernel.drop(pages[i]) end
  expect_eq(kernel.debug.live().Page or 0, before)
end)
