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
-- v % m for v an unsigned 64-bit value (two's complement in Lua), m > 0:
-- v = 2 (v >> 1) + (v & 1), each part below 2^63.
local function umod(v, m)
  if v >= 0 then return v % m end
  return ((v >> 1) % m * 2 + (v & 1)) % m
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
-- The churn loop with the generator and umod written out: Lua pays for a
-- function call what C pays for the whole loop body.
for _ = 1, rounds do
  local t0 = os.clock()
  local v = x
  for _ = 1, pairs do
    v = v ~ (v << 13) v = v ~ (v >> 7) v = v ~ (v << 17)
    local k = (v >= 0 and v % live_count or ((v >> 1) % live_count * 2 + (v & 1)) % live_count) + 1
    local s = live[k]
    drop(nodes[s])
    live[k] = live[live_count]
    v = v ~ (v << 13) v = v ~ (v >> 7) v = v ~ (v << 17)
    local node = insert(a, ((v & 63) + 1) * 4096, options)  -- never fails in [0, 2^40) at these sizes
    nodes[s] = node
    sum = sum + node:start()
    live[live_count] = s
  end
  x = v
  best = math.min(best, (os.clock() - t0) / pairs * 1e9)
end
-- Sums wrap as C's u64 do; %u prints them unsigned.
print(("drm_mm %s %d %.1f fill_sum=%u sum=%u fails=%d"):format(mode, n, best, fill_sum, sum, fails))
