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

test("pairs rejects what is not a table", function()
  expect_error("bad argument #1 to 'pairs' (table expected, got no value)", pairs)
  expect_error("bad argument #1 to 'pairs' (table expected, got number)", function() for _ in pairs(5) do end end)
end)

test("math.random follows the seed", function()
  math.randomseed(kernel.machine().seed)
  local a = {math.random(1000), math.random(1000), math.random(1000)}
  math.randomseed(kernel.machine().seed)
  local b = {math.random(1000), math.random(1000), math.random(1000)}
  expect_eq(table.concat(a, ","), table.concat(b, ","))
end)
