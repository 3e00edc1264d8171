-- The oracle's drm_mm churn (Tests/Oracle/drm_mm/bench.c) from Lua: the same
-- operations in the same order, so that the placements' sums match.
-- Usage: mmlab Benchmarks/drm_mm.lua MODE N PAIRS ROUNDS
-- Prints "drm_mm MODE N NS fill_sum=F sum=S fails=K" as bench.c does.
local mode, n, pairs, rounds = arg[1], math.tointeger(tonumber(arg[2])), math.tointeger(tonumber(arg[3])),
  math.tointeger(tonumber(arg[4]))
local x = 0x9E3779B97F4A7C15
local function next()
  x = x ~ (x << 13)
  x = x ~ (x >> 7)
  x = x ~ (x << 17)
  return x
end
-- x % m for x an unsigned 64-bit value (two's complement in Lua), m > 0.
local function umod(v, m)
  local r = v - (((v >> 1) // m) << 1) * m
  if not math.ult(r, m) then r = r - m end
  return r
end
local a = kernel.drm_mm.Allocator(0, 1 << 40)
local options = {mode = mode}
local insert, drop = a.insert_node, kernel.drop
local nodes, live, live_count, fails = {}, {}, 0, 0
local fill_sum, sum = 0, 0
local function try_insert(slot)
  local size = (1 + umod(next(), 64)) * 4096
  local ok, node = pcall(insert, a, size, options)
  if ok then nodes[slot] = node return node:start() end
  fails = fails + 1
end
for i = 1, n do
  local start = try_insert(i)
  if start then fill_sum = fill_sum + start live_count = live_count + 1 live[live_count] = i end
end
local best = math.huge
for _ = 1, rounds do
  local t0 = os.clock()
  for _ = 1, pairs do
    local k = umod(next(), live_count) + 1
    local s = live[k]
    drop(nodes[s])
    live[k] = live[live_count]
    live_count = live_count - 1
    local size = (1 + umod(next(), 64)) * 4096
    local node = insert(a, size, options)  -- never fails in [0, 2^40) at these sizes
    nodes[s] = node
    sum = sum + node:start()
    live_count = live_count + 1
    live[live_count] = s
  end
  best = math.min(best, (os.clock() - t0) / pairs * 1e9)
end
-- Sums wrap as C's u64 do; %u prints them unsigned.
print(("drm_mm %s %d %.1f fill_sum=%u sum=%u fails=%d"):format(mode, n, best, fill_sum, sum, fails))
