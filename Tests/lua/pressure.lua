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
  -- GFP_KERNEL stops at the min watermark: 90 pages (128 pages is 8M,
  -- min_free_kbytes = sqrt(8192 * 16) = 362 kB).
  expect_eq(kernel.mem.zones()[1].min, 90)
  expect_eq(#keep, 2048 - 90)
  keep = nil
  collectgarbage()
  kernel.drop(Page.alloc_page())
end)

test("an atomic allocation does not reclaim", function()
  collectgarbage()
  local keep, gfp = {}, kernel.gfp
  for i = 1, 2048 - 90 do keep[i] = Page.alloc_page(gfp.GFP_KERNEL & ~gfp.__GFP_KSWAPD_RECLAIM) end
  -- GFP_ATOMIC digs below min (half of it, and a quarter of that: 90 -> 34);
  -- GFP_NOWAIT has no reserves.
  expect_error("ENOMEM", Page.alloc_page, gfp.GFP_NOWAIT)
  local atomic = {}
  while true do
    local ok, p = pcall(Page.alloc_page, gfp.GFP_ATOMIC & ~gfp.__GFP_KSWAPD_RECLAIM)
    if not ok then break end
    atomic[#atomic + 1] = p
  end
  -- The check sees the buddy pages only (the per-CPU lists may hold more).
  assert(kernel.mem.stats().free_pages <= 34 and #atomic > 0, kernel.mem.stats().free_pages)
  for i = 1, 100 do keep[i] = nil end  -- garbage, not yet collected
  expect_error("ENOMEM", Page.alloc_page, gfp.GFP_ATOMIC)
  kernel.drop(Page.alloc_page(gfp.GFP_KERNEL))  -- may sleep: the collector frees some
  keep, atomic = nil, nil
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
  -- Fill memory down to min without waking kswapd (gfp 0: no reclaim at all).
  while true do
    local ok, p = pcall(kernel.page.Page.alloc_page, 0)
    if not ok then break end
    cache[#cache + 1] = p
  end
  local s = kernel.mem.stats()
  expect_eq(#cache + s.free_pages + s.pcp_pages, 2048)
  assert(s.free_pages <= 90, s.free_pages)
  local filled = #cache
  local before = kernel.debug.stats().dropped_by_gc
  -- Direct reclaim: do_shrink_slab wants (1958 >> priority) * 4 / 2 plus
  -- the deferred work >> priority, from priority 12 down. Below a batch
  -- (128) nothing is scanned and the work is deferred: at priority 5,
  -- 122 + (112 >> 5) = 125 is still short; at 4, 244 + (234 >> 4) = 258
  -- makes two batches, and the 256 pages freed end the reclaim
  -- (SWAP_CLUSTER_MAX is 32).
  local p <close> = kernel.page.Page.alloc_page(kernel.gfp.GFP_KERNEL & ~kernel.gfp.__GFP_KSWAPD_RECLAIM)
  expect_eq(#calls, 2)
  expect_eq(calls[1], 128)
  expect_eq(calls[2], 128)
  expect_eq(#cache, filled - 256)
  expect_eq(kernel.mem.vmstat().slabs_scanned, 256)
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
  expect_error("unknown field 'batch'", kernel.mem.register_shrinker, {count = print, scan = print, batch = 2})
  expect_error("EINVAL: register_shrinker: seeks -1 is negative", kernel.mem.register_shrinker, {count = print, scan = print, seeks = -1})
  expect_error("table expected", kernel.mem.register_shrinker)
end)
