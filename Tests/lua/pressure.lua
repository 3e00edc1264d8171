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

test("a registered shrinker runs before the collector, and frees in batches", function()
  collectgarbage()
  local cache, calls = {}, {}
  local s <close> = kernel.mem.register_shrinker{name = "cache",
    count = function() return #cache end,
    scan = function(n)
      calls[#calls + 1] = n
      local freed = 0
      while freed < n and #cache > 0 do kernel.drop(table.remove(cache)) freed = freed + 1 end
      return freed
    end}
  assert(tostring(s):match("^Shrinker{cache}$"), tostring(s))
  while true do
    local ok, p = pcall(kernel.page.Page.alloc_page, kernel.gfp.GFP_NOWAIT)
    if not ok then break end
    cache[#cache + 1] = p
  end
  local before = kernel.debug.stats().dropped_by_gc
  local p <close> = kernel.page.Page.alloc_page()  -- may reclaim: the shrinker gives back a batch
  expect_eq(#calls, 1)
  expect_eq(calls[1], 128)
  expect_eq(#cache, 2048 - 128)
  expect_eq(kernel.debug.stats().dropped_by_gc, before, "the collector did not need to run")
  for _, q in ipairs(cache) do kernel.drop(q) end
  cache = {}
end)

test("a dropped shrinker is not called again; a failing one warns and frees nothing", function()
  local called = 0
  local s = kernel.mem.register_shrinker{count = function() called = called + 1 return 0 end, scan = function() return 0 end}
  kernel.drop(s)
  local bad <close> = kernel.mem.register_shrinker{count = function() error("broken cache") end, scan = function() return 0 end}
  local keep = {}
  while true do
    local ok, p = pcall(kernel.page.Page.alloc_page)
    if not ok then expect_eq(p.errno, "ENOMEM") break end
    keep[#keep + 1] = p
  end
  expect_eq(called, 0)
  for _, p in ipairs(keep) do kernel.drop(p) end
end)

test("register_shrinker wants both functions", function()
  expect_error("field 'count': function expected, got nil", kernel.mem.register_shrinker, {scan = print})
  expect_error("field 'scan': function expected, got number", kernel.mem.register_shrinker, {count = print, scan = 1})
  expect_error("unknown field 'seeks'", kernel.mem.register_shrinker, {count = print, scan = print, seeks = 2})
  expect_error("table expected", kernel.mem.register_shrinker)
end)
