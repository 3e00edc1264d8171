-- Benchmarks run by scripts/bench: each row measures mmlab and its baseline
-- in the same run and prints the ratio against its target.
-- Usage: MMLAB=mmlab MMBENCH=mmbench mmlab Benchmarks/bench.lua [N] [--json]
-- (MMBENCH, the native rows' tool, is Benchmarks/MMBench.)
local floor = require "floor"
local N, json = 2000000, false
for _, a in ipairs(arg) do
  if a == "--json" then json = true else N = math.tointeger(tonumber(a)) or N end
end
local ROUNDS = 7

-- ns per iteration of a(N) and b(N), best of ROUNDS each, interleaved.
local function pair(a, b)
  local best_a, best_b = math.huge, math.huge
  for _ = 1, ROUNDS do
    local t0 = os.clock() a(N) local t1 = os.clock() b(N) local t2 = os.clock()
    best_a = math.min(best_a, t1 - t0)
    best_b = math.min(best_b, t2 - t1)
  end
  return best_a / N * 1e9, best_b / N * 1e9
end

local rows = {}
-- `ours` and `base` in `unit`; `ok` says whether the target is met.
local function row(t) rows[#rows + 1] = t end

-- A binding call: p:read_u8(0) against the C floor's b:read_u8(0).
do
  local p <close> = kernel.page.Page.alloc_page()
  local b = floor.new()
  local ours, base = pair(
    function(n) for _ = 1, n do p:read_u8(0) end end,
    function(n) for _ = 1, n do b:read_u8(0) end end)
  local empty = pair(function(n) for _ = 1, n do end end, function(n) for _ = 1, n do end end)
  for _, r in ipairs{{"p:read_u8(0) vs C lua_CFunction", ours, base},
                     {"  the same, loop cost removed", ours - empty, base - empty}} do
    row{name = r[1], ours = r[2], base = r[3], unit = "ns", ratio = r[2] / r[3], target = "<= 1.2x",
        ok = r[2] / r[3] <= 1.2}
  end
  floor.free(b)
end

-- A new handle: Page.alloc_page + kernel.drop against the C floor's
-- userdata over a malloc'd 4 KiB block, freed. Ours also takes a page from
-- the buddy allocator (and checks its poison; a page nobody touched keeps
-- it on free), records where the script created and dropped it, and counts
-- it in kernel.debug.
do
  local alloc, drop = kernel.page.Page.alloc_page, kernel.drop
  local new, free = floor.new, floor.free
  local saved = N
  N = N // 4
  local ours, base = pair(
    function(n) for _ = 1, n do drop(alloc()) end end,
    function(n) for _ = 1, n do free(new()) end end)
  N = saved
  row{name = "new handle: alloc_page+drop vs C userdata", ours = ours, base = base, unit = "ns",
      ratio = ours / base, target = "<= 2x", ok = ours / base <= 2}
end

-- Order-0 pages in MMCore alone (Benchmarks/MMBench): with page_poison (the
-- default: PAGE_POISON written on free, checked on allocation; a byte of
-- each page written, or the free would have no poison to rewrite) against
-- malloc+memcmp+write+memset+free, and without it (page_poison = false)
-- against malloc+free.
do
  local mmbench = assert(os.getenv("MMBENCH"), "set MMBENCH to the mmbench binary")
  local out = assert(io.popen(("%q pages %d"):format(mmbench, N // 2))):read("a")
  local poisoned, memset_free, plain, malloc_free = out:match("^pages (%S+) (%S+) (%S+) (%S+)")
  poisoned, memset_free = assert(tonumber(poisoned), out), tonumber(memset_free)
  plain, malloc_free = tonumber(plain), tonumber(malloc_free)
  row{name = "order-0 alloc+free vs malloc(4096)+free", ours = plain, base = malloc_free, unit = "ns",
      ratio = plain / malloc_free, target = "<= 1.5x", ok = plain / malloc_free <= 1.5}
  row{name = "  with page_poison vs malloc+check+memset", ours = poisoned, base = memset_free, unit = "ns",
      ratio = poisoned / memset_free, target = "<= 1.5x", ok = poisoned / memset_free <= 1.5}
end

-- Resident memory: a 64 GiB machine with a page allocated, against the
-- engine alone, measured in a child process.
do
  local mmlab = assert(os.getenv("MMLAB"), "set MMLAB to the mmlab binary")
  local out = assert(io.popen(("%q -E Benchmarks/resident.lua 64G"):format(mmlab))):read("a")
  local before, after = out:match("(%d+)%s+(%d+)")
  before, after = tonumber(before) / 1024, tonumber(after) / 1024
  row{name = "resident: 64 GiB machine + 1 page", ours = after, base = before, unit = "MiB",
      ratio = after / before, target = "<= 64 MiB", ok = after <= 64}
end

-- Allocations under pressure: Benchmarks/pressure.lua's 400000 GFP_KERNEL
-- allocations into a shrinker's cache on 32 MiB (8192 pages), where
-- kswapd0 and direct reclaim keep memory coming, against the same on
-- 2 GiB, where nothing reclaims. Allocations per second; the ratio is
-- what reclaim costs.
do
  local mmlab = assert(os.getenv("MMLAB"), "set MMLAB to the mmlab binary")
  local function rate(memory)
    local best, runs, stalls = 0, 0, 0
    for _ = 1, 3 do
      local out = assert(io.popen(("%q -E Benchmarks/pressure.lua %s 400000"):format(mmlab, memory))):read("a")
      local r, pageoutrun, allocstall = out:match("^pressure (%d+) (%d+) (%d+)")
      best, runs, stalls = math.max(best, (assert(tonumber(r), out))), tonumber(pageoutrun), tonumber(allocstall)
    end
    return best, runs, stalls
  end
  local ours, runs = rate("32M")
  local base, idle = rate("2G")
  assert(runs > 0 and idle == 0, "kswapd ran under pressure only")
  row{name = "allocs/s under reclaim (32M) vs none (2G)", ours = ours / 1000, base = base / 1000, unit = "k/s",
      ratio = base / ours, target = "<= 3x slower", ok = base / ours <= 3}
end

-- Start-up: `mmlab -e ''` against `lua5.4 -e ''`, wall time, best of 30
-- launches each. A Swift runtime costs a few milliseconds to load.
do
  local mmbench = assert(os.getenv("MMBENCH"), "set MMBENCH to the mmbench binary")
  local mmlab = assert(os.getenv("MMLAB"), "set MMLAB to the mmlab binary")
  local out = assert(io.popen(("%q startup 30 %q -e '' -- lua5.4 -e ''"):format(mmbench, mmlab))):read("a")
  local ours, base = out:match("^startup (%d+) (%d+)")
  ours, base = assert(tonumber(ours), out) / 1e6, tonumber(base) / 1e6
  row{name = "start-up: mmlab -e '' vs lua5.4 -e ''", ours = ours, base = base, unit = "ms",
      ratio = ours / base, target = "<= 3x", ok = ours / base <= 3}
end

-- drm_mm insert+remove (best fit) with 10^3 and with 10^6 nodes in the
-- allocator, as many holes between them: O(log n) keeps the second within 2x.
do
  local function cost(count)
    local a = kernel.drm_mm.Allocator(0, 1 << 48)
    local keep = {}
    math.randomseed(count)
    for i = 1, 2 * count do keep[i] = a:insert_node(math.random(1, 64) << 12, {mode = "low"}) end
    for i = 2, 2 * count, 2 do kernel.drop(keep[i]) keep[i] = false end  -- count nodes, count holes
    local ops, best = 200000, math.huge
    for _ = 1, 3 do
      local t0 = os.clock()
      for _ = 1, ops do kernel.drop(a:insert_node(math.random(1, 64) << 12)) end
      best = math.min(best, os.clock() - t0)
    end
    for i = 1, 2 * count, 2 do kernel.drop(keep[i]) end
    return best / ops * 1e9
  end
  local small = cost(1000)
  local large = cost(1000000)
  row{name = "drm_mm insert+remove, 10^6 vs 10^3 nodes", ours = large, base = small, unit = "ns",
      ratio = large / small, target = "<= 2x", ok = large / small <= 2}
end

-- drm_mm against the kernel's own: the oracle's workload (Tests/Oracle/
-- drm_mm/bench.c: remove a random node, insert one of 1-64 pages, in
-- [0, 2^40)) through drivers/gpu/drm/drm_mm.c compiled here from
-- linux-source-6.12, through MMCore (mmbench) and from Lua
-- (Benchmarks/drm_mm.lua), in the same order: the placements' sums must
-- be the kernel's. ns per remove+insert pair, best of 3 rounds.
do
  local mmbench = assert(os.getenv("MMBENCH"), "set MMBENCH to the mmbench binary")
  local mmlab = assert(os.getenv("MMLAB"), "set MMLAB to the mmlab binary")
  local kernel_bench = assert(os.getenv("KERNEL_DRM_MM"), "set KERNEL_DRM_MM to the oracle's bench")
  local function run(command)
    local out = assert(io.popen(command)):read("a")
    local ns, sums = out:match("^drm_mm %S+ %d+ (%S+) (fill_sum=%d+ sum=%d+) fails=0")
    return assert(tonumber(ns), command .. ": " .. out), sums
  end
  for _, n in ipairs{1000, 1000000} do
    local pairs = n == 1000 and (N // 4) or (N // 10)
    for _, mode in ipairs{"best", "low", "high"} do
      local args = ("%s %d %d 3"):format(mode, n, pairs)
      local base, sums = run(("%q %s"):format(kernel_bench, args))
      local native, native_sums = run(("%q drm_mm %s"):format(mmbench, args))
      local lua, lua_sums = run(("%q -E Benchmarks/drm_mm.lua %s"):format(mmlab, args))
      local size = n == 1000 and "10^3" or "10^6"
      local lua_target = n == 1000 and 3 or 1.5
      row{name = ("drm_mm %s %s vs kernel drm_mm.c"):format(mode, size), ours = native, base = base, unit = "ns",
          ratio = native / base, target = "<= 1.5x", ok = native / base <= 1.5 and native_sums == sums,
          note = native_sums ~= sums and "placements differ" or nil}
      row{name = "  the same from Lua", ours = lua, base = base, unit = "ns", ratio = lua / base,
          target = ("<= %gx"):format(lua_target), ok = lua / base <= lua_target and lua_sums == sums,
          note = lua_sums ~= sums and "placements differ" or nil}
    end
  end
end

-- Binder buffers: new_buf+free of 256 bytes, per second, against the C
-- floor's userdata over a malloc'd block and its free.
do
  local receiver = kernel.mm.mm_alloc()
  local alloc = kernel.binder.Alloc(receiver, 4 << 20)
  local new, free = floor.new, floor.free
  local saved = N
  N = N // 10
  local ours, base = pair(
    function(n) for _ = 1, n do kernel.drop(alloc:new_buf{data_size = 256}) end end,
    function(n) for _ = 1, n do free(new()) end end)
  N = saved
  row{name = "binder new_buf+free (256 B)/s vs C userdata", ours = 1e9 / ours, base = 1e9 / base, unit = "/s",
      ratio = base / ours, target = "report", ok = true}
  kernel.drop(alloc)
  kernel.drop(receiver)
end

-- Binder transactions: new_buf, the one copy from the sender's user memory,
-- free; against copying the same bytes from user memory into a page.
do
  local size = 512
  local sender, receiver = kernel.mm.mm_alloc(), kernel.mm.mm_alloc()
  local alloc = kernel.binder.Alloc(receiver, 4 << 20)
  local from = sender:mmap{len = 4096}
  kernel.uaccess.UserSlice(sender, from, size):writer():write_raw(("x"):rep(size))
  local page <close> = kernel.page.Page.alloc_page()
  local n = N // 20
  local saved = N
  N = n
  local ours, base = pair(
    function(k)
      for _ = 1, k do
        local b = alloc:new_buf{data_size = size}
        b:copy_into(kernel.uaccess.UserSlice(sender, from, size):reader(), 0, size)
        kernel.drop(b)
      end
    end,
    function(k)
      for _ = 1, k do page:copy_from_user_slice_raw(kernel.uaccess.UserSlice(sender, from, size):reader(), 0, size) end
    end)
  N = saved
  row{name = ("binder transactions/s (%d B)"):format(size), ours = 1e9 / ours, base = 1e9 / base, unit = "/s",
      ratio = base / ours, target = "report", ok = true}
  kernel.drop(alloc)
end

-- Exploration (mmlab explore): for each bug of examples/races, the runs to
-- the first failure under random and pct (median of 20 exploration seeds)
-- and dfs (one search), the ratio random/pct, and the shrunk schedule's
-- preemptions; then schedules per second against a shell loop of plain runs.
do
  local mmlab = assert(os.getenv("MMLAB"), "set MMLAB to the mmlab binary")
  local tmp = os.tmpname()
  os.remove(tmp)
  local function explore(args)
    local out = assert(io.popen(("%q explore --stop-at-first --runs 5000 --jobs 1 --json --out %q %s"):format(mmlab, tmp, args))):read("a")
    local first = tonumber(out:match('"first_run": (%d+)'))
    -- Run 0 is the default schedule, which every strategy runs first.
    return first and math.max(first, 1), tonumber(out:match('"preemptions": (%d+)'))
  end
  local function median(t)
    table.sort(t)
    return (t[(#t + 1) // 2] + t[#t // 2 + 1]) / 2
  end
  for _, bug in ipairs{"abba", "percpu_rmw", "shrinker_lock", "teardown_mmget", "vma_after_guard"} do
    local script = "examples/races/" .. bug .. ".lua"
    local firsts = {random = {}, pct = {}}
    for seed = 0, 19 do
      for strategy, t in pairs(firsts) do
        t[#t + 1] = assert(explore(("--strategy %s --seed %d %s"):format(strategy, seed, script)), bug .. " not found")
      end
    end
    local dfs, preemptions = explore("--strategy dfs " .. script)
    local random, pct = median(firsts.random), median(firsts.pct)
    row{name = ("races/%s: runs to 1st failure, pct vs random"):format(bug), ours = pct, base = random, unit = "",
        ratio = random / pct, target = "report", ok = true,
        note = ("dfs %d schedules, shrunk to %d preemption%s"):format(dfs, preemptions, preemptions == 1 and "" or "s")}
  end
  local mmbench = assert(os.getenv("MMBENCH"), "set MMBENCH to the mmbench binary")
  local script = "examples/races/abba.lua"
  local count = assert(io.popen(("%q explore --strategy dfs --jobs 1 --json --out %q %s fixed"):format(mmlab, tmp, script))):read("a")
  local schedules = assert(tonumber(count:match('"runs": (%d+)')))
  -- The baseline: a shell loop running the script as many times, one process each.
  local loop = tmp .. ".sh"
  local f = assert(io.open(loop, "w"))
  f:write(("i=0\nwhile [ $i -lt %d ]; do '%s' %s fixed >/dev/null || exit 1; i=$((i + 1)); done\n"):format(schedules, mmlab, script))
  f:close()
  local out = assert(io.popen(("%q startup 3 %q explore --strategy dfs --jobs 1 --out %q %s fixed -- sh %q")
    :format(mmbench, mmlab, tmp, script, loop))):read("a")
  os.remove(loop)
  local ours, base = out:match("^startup (%d+) (%d+)")
  ours, base = schedules / (assert(tonumber(ours), out) / 1e9), schedules / (tonumber(base) / 1e9)
  row{name = "explore schedules/s (dfs, abba) vs plain runs", ours = ours, base = base, unit = "/s",
      ratio = ours / base, target = "report", ok = true}
  os.execute(("rm -rf %q"):format(tmp))
end

if json then
  local items = {}
  for _, r in ipairs(rows) do
    items[#items + 1] = ('{"name": %q, "mmlab": %.2f, "baseline": %.2f, "unit": %q, "ratio": %.3f, "target": %q, "met": %s}')
      :format(r.name:gsub("^%s+", ""), r.ours, r.base, r.unit, r.ratio, r.target, tostring(r.ok))
  end
  print("[" .. table.concat(items, ",\n ") .. "]")
else
  print(("%-42s %12s %12s %8s %11s"):format("benchmark", "mmlab", "baseline", "ratio", "target"))
  for _, r in ipairs(rows) do
    print(("%-42s %9.1f%-3s %9.1f%-3s %7.2fx %11s  %s%s"):format(r.name, r.ours, r.unit, r.base, r.unit,
      r.ratio, r.target, r.ok and "ok" or "MISSED", r.note and " (" .. r.note .. ")" or ""))
  end
end
