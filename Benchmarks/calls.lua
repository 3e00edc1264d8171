-- Benchmarks run by scripts/bench: each row times mmlab and its floor in the
-- same process, interleaved, best of several rounds.
-- Usage: mmlab Benchmarks/calls.lua [N] [--json]
local floor = require "floor"
local N = math.tointeger(tonumber(arg[1])) or 2000000
local json = arg[2] == "--json" or arg[1] == "--json"
local ROUNDS = 7

-- ns per iteration of fn(N), best of ROUNDS for each of the pair, interleaved.
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
local function row(name, ours, base, target)
  rows[#rows + 1] = {name = name, ours = ours, base = base, ratio = ours / base, target = target}
end

-- A binding call: p:read_u8(0) against the C floor's b:read_u8(0).
do
  local p <close> = kernel.page.Page.alloc_page()
  local b = floor.new()
  local ours, base = pair(
    function(n) for _ = 1, n do p:read_u8(0) end end,
    function(n) for _ = 1, n do b:read_u8(0) end end)
  local empty = pair(function(n) for _ = 1, n do end end, function(n) for _ = 1, n do end end)
  row("p:read_u8(0) vs C lua_CFunction", ours, base, 1.25)
  row("  the same, loop cost removed", ours - empty, base - empty, 1.25)
  floor.free(b)
end

if json then
  local items = {}
  for _, r in ipairs(rows) do
    items[#items + 1] = ('{"name": %q, "mmlab_ns": %.2f, "floor_ns": %.2f, "ratio": %.3f, "target": %s}')
      :format(r.name, r.ours, r.base, r.ratio, r.target and ("%.2f"):format(r.target) or "null")
  end
  print("[" .. table.concat(items, ",\n ") .. "]")
else
  print(("%-36s %10s %10s %8s %8s"):format("benchmark", "mmlab", "floor", "ratio", "target"))
  for _, r in ipairs(rows) do
    local verdict = r.target and (r.ratio <= r.target and "ok" or "MISSED") or ""
    print(("%-36s %8.1fns %8.1fns %7.2fx %7s  %s"):format(r.name, r.ours, r.base, r.ratio,
      r.target and ("<=" .. r.target .. "x") or "", verdict))
  end
end
