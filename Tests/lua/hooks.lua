-- The debug hook is the script's (hooks.c): debug.sethook/gethook behave as
-- ldblib's while the engine's own count hook goes on underneath.
local sched = kernel.sched

-- The events a hook sees while a loop runs: what lua5.4 (5.4.4) prints for
-- the same function, counted by the same hook.
local function measure(mask, count)
  local events = {}
  local function f(e) events[e] = (events[e] or 0) + 1 end
  local function work() local s = 0 for i = 1, 1000 do s = s + i end return s end
  debug.sethook(f, mask, count)
  work()
  debug.sethook()
  return ("call=%d return=%d line=%d count=%d"):format(events.call or 0, events["return"] or 0, events.line or 0, events.count or 0)
end

local LUA54 = {  -- lua5.4 running measure() with these arguments
  {"", 1, "call=0 return=0 line=0 count=2011"},
  {"", 7, "call=0 return=0 line=0 count=287"},
  {"", 250, "call=0 return=0 line=0 count=8"},
  {"crl", 0, "call=2 return=2 line=1002 count=0"},
  {"l", 3, "call=0 return=0 line=2006 count=2004"},
}

test("no hook until the script sets one; gethook returns what sethook set", function()
  expect_eq(debug.gethook(), nil)
  local f = function() end
  debug.sethook(f, "crl", 7)
  local fn, mask, count = debug.gethook()
  debug.sethook()
  expect_eq(fn, f) expect_eq(mask, "crl") expect_eq(count, 7)
  expect_eq(debug.gethook(), nil)
  debug.sethook(f, "", 0)  -- no events: no hook, as lua_sethook
  expect_eq(debug.gethook(), nil)
end)

test("a script's hook sees the events and counts lua5.4's does, alone and while preemption runs", function()
  for _, case in ipairs(LUA54) do
    expect_eq(measure(case[1], case[2]), case[3], "alone: " .. case[1] .. " " .. case[2])
  end
  local stop = false
  local other = sched.spawn(function() while not stop do sched.yield() end end, {name = "other", cpu = 0})
  for _, case in ipairs(LUA54) do
    expect_eq(measure(case[1], case[2]), case[3], "contended: " .. case[1] .. " " .. case[2])
  end
  stop = true
  other:join()
end)

test("hooks are per thread; new coroutines and tasks inherit the mask but no function, as in Lua", function()
  local lines = 0
  debug.sethook(function() lines = lines + 1 end, "l")
  local co = coroutine.create(function()
    local a = 1
    return debug.gethook()
  end)
  local task = sched.spawn(function() return debug.gethook() end)
  local ok, fn, mask, count = coroutine.resume(co)
  local tfn, tmask = task:join()
  debug.sethook()
  expect_eq(fn, nil) expect_eq(mask, "l") expect_eq(count, 0)
  expect_eq(tfn, nil) expect_eq(tmask, "l")
  local before = lines
  local other = coroutine.create(function()
    local a = 1
    local b = 2
  end)
  local seen = 0
  debug.sethook(other, function() seen = seen + 1 end, "l")
  expect_eq(debug.gethook(), nil, "this thread has none")
  coroutine.resume(other)
  expect_eq(seen, 3)
  expect_eq(lines, before)
end)

test("hooks that raise, yield or reset hooks behave as in Lua", function()
  local co = coroutine.create(function()
    debug.sethook(function() coroutine.yield() end, "l")
    local x = 1
    return x
  end)
  expect_eq(select(2, coroutine.resume(co)), "attempt to yield across a C-call boundary")
  local fired = false
  local ok, err = pcall(function()
    debug.sethook(function(e, l) if not fired then fired = true error("in hook at " .. l, 0) end end, "l")
    local x = 1
  end)
  debug.sethook()
  local line = debug.getinfo(1, "l").currentline - 3
  expect_eq(ok, false) expect_eq(err, "in hook at " .. line)
  local calls = 0
  debug.sethook(function() calls = calls + 1 debug.sethook() end, "l")
  local a = 1
  local b = 2
  expect_eq(calls, 1, "a hook that unsets itself runs once")
  expect_eq(debug.gethook(), nil)
end)

test("what scripts can do to the debug registry and to handles does not crash the host", function()
  local registry = debug.getregistry()
  local saved = registry._HOOKKEY
  registry._HOOKKEY = 5
  debug.sethook(function() end, "l")
  expect_eq(type(registry._HOOKKEY), "table")
  debug.sethook()
  registry._HOOKKEY[coroutine.running()] = io.stdout  -- a userdata that is not a hook record
  debug.sethook(coroutine.running(), function() end, "l")
  registry._HOOKKEY[coroutine.running()] = io.stdout
  expect_eq(debug.gethook(), nil)
  debug.sethook()
  registry._HOOKKEY = saved
  registry["mmlab.parked"] = 7
  local m = kernel.sync.Mutex("gate")
  local held = m:lock()
  local t = sched.spawn(function() coroutine.wrap(function() local g <close> = m:lock() end)() return "through" end)
  sched.yield()
  kernel.drop(held)
  expect_eq(t:join(), "through")
  local p <close> = kernel.page.Page.alloc_page()
  local mt = debug.getmetatable(p)
  expect_eq(pcall(debug.setmetatable, p, nil), true)
  expect_error("attempt to index a userdata value", function() return p:read_u8(0) end)
  debug.setmetatable(p, mt)
  expect_eq(p:read_u8(0), 0)
  local other = debug.setmetatable(io.stdout, mt) and io.stdout
  expect_error("bad argument #1 to 'read_u8'", other.read_u8, other, 0)
  debug.setmetatable(io.stdout, getmetatable(io.stderr))
  local read, write = mt.__index.read_u8, mt.__index.write_u8
  local cell = select(2, debug.getupvalue(read, 1))
  for i = 1, 8 do
    expect_eq(select(2, pcall(debug.setupvalue, read, i, "junk")), "cannot change the upvalues of a kernel binding")
  end
  expect_eq(select(2, pcall(debug.setupvalue, write, 1, cell)), "cannot change the upvalues of a kernel binding")
  expect_eq(p:read_u8(0), 0, "a binding survives its upvalues being poked at")
  write(p, 0, 7)
  expect_eq(read(p, 0), 7)
  local d <close> = kernel.drm_mm.Allocator(0, 4096)
  local iter = d:holes()
  expect_eq(select(2, pcall(debug.setupvalue, iter, 3, 1e6)), "cannot change the upvalues of a kernel binding")
  expect_eq(select(2, pcall(debug.setupvalue, mt.__gc, 1, "junk")), "cannot change the upvalues of a kernel binding")
  -- Other functions' upvalues change as in Lua.
  local up = 1
  local function f() return up end
  expect_eq(debug.setupvalue(f, 1, 2), "up")
  expect_eq(f(), 2)
  expect_eq(debug.setupvalue(f, 2, 3), nil)
end)
