-- The same script and seed print the same bytes.
test("pairs visits string keys in byte order", function()
  local t = {}
  for _, k in ipairs{"zeta", "alpha", "mu", "beta", "omega", "eta"} do t[k] = true end
  local seen = {}
  for k in pairs(t) do seen[#seen + 1] = k end
  expect_eq(table.concat(seen, " "), "alpha beta eta mu omega zeta")
end)

test("pairs puts numbers first, in order, then strings, then booleans", function()
  local t = {10, 20, 30, x = 1, [2.5] = "f", [-7] = "n", [true] = 1, [false] = 0, a = 2}
  local seen = {}
  for k in pairs(t) do seen[#seen + 1] = tostring(k) end
  expect_eq(table.concat(seen, " "), "-7 1 2 2.5 3 a x false true")
end)

test("pairs tolerates clearing fields while iterating", function()
  local t = {a = 1, b = 2, c = 3}
  local n = 0
  for k in pairs(t) do t[k] = nil; n = n + 1 end
  expect_eq(n, 3)
  expect_eq(next(t), nil)
end)

test("pairs honours __pairs", function()
  local t = setmetatable({}, {__pairs = function(t) return function(_, k) if not k then return 1, "one" end end, t, nil end})
  local seen = {}
  for k, v in pairs(t) do seen[#seen + 1] = v end
  expect_eq(table.concat(seen), "one")
end)

test("pairs and next reject what is not a table, as Lua's", function()
  local function message(fn, ...) return select(2, pcall(fn, ...)) end
  expect_eq(message(pairs), "bad argument #1 to 'pairs' (value expected)")
  expect_eq(message(function() for _ in pairs(5) do end end), here() .. ": bad argument #1 to 'for iterator' (table expected, got number)")
  expect_eq(message(next, {10, 20}, 3), "invalid key to 'next'")
end)

-- next.c: pairs returns next, and they agree on one order whatever the hash seed.
test("pairs and next agree on one order", function()
  local t = {b = 1, a = 2, [3] = 3, [1.5] = 4, [true] = 5, [false] = 6, [-2] = 7, ["a\0"] = 8}
  local order = {}
  for k in pairs(t) do order[#order + 1] = tostring(k) end
  expect_eq(table.concat(order, " "), "-2 1.5 3 a a\0 b false true")
  expect_eq(select(1, pairs(t)), next)
  local k, seen = next(t), {}
  while k ~= nil do seen[#seen + 1] = tostring(k); k = next(t, k) end
  expect_eq(table.concat(seen, " "), table.concat(order, " "))
  -- deleting the keys visited so far: next(t) is the key pairs stands on
  for k in pairs(t) do
    expect_eq(next(t), k)
    t[k] = nil
  end
  expect_eq(next(t), nil)
  -- a sequence walks in Lua's own order, and integers mix with floats by value
  local s = {10, 20, 30, [2.5] = "x"}
  local keys = {}
  for k in pairs(s) do keys[#keys + 1] = tostring(k) end
  expect_eq(table.concat(keys, " "), "1 2 2.5 3")
end)

test("math.random follows the seed", function()
  math.randomseed(kernel.machine().seed)
  local a = {math.random(1000), math.random(1000), math.random(1000)}
  math.randomseed(kernel.machine().seed)
  local b = {math.random(1000), math.random(1000), math.random(1000)}
  expect_eq(table.concat(a, ","), table.concat(b, ","))
end)
