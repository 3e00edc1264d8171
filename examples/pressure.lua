-- pressure: watermarks, kswapd, direct reclaim and the OOM killer
--
-- What it shows: three processes fault in anonymous memory at different
-- rates while a Binder receiver keeps pages on its LRU. As free memory
-- falls through the zone's low watermark, an allocation wakes kswapd0,
-- which calls the shrinkers (Binder's gives back its LRU pages) until
-- free memory is above high again, and sleeps. Once nothing is left to
-- reclaim, free memory falls to min: the allocating task reclaims
-- directly (an allocation stall), and when that frees nothing the OOM
-- killer kills the process with the highest oom_badness, here the one
-- whose oom_score_adj outweighs a bigger RSS, and the reaper frees its
-- memory for the others.
-- What to look at: the samples where free memory crosses the watermarks,
-- the vmstat counters, and the OOM report the kernel prints on stderr.
-- Writes: pressure-free.svg (free pages against min, low and high, by
-- sample) with --out DIR; the samples with --results FILE.
--
-- Usage: mmlab examples pressure
kernel.boot{memory = "32M", cpus = 2}
local mm, sched, uaccess = kernel.mm, kernel.sched, kernel.uaccess
local PAGE = kernel.PAGE_SIZE

local zone = kernel.mem.zones()[1]
print(("Normal: %d pages; watermarks min %d, low %d, high %d"):format(zone.managed, zone.min, zone.low, zone.high))

-- The Binder receiver: 600 pages of transactions it has read, on the LRU.
local receiver = mm.mm_alloc()
local alloc = kernel.binder.Alloc(receiver, 4 << 20)
do
  local buffers = {}
  for i = 1, 75 do
    buffers[i] = alloc:new_buf{data_size = 8 * PAGE, pid = 1}
    buffers[i]:write(0, "transaction")
  end
  for _, b in ipairs(buffers) do b:free() end
end
print(("binder: %d pages on the LRU"):format(kernel.binder.lru_count()))

-- Three processes, each a task faulting in `pages` pages, `rate` per
-- step, then keeping them until every process is done.
local finished = sched.Completion()
local processes = {
  {name = "web", pages = 2400, rate = 24, adj = 0},
  {name = "db", pages = 4200, rate = 16, adj = 0},
  {name = "batch", pages = 1600, rate = 8, adj = 500},  -- oom_score_adj 500: killed first
}
for _, p in ipairs(processes) do
  local space <close> = mm.mm_alloc()  -- the task holds its own user
  p.task = sched.spawn(function()
    local me = kernel.current():mm()
    local addr = me:mmap{len = p.pages * PAGE}
    for i = 0, p.pages - 1 do
      uaccess.UserSlice(me, addr + i * PAGE, 1):writer():write_raw("x")
      if i % p.rate == p.rate - 1 then sched.yield() end
    end
    p.faulted = true
    finished:wait_for_completion()
    return p.pages
  end, {name = p.name, mm = space, oom_score_adj = p.adj})
end

-- Sample while they run: free pages, the watermarks, what reclaim did.
local samples, events, last = 0, {}, {}
local function sample()
  local z, vm = kernel.mem.zones()[1], kernel.mem.vmstat()
  samples = samples + 1
  kernel.results.record{sample = samples, free = z.free, min = z.min, low = z.low, high = z.high,
                        lru = kernel.binder.lru_count(), pageoutrun = vm.pageoutrun,
                        allocstall = vm.allocstall_movable, oom_kill = vm.oom_kill}
  local function once(key, happened, text)
    if happened and not last[key] then
      last[key] = true
      events[#events + 1] = ("sample %4d: %s (free %d)"):format(samples, text, z.free)
    end
  end
  once("low", z.free <= z.low, "free memory at the low watermark")
  once("kswapd", vm.pageoutrun > 0, "kswapd0 runs balance_pgdat")
  once("lru", kernel.binder.lru_count() == 0, "binder's shrinker gave back every LRU page")
  once("stall", vm.allocstall_movable > 0, "a task stalls in direct reclaim")
  once("oom", vm.oom_kill > 0, "the OOM killer killed a process")
end

local function faulting()
  for _, p in ipairs(processes) do
    if not p.faulted and p.task:state() ~= "killed" then return true end
  end
end
while faulting() do
  sample()
  sched.yield()
end
sample()
finished:complete_all()
sched.run()

for _, e in ipairs(events) do print(e) end
for _, p in ipairs(processes) do
  local ok, result = pcall(p.task.join, p.task)
  print(("%-6s oom_score_adj %4d: %s"):format(p.name, p.adj, ok and ("faulted in " .. result .. " pages") or result))
end
local vm = kernel.mem.vmstat()
for _, name in ipairs{"pgalloc_normal", "pgfree", "allocstall_normal", "allocstall_movable", "slabs_scanned",
                      "pageoutrun", "kswapd_low_wmark_hit_quickly", "kswapd_high_wmark_hit_quickly", "oom_kill"} do
  print(("%-30s %d"):format(name, vm[name]))
end

kernel.plot.line{file = "pressure-free.svg", title = "Free pages against the watermarks", x = "sample",
                 y = {"free", "min", "low", "high"}, xlabel = "sample", ylabel = "pages"}
kernel.drop(alloc)
