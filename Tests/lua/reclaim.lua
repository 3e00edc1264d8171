-- Reclaim as the kernel does it: kswapd, shrinkers under reclaim, the OOM killer.
kernel.boot{memory = "16M", cpus = 2}  -- 4096 pages: min 128, low 160, high 192
local Page, gfp, PAGE = kernel.page.Page, kernel.gfp, kernel.PAGE_SIZE

local function task(name)
  for _, t in ipairs(kernel.sched.tasks()) do if t.name == name then return t end end
end

-- A cache of pages as a shrinker: each object is a page.
local function cache(pages, options)
  local held = {}
  for i = 1, pages do held[i] = Page.alloc_page(0) end
  local spec = {name = "cache", count = function() return #held end,
    scan = function(n)
      local freed = 0
      while freed < n and #held > 0 do kernel.drop(table.remove(held)) freed = freed + 1 end
      return freed
    end}
  for k, v in pairs(options or {}) do spec[k] = v end
  return held, kernel.mem.register_shrinker(spec)
end

local function free() local s = kernel.mem.stats() return s.free_pages + s.pcp_pages end

test("kernel.gfp has the kernel's values (include/linux/gfp_types.h, without KASAN)", function()
  local want = {GFP_USER = 0x100cc0, GFP_HIGHUSER = 0x100cc2, GFP_HIGHUSER_MOVABLE = 0x100cca, GFP_NOIO = 0xc00,
    GFP_NOFS = 0xc40, GFP_KERNEL = 0xcc0, GFP_ATOMIC = 0x820, GFP_NOWAIT = 0x2800, __GFP_HIGH = 0x20,
    __GFP_MOVABLE = 0x8, __GFP_RECLAIMABLE = 0x10, __GFP_DIRECT_RECLAIM = 0x400, __GFP_KSWAPD_RECLAIM = 0x800,
    __GFP_NORETRY = 0x10000, __GFP_RETRY_MAYFAIL = 0x4000, __GFP_NOFAIL = 0x8000}
  for name, value in pairs(want) do expect_eq(gfp[name], value, name) end
  expect_eq(kernel.mem.SHRINK_STOP, -1)
end)

