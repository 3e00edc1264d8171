-- Native memory pressure reaches the collector.
kernel.boot{memory = "8M"}  -- 2048 pages
local Page = kernel.page.Page

test("unreferenced pages never cause ENOMEM while the collector could free them", function()
  for i = 1, 20000 do
    local p = Page.alloc_page()
    p:write_u8(0, i & 0xff)
  end
  for i = 1, 2000 do Page.alloc_pages(0, 3) end
  assert(kernel.debug.stats().dropped_by_gc > 18000)
end)

test("pressure keeps memory from filling up before an allocation fails", function()
  collectgarbage()
  local lowest = math.huge
  for i = 1, 5000 do
    Page.alloc_page()
    local s = kernel.mem.stats()
    lowest = math.min(lowest, s.free_pages + s.pcp_pages)
  end
  assert(lowest > 0, "memory ran out: the collector only ran when allocation failed")
end)

test("pages that are kept still run out, with ENOMEM", function()
  collectgarbage()
  local keep, ok, err = {}
  ok, err = pcall(function() while true do keep[#keep + 1] = Page.alloc_page() end end)
  expect_eq(ok, false)
  expect_eq(err.errno, "ENOMEM")
  expect_eq(#keep, 2048)
  keep = nil
  collectgarbage()
  kernel.drop(Page.alloc_page())
end)

test("an atomic allocation does not reclaim", function()
  collectgarbage()
  local keep = {}
  for i = 1, 2048 do keep[i] = Page.alloc_page() end
  for i = 1, 100 do keep[i] = nil end  -- garbage, not yet collected
  expect_error("ENOMEM", Page.alloc_page, kernel.gfp.GFP_ATOMIC)
  expect_error("ENOMEM", Page.alloc_page, kernel.gfp.GFP_NOWAIT)
  kernel.drop(Page.alloc_page(kernel.gfp.GFP_KERNEL))  -- may sleep: the collector frees some
  keep = nil
end)
