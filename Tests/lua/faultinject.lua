-- fail_page_alloc: the kernel's fault injection, drawn from the seed.
local Page = kernel.page.Page
local fail = kernel.mem.fail_page_alloc

-- Allocates n pages (order `order`, flags `gfp`); returns "x" for each failure and "." for each success.
local function pattern(n, order, gfp)
  local out = {}
  for i = 1, n do
    local ok, p = pcall(Page.alloc_pages, gfp or kernel.gfp.GFP_KERNEL, order or 0)
    if ok then kernel.drop(p) out[i] = "." else
      expect_eq(p.errno, "ENOMEM")
      assert(p.message:find("fail_page_alloc"), p.message)
      out[i] = "x"
    end
  end
  return table.concat(out)
end

test("times counts failures down", function()
  fail{times = 3}
  expect_eq(pattern(6), "xxx...")
  expect_eq(fail(nil), 3, "turning it off reports the failures injected")
  expect_eq(pattern(3), "...")
end)

test("interval fails every interval-th eligible allocation", function()
  fail{interval = 3}
  expect_eq(pattern(9), "..x..x..x")
  fail(nil)
end)

test("min_order spares smaller orders", function()
  fail{min_order = 2}
  expect_eq(pattern(3, 0), "...")
  expect_eq(pattern(3, 1), "...")
  expect_eq(pattern(3, 2), "xxx")
  fail(nil)
end)

test("probability draws from the seed", function()
  fail{probability = 0}
  expect_eq(pattern(20), string.rep(".", 20))
  fail{probability = 50}
  local a = pattern(40)
  assert(a:find("x") and a:find("%."), a)
  fail(nil)
end)

test("space lets pages through first", function()
  fail{space = 3, times = 2}
  -- Each order-0 allocation uses one page of space while space > 1.
  expect_eq(pattern(6), "..xx..")
  fail(nil)
end)

test("__GFP_NOFAIL never fails; the ignore knobs spare their flags", function()
  fail{}
  expect_eq(pattern(3, 0, kernel.gfp.GFP_KERNEL | kernel.gfp.__GFP_NOFAIL), "...")
  fail{ignore_gfp_reclaim = true}
  expect_eq(pattern(2, 0, kernel.gfp.GFP_KERNEL), "..")
  expect_eq(pattern(2, 0, kernel.gfp.GFP_ATOMIC), "xx")
  fail{ignore_gfp_highmem = true}
  expect_eq(pattern(2, 0, kernel.gfp.GFP_KERNEL | kernel.gfp.__GFP_HIGHMEM), "..")
  expect_eq(pattern(2, 0, kernel.gfp.GFP_KERNEL), "xx")
  fail(nil)
end)

test("an injected failure is final: no reclaim, no retry", function()
  for i = 1, 100 do Page.alloc_page() end  -- garbage the collector could free
  fail{times = 1}
  expect_error("fail_page_alloc", Page.alloc_page)
  fail(nil)
end)

test("bad settings are EINVAL or argument errors", function()
  expect_error("EINVAL", fail, {probability = 101})
  expect_error("EINVAL", fail, {probability = -1})
  expect_error("EINVAL", fail, {interval = 0})
  expect_error("EINVAL", fail, {times = -2})
  expect_error("EINVAL", fail, {space = -1})
  expect_error("EINVAL", fail, {min_order = 12})
  expect_error("unknown field 'probabilty'", fail, {probabilty = 5})
  expect_error("field 'times': integer expected", fail, {times = "x"})
  expect_error("table expected, got number", fail, 5)
  expect_eq(pattern(2), "..", "a rejected setting leaves injection off")
end)

test("a write fault whose page table cannot grow fails with EFAULT and keeps no page", function()
  local u <close> = kernel.mm.mm_alloc()
  local a = u:mmap{len = 4096}
  local before = kernel.mem.stats()
  -- The fault allocates the data page first, then the tables below the PGD:
  -- the second allocation fails.
  fail{interval = 2, times = 1}
  local e = expect_error("EFAULT", function() kernel.uaccess.UserSlice(u, a, 4):writer():write_raw("abcd") end)
  assert(e.message:find("the page fault failed"), e.message)
  fail(nil)
  local after = kernel.mem.stats()
  expect_eq(after.free_pages + after.pcp_pages, before.free_pages + before.pcp_pages, "the data page went back")
  kernel.uaccess.UserSlice(u, a, 4):writer():write_raw("abcd")
  expect_eq(kernel.uaccess.UserSlice(u, a, 4):reader():read_raw(4), "abcd", "the next fault works")
end)
