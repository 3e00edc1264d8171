-- The pressure row's workload (scripts/bench): N order-0 GFP_KERNEL
-- allocations into a page cache that a shrinker gives back, yielding
-- every 64 so kswapd0 runs. On a machine of MEMORY that is short of N
-- pages, kswapd and direct reclaim keep it going; on one that is not,
-- nothing reclaims. Prints "pressure ALLOCS_PER_S PAGEOUTRUN ALLOCSTALL".
-- Usage: mmlab -E Benchmarks/pressure.lua MEMORY N
local memory, n = arg[1], math.tointeger(tonumber(arg[2]))
kernel.boot{memory = memory, cpus = 2}
local Page, drop, yield = kernel.page.Page.alloc_page, kernel.drop, kernel.sched.yield
local cache = {}
local shrinker <close> = kernel.mem.register_shrinker{name = "cache", count = function() return #cache end,
  scan = function(want)
    local freed = 0
    while freed < want and #cache > 0 do drop(table.remove(cache)) freed = freed + 1 end
    return freed
  end}
local t0 = os.clock()
for i = 1, n do
  cache[#cache + 1] = Page()
  if i % 64 == 0 then yield() end
end
local elapsed = os.clock() - t0
local vm = kernel.mem.vmstat()
print(("pressure %.0f %d %d"):format(n / elapsed, vm.pageoutrun, vm.allocstall_normal))
for _, p in ipairs(cache) do drop(p) end