test("kswapd0 starts below the low watermark, reclaims to high from a shrinker, then sleeps; run() does not wait for it", function()
  local held, shrinker <close> = cache(1000)
  expect_eq(task("kswapd0"), nil)
  local keep = {}
  while not task("kswapd0") do keep[#keep + 1] = Page.alloc_page() end
  expect_eq(free(), 159, "the allocation that found 160 free (low) woke it, and took a page at min")
  assert(task("kswapd0").kthread)
  kernel.sched.run()  -- returns once kswapd sleeps
  expect_eq(task("kswapd0").state, "blocked")
  local zone, vm = kernel.mem.zones()[1], kernel.mem.vmstat()
  assert(zone.free > zone.high, ("balanced: %d free, high %d"):format(zone.free, zone.high))
  assert(vm.pageoutrun >= 1 and vm.slabs_scanned >= 128, vm.pageoutrun)
  expect_eq(vm.allocstall_normal, 0, "kswapd kept the allocations out of direct reclaim")
  assert(#held < 1000)
  for _, p in ipairs(keep) do kernel.drop(p) end
  for _, p in ipairs(held) do kernel.drop(p) end
end)

test("zoneinfo shows the watermarks, protection and per-CPU lists as /proc/zoneinfo does", function()
  local info = kernel.mem.zoneinfo()
  assert(info:find("^Node 0, zone   Normal\n  pages free     %d+\n        boost    0\n        min      128\n        low      160\n        high     192\n        promo    224\n        spanned  4096\n        present  4096\n        managed  4096\n        cma      0\n        protection: %(0%)\n      nr_free_pages %d+\n  pagesets\n    cpu: 0\n"), info)
  assert(info:find("\n  node_unreclaimable:  0\n  start_pfn:           256\n$"), info)
end)

test("a shrinker's SHRINK_STOP ends its pass; what it allocates ignores the watermarks; dropping it inside its scan is a bug", function()
  local calls, got, dropped = 0
  local held = {}
  for i = 1, 200 do held[i] = Page.alloc_page(0) end
  local s
  s = kernel.mem.register_shrinker{name = "stopper", count = function() return 1000 end,
    scan = function(n)
      calls = calls + 1
      got = got or {Page.alloc_page(), free()}  -- reclaim's own allocation: below min, no recursion
      dropped = dropped or select(2, pcall(kernel.drop, s))
      return kernel.mem.SHRINK_STOP
    end}
  local keep = {}
  while true do
    local ok, p = pcall(Page.alloc_page, gfp.GFP_KERNEL & ~gfp.__GFP_KSWAPD_RECLAIM | gfp.__GFP_RETRY_MAYFAIL)
    if not ok then break end
    keep[#keep + 1] = p
  end
  assert(calls >= 1)
  assert(got[2] <= 128, "allocated at or below min: " .. got[2])
  expect_eq(tostring(dropped), "BUG: shrinker_free of Shrinker{stopper} from inside its own count or scan: it waits for that call to return, which never happens")
  kernel.drop(got[1])
  kernel.drop(s)
  for _, p in ipairs(keep) do kernel.drop(p) end
  for _, p in ipairs(held) do kernel.drop(p) end
end)

test("a shrinker returning garbage frees nothing and warns; seeks 0 trims half at once", function()
  local bad <close> = kernel.mem.register_shrinker{name = "bad", count = function() return "lots" end, scan = function() return 0 end}
  local held, half <close> = cache(600, {name = "half", seeks = 0})
  local keep = {}
  while free() > 128 do keep[#keep + 1] = Page.alloc_page(0) end
  local p <close> = Page.alloc_page(gfp.GFP_KERNEL & ~gfp.__GFP_KSWAPD_RECLAIM)  -- direct reclaim at priority 12
  expect_eq(#held, 600 - 256, "seeks 0: 300 wanted, two batches of 128")
  for _, q in ipairs(keep) do kernel.drop(q) end
  for _, q in ipairs(held) do kernel.drop(q) end
end)

test("the OOM killer kills the process oom_badness picks; join says so; the others go on", function()
  local ready, go = kernel.sched.Completion(), kernel.sched.Completion()
  local function hog(pages)
    return function()
      local me = kernel.current():mm()
      local addr = me:mmap{len = pages * PAGE}
      for i = 0, pages - 1 do kernel.uaccess.UserSlice(me, addr + i * PAGE, 1):writer():write_raw("x") end
      ready:complete()
      go:wait_for_completion()
      return pages
    end
  end
  local tasks = {}
  for _, p in ipairs{{"small", 500, 0}, {"big", 900, 0}, {"adjusted", 300, 400}, {"protected", 1200, -1000}} do
    local mm <close> = kernel.mm.mm_alloc()
    tasks[p[1]] = kernel.sched.spawn(hog(p[2]), {name = p[1], mm = mm, oom_score_adj = p[3]})
  end
  for _ = 1, 4 do ready:wait_for_completion() end
  local t = tasks
  assert(t.adjusted:oom_score() > t.big:oom_score() and t.big:oom_score() > t.small:oom_score(), "300 pages + 400 * 4 outweighs 900")
  expect_eq(t.protected:oom_score(), 0)
  expect_eq(t.protected:oom_score_adj(), -1000)
  local keep = {}
  for i = 1, 1200 do keep[i] = Page.alloc_page() end  -- more than is left: one kill makes room
  expect_eq(kernel.mem.vmstat().oom_kill, 1)
  go:complete_all()
  kernel.sched.run()  -- a kill is no failure of the run
  expect_eq(t.adjusted:state(), "killed")
  expect_eq(select(2, pcall(t.adjusted.join, t.adjusted)), "task 'adjusted' was killed by the OOM killer")
  expect_eq(t.big:join(), 900)
  expect_eq(t.protected:join(), 1200)
  for _, p in ipairs(keep) do kernel.drop(p) end
end)

test("with no process to kill, the allocation fails as the kernel reports it", function()
  local keep = {}
  local ok, err
  repeat
    ok, err = pcall(Page.alloc_page)
    keep[#keep + 1] = ok and err or nil
  until not ok
  expect_eq(tostring(err):match("^ENOMEM: page allocation failure: order:0, mode:0xcc0%(GFP_KERNEL%) %(Normal free:%d+ min:128%)$") ~= nil, true, tostring(err))
  for _, p in ipairs(keep) do kernel.drop(p) end
end)

test("spawn checks oom_score_adj", function()
  local err = expect_error("EINVAL", kernel.sched.spawn, print, {oom_score_adj = -1001})
  expect_eq(tostring(err), "EINVAL: oom_score_adj -1001 is outside -1000 ... 1000")
end)

test("anonymous memory comes from Movable pageblocks, page tables and GFP_KERNEL pages from Unmovable ones", function()
  local before = kernel.mem.zones()[1].pageblocks
  expect_eq(before.Movable, 8)
  expect_eq(before.Unmovable, 0)
  local u <close> = kernel.mm.mm_alloc()  -- its page tables: GFP_KERNEL, Unmovable
  local addr = u:mmap{len = 64 * PAGE}
  for i = 0, 63 do kernel.uaccess.UserSlice(u, addr + i * PAGE, 1):writer():write_raw("x") end
  local anon = u:follow_page(addr):pfn()
  expect_eq(kernel.mem.pageblock_type(anon), "Movable")
  local z = kernel.mem.zones()[1]
  expect_eq(z.pageblocks.Unmovable, 2, "the first Unmovable allocation claimed a max-order block: two pageblocks")
  expect_eq(kernel.mem.pageblock_type(0x400), "Unmovable")
  expect_eq(z.free_area[9].Unmovable, 1)
  assert(kernel.mem.pagetypeinfo():find("\nNode 0, zone   Normal            2            6            0            0 \n$"), kernel.mem.pagetypeinfo())
  expect_error("EINVAL", kernel.mem.pageblock_type, 0x5000)
end)
