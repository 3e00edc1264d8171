-- The fuzzer's driver (Fuzzer.swift runs it in a fresh engine per round).
-- It calls every function under `kernel`, and every method and metamethod
-- of the handles those calls return, with random and hostile arguments:
-- wrong types, nil, NaN, huge and negative numbers, dropped and moved
-- handles, handles of other types, foreign userdata, callbacks that raise,
-- yield, drop what their caller is using or call back in. Some calls run in
-- spawned tasks. Then it drops everything and checks the accounting.
--
-- In: FUZZ_CALLS, and FUZZ_TRACE to print each call as it is made (to
-- find the call a failing round turns on). Out: FUZZ_RESULT = {calls=,
-- returned=, kernel_errors=, bugs=, lua_errors=, errnos={...},
-- failures={...}, deadlocked=}.
local calls_wanted = FUZZ_CALLS or 1000
local trace = FUZZ_TRACE
local random = math.random  -- seeded from the machine's seed: runs replay
local Error = kernel.Error
local drop, state = kernel.drop, kernel.state

local result = {calls = 0, returned = 0, kernel_errors = 0, bugs = 0, lua_errors = 0, errnos = {}, failures = {}}
local function fail(what)
  if #result.failures < 20 then result.failures[#result.failures + 1] = what end
end

local stopping = false  -- cleaning up: tasks and callbacks still running call nothing

local function is_handle(v)
  return type(v) == "userdata" and pcall(state, v)
end

-- What calls are made on: every function under `kernel`, then the methods
-- and metamethods of each handle type met.
local functions = {}
local function collect(t, prefix, seen)
  for k, v in pairs(t) do
    if type(k) == "string" then
      if type(v) == "function" then
        functions[#functions + 1] = {name = prefix .. k, fn = v}
      elseif type(v) == "table" and not seen[v] then
        seen[v] = true
        collect(v, prefix .. k .. ".", seen)
      end
    end
  end
end
collect(kernel, "kernel.", {[Error] = true})

local methods = {}      -- list of {name=, fn=, type=}
local types_seen = {}   -- metatable -> type name
local handles = {}      -- every handle made, alive or not
-- Physical addresses into_phys returned, as keys: one SETTABLE each, which
-- no preemption can split (`t[#t + 1] = x` from two tasks can lose one).
local given_away = {}

local function remember(v)
  if not is_handle(v) then return end
  -- A call that was under way when the cleanup began (a task blocked in
  -- it) returns after the handles were dropped: drop what it made, in the
  -- task that owns it.
  if stopping then pcall(drop, v) return end
  handles[#handles + 1] = v
  local mt = getmetatable(v)
  if type(mt) ~= "table" or types_seen[mt] then return end
  local name = tostring(mt.__name or "?")
  types_seen[mt] = name
  if type(mt.__index) == "table" then
    for k, fn in pairs(mt.__index) do
      if type(fn) == "function" then methods[#methods + 1] = {name = name .. ":" .. k, fn = fn, mt = mt} end
    end
  end
  for _, k in ipairs{"__gc", "__close", "__tostring", "__eq", "__index"} do
    if type(mt[k]) == "function" then methods[#methods + 1] = {name = name .. "." .. k, fn = mt[k], mt = mt} end
  end
end

-- Values.
local numbers = {
  0, 1, -1, 2, 3, 7, 8, 10, 11, 12, 15, 16, 63, 64, 255, 256, 4095, 4096, 4097, 8192, 1 << 16, 1 << 20,
  (1 << 20) + 1, 1 << 22, 1 << 30, 1 << 31, 1 << 32, 1 << 40, 1 << 47, 1 << 52, 1 << 62, math.maxinteger,
  math.mininteger, -4096, -(1 << 40), 0.5, -0.0, 1 / 0, -1 / 0, 0 / 0, 2 ^ 53, 2 ^ 63, -2 ^ 63, 1e300, 12.0,
  4096.0, 0x100000, 0x100fff, 0x7fff0000, 0xffffffff,
}
local strings = {
  "", "x", "GFP_KERNEL", "GFP_ATOMIC", "__GFP_ZERO", "4K", "16M", "1G", "64G", "-1", "0x1000", "u8", "i16", "u32",
  "u64", "isize", "usize", "value", "best", "low", "high", "evict", "lowest", "highest", "ram", "reserved", "mmio",
  "r", "rw", "rwx", "\0\0\0\0\0\0\0\0", ("A"):rep(4097), "nan", "counter",
}
local fields = {
  "addr", "alignment", "color", "count", "cpu", "cpus", "data", "data_size", "extra_buffers_size", "file", "flags",
  "highmem", "hook", "ignore_gfp_highmem", "ignore_gfp_reclaim", "init_on_alloc", "init_on_free", "interval",
  "is_async", "is_oneway", "len", "memmap", "memory", "min_order", "mm", "mode", "name", "offset", "offsets_size",
  "page_poison", "pid", "probability", "prot", "range_end", "range_start", "scan", "seed", "series", "size",
  "space", "start", "times", "title", "type", "x", "xlabel", "y", "ylabel", "bogus",
}
-- Values a callback throws that are not strings: the checker lets them through.
local thrown = setmetatable({}, {__mode = "k"})
local hostile = {
  setmetatable({}, {__index = function() error("an __index that raises") end}),
  setmetatable({}, {__tostring = function() error("a __tostring that raises") end}),
  setmetatable({}, {__len = function() return -1 end, __eq = function() error("an __eq that raises") end}),
  setmetatable({}, {__name = "Page"}),
  io.stdout,                 -- a userdata that is not ours
  coroutine.create(tostring),
  tostring,
}

local value  -- forward
-- Calls made and callback depth, per task (coroutine): tasks are preempted
-- between any two instructions, so a shared `n = n + 1` would lose updates;
-- a slot only its own task writes cannot.
local calls, depth = {}, {}
local one_call -- forward

local function any_handle()
  if #handles == 0 then return nil end
  return handles[random(#handles)]
end

-- A callback: it raises, yields, drops a handle (maybe the one its caller
-- is using), calls back in, or returns something.
local function callback(...)
  if stopping then return nil end
  local r = random(12)
  if r == 1 then
    error("fuzz: a callback raises")
  elseif r == 2 then
    local e = {}
    thrown[e] = true
    error(e)
  elseif r == 3 or r == 4 then
    local h = any_handle()
    if h then pcall(drop, h) end
  elseif r == 5 and (depth[coroutine.running()] or 0) < 2 then
    one_call()
  elseif r == 6 then
    pcall(kernel.sched.yield)
  elseif r == 7 then
    local h = select(random(math.max(select("#", ...), 1)), ...)
    if is_handle(h) then pcall(drop, h) end  -- what the callback was given
  end
  return value(), value()
end

local function option_table()
  local t = {}
  for _ = 1, random(0, 3) do t[fields[random(#fields)]] = value() end
  return t
end

function value()
  local r = random(100)
  if r <= 25 then return numbers[random(#numbers)]
  elseif r <= 35 then return random(0, 4096)
  elseif r <= 45 then return strings[random(#strings)]
  elseif r <= 50 then return nil
  elseif r <= 53 then return random(2) == 1
  elseif r <= 75 then return any_handle()
  elseif r <= 82 then return option_table()
  elseif r <= 90 then return callback
  elseif r <= 95 then return hostile[random(#hostile)]
  else return {value(), value()}
  end
end

-- Checks what a failed call raised: a string, a kernel.Error with its
-- fields, or what a callback threw.
local classifying = false  -- the fuzz's own hook stays out of its checks
local check_raised
local function classify(name, e)
  classifying = true
  local ok, err = pcall(function() return check_raised(name, e) end)
  classifying = false
  if not ok then error(err, 0) end
end

function check_raised(name, e)
  if type(e) == "string" then
    result.lua_errors = result.lua_errors + 1
    if e == "" then fail(name .. ": an empty error message") end
  elseif getmetatable(e) == Error then
    local ok, message, bug, errno = pcall(function() return e.message, e.bug, e.errno end)
    if not ok or type(message) ~= "string" or message == "" or type(bug) ~= "boolean" then
      fail(name .. ": a kernel.Error without a message or bug field (message " .. tostring(message) .. ", bug "
        .. tostring(bug) .. ", errno " .. tostring(errno) .. ")")
    elseif bug then
      result.bugs = result.bugs + 1
    elseif type(errno) ~= "string" or kernel.errno[errno] == nil then
      fail(name .. ": a kernel.Error with errno " .. tostring(errno))
    else
      result.kernel_errors = result.kernel_errors + 1
      result.errnos[errno] = (result.errnos[errno] or 0) + 1
    end
  elseif thrown[e] then
    result.lua_errors = result.lua_errors + 1
  else
    fail(name .. ": raised a " .. type(e) .. ", not a string or kernel.Error")
  end
end

-- What each function's argument errors said it expects ("number",
-- "table", "Page", ...): half the time an argument is of that kind, so that
-- calls get past their argument checks and into the kernel's code.
local expects = {}  -- target -> {position -> kind}
local function learn(target, e)
  local i, kind = e:match("^bad argument #(%d+) to '[^']*' %((%w+) expected")
  if not i then return end
  expects[target] = expects[target] or {}
  expects[target][tonumber(i)] = kind
end

local function handle_of(name)
  for _ = 1, 8 do
    local h = any_handle()
    if h and types_seen[getmetatable(h)] == name then return h end
  end
end

local function value_of(kind)
  if kind == "number" or kind == "integer" then
    return random(3) == 1 and numbers[random(#numbers)] or random(0, 16) * 4096
  elseif kind == "string" then return strings[random(#strings)]
  elseif kind == "table" then return option_table()
  elseif kind == "function" then return callback
  elseif kind == "boolean" then return random(2) == 1
  else return handle_of(kind) or value()
  end
end

local function arguments(target)
  local n = random(0, 4)
  local args = {}
  local known = expects[target]
  if known and random(2) == 1 then
    for i in pairs(known) do n = math.max(n, i) end
  end
  for i = 1, n do
    local kind = known and known[i]
    if kind and random(2) == 1 then args[i] = value_of(kind) else args[i] = value() end
  end
  if target.mt then
    -- A method: usually on a handle of its own type.
    local r = random(10)
    if r <= 7 then
      for _ = 1, 8 do
        local h = any_handle()
        if h and getmetatable(h) == target.mt then args[1] = h break end
      end
    end
    n = math.max(n, 1)
  end
  return args, n
end

-- Inside a task, run() waits for every other task, main included: a task
-- that calls it blocks until the script ends. Only main calls it.
local main_only = {["kernel.sched.run"] = true}

function one_call()
  if stopping then return end
  local co = coroutine.running()
  calls[co] = (calls[co] or 0) + 1
  local target
  repeat
    if #methods > 0 and random(10) <= 5 then target = methods[random(#methods)] else target = functions[random(#functions)] end
  until not main_only[target.name] or kernel.current():name() == "main"
  local args, n = arguments(target)
  if trace then
    local shown = {}
    for i = 1, n do
      local v = args[i]
      local ok, text = pcall(tostring, v)
      shown[i] = type(v) == "string" and ("%q"):format(v:sub(1, 20)) or (ok and text:sub(1, 60) or type(v))
    end
    print(("%d %s %s(%s)"):format(calls[co], kernel.current():name(), target.name, table.concat(shown, ", ")))
  end
  -- Again: the calls above were switch points, and the script may have
  -- begun cleaning up meanwhile.
  if stopping then return end
  depth[co] = (depth[co] or 0) + 1
  local results = table.pack(pcall(target.fn, table.unpack(args, 1, n)))
  depth[co] = depth[co] - 1
  if results[1] then
    result.returned = result.returned + 1
    for i = 2, results.n do
      remember(results[i])
      if target.name == "kernel.page.into_phys" and math.type(results[i]) == "integer" then
        given_away[results[i]] = true
      end
    end
  else
    classify(target.name, results[2])
    if type(results[2]) == "string" then learn(target, results[2]) end
  end
end

-- Lua's own: script coroutines and debug hooks around kernel calls
-- (coroutines.c, hooks.c). Coroutines go in a pool any task may resume or
-- close, also while another task waits inside one; hooks raise, yield,
-- block and unset themselves. A hook on the running thread lives for one
-- call; one on a pool coroutine stays.
local pool = {}
local masks = {"", "c", "r", "l", "cr", "crl"}
local sethook_around  -- forward: the wrapper that sets and clears a hook
local function fuzz_hook()
  if stopping or classifying then return end
  -- Not in the wrapper itself (its own calls of debug.sethook and pcall
  -- are events too): a raise there would escape the call it protects.
  for level = 2, 3 do
    local info = debug.getinfo(level, "f")
    if info and info.func == sethook_around then return end
  end
  local r = random(40)
  if r == 1 then error("fuzz: a hook raises")
  elseif r == 2 then pcall(kernel.sched.yield)
  elseif r == 3 then debug.sethook()
  elseif r == 4 then pcall(coroutine.yield)
  elseif r == 5 then pcall(one_call)
  end
end
local function any_coroutine()
  if #pool == 0 then return coroutine.running() end
  return pool[random(#pool)]
end
local lua_functions = {
  {name = "coroutine.create+resume", fn = function(...)
    local co = coroutine.create(function(...)
      one_call()
      coroutine.yield(...)
      one_call()
      return ...
    end)
    pool[#pool + 1] = co
    return coroutine.resume(co, ...)
  end},
  {name = "coroutine.wrap", fn = function(...)
    local f = coroutine.wrap(function() one_call() coroutine.yield() one_call() end)
    return f(...)
  end},
  {name = "coroutine.resume", fn = function(...) return coroutine.resume(any_coroutine(), ...) end},
  {name = "coroutine.close", fn = function() return coroutine.close(any_coroutine()) end},
  {name = "coroutine.status", fn = function() return coroutine.status(any_coroutine()) end},
  {name = "coroutine.running", fn = coroutine.running},
  {name = "coroutine.isyieldable", fn = coroutine.isyieldable},
  {name = "coroutine.yield", fn = coroutine.yield},
  {name = "debug.sethook around a call", fn = function() return sethook_around() end},
  {name = "debug.sethook on a coroutine", fn = function()
    local co = pool[random(math.max(#pool, 1))]
    if co == nil or co == coroutine.running() then return end  -- never the fuzzer's own thread
    return debug.sethook(co, random(4) == 1 and nil or fuzz_hook, masks[random(#masks)], random(0, 100))
  end},
  {name = "debug.gethook", fn = function() return debug.gethook(any_coroutine()) end},
  {name = "debug.traceback", fn = function(...) return debug.traceback(any_coroutine(), ...) end},
  {name = "debug.getinfo", fn = function(...) return debug.getinfo(any_coroutine(), ...) end},
}
function sethook_around()
  debug.sethook(fuzz_hook, masks[random(#masks)], random(0, 3) * random(0, 50))
  local ok, e = pcall(one_call)
  debug.sethook()
  if not ok then error(e, 0) end
end
for _, f in ipairs(lua_functions) do functions[#functions + 1] = f end

-- Starting points: one handle of most types, so methods are reached early.
local function seed_pool()
  local p = kernel.page
  for _, f in ipairs{
    function() return p.Page.alloc_page() end,
    function() return p.Page.alloc_pages(kernel.gfp.GFP_KERNEL, 2) end,
    function() return kernel.mm.mm_alloc() end,
    function() local mm = kernel.mm.mm_alloc() return mm, mm:mmap{len = 16384} end,
    function() return kernel.sync.SpinLock("fuzz spin") end,
    function() return kernel.sync.Mutex("fuzz mutex") end,
    function() return kernel.drm_mm.Allocator(0, 1 << 20) end,
    function() local a = kernel.drm_mm.Allocator(0, 1 << 20) return a, a:insert_node(4096) end,
    function() return kernel.binder.RangeAllocator(1 << 16) end,
    function() local mm = kernel.mm.mm_alloc() local a = kernel.binder.Alloc(mm, 1 << 16) return mm, a, a:new_buf{data_size = 64} end,
    function() return kernel.percpu.alloc("u64") end,
    function() local mm = kernel.mm.mm_alloc() local addr = mm:mmap{len = 8192} return mm, kernel.uaccess.UserSlice(mm, addr, 100) end,
    function() return kernel.sched.spawn(function() end, {name = "fuzz seed"}) end,
  } do
    local r = table.pack(pcall(f))
    if r[1] then for i = 2, r.n do remember(r[i]) end end
  end
end

local mem = kernel.mem.stats()
local free_before = mem.free_pages + mem.pcp_pages
seed_pool()

local main = coroutine.running()
while (calls[main] or 0) < calls_wanted do
  local r = random(100)
  if r <= 3 then
    -- Some calls run in a task, interleaved with the others.
    local ok, task = pcall(kernel.sched.spawn, function()
      for _ = 1, random(1, 8) do one_call() end
    end, {name = "fuzz"})
    if ok then remember(task) end
  elseif r <= 5 then
    local ok, e = pcall(kernel.sched.run)
    if not ok then classify("kernel.sched.run", e) end
  elseif r == 6 then
    collectgarbage()
  else
    one_call()
  end
end

-- Clean up: finish the tasks, take back what into_phys gave away, drop
-- every handle (a lender only after its borrowers), collect.
stopping = true
for _ = 1, 4 do pcall(kernel.sched.run) end
for pa in pairs(given_away) do
  local ok, page = pcall(kernel.page.from_phys, pa)
  if ok then remember(page) end
end
-- A per-CPU "value" variable can hold any value, handles included (its own
-- too: a cycle through the registry, which the collector cannot see): it
-- keeps them alive as a static variable does in the kernel. Clear them.
local function clear_per_cpu(v)
  for cpu = 0, kernel.sched.nr_cpu_ids() - 1 do pcall(v.set_per_cpu, v, cpu, 0) end
end
for _, name in ipairs(strings) do
  local ok, v = pcall(kernel.percpu.get, name)
  if ok and v then clear_per_cpu(v) end
end
for _, h in ipairs(handles) do
  local mt = getmetatable(h)
  if types_seen[mt] == "DynamicPerCpu" or types_seen[mt] == "StaticPerCpu" then clear_per_cpu(h) end
end
for _ = 1, 4 do
  for i = #handles, 1, -1 do
    local h = handles[i]
    local s = state(h)
    if s == "owned" or s == "borrowed" then pcall(drop, h) end
  end
  pcall(kernel.sched.run)
end
for _, co in ipairs(pool) do pcall(coroutine.close, co) end
handles, methods, types_seen, given_away, pool = {}, {}, {}, {}, {}
collectgarbage()
collectgarbage()
-- Calls of preempt_disable that no preempt_enable matched: main's count
-- goes back to zero, or run() cannot sleep.
while kernel.sched.preempt_count() > 0 do
  if not pcall(kernel.sched.preempt_enable) then break end
end
-- Tasks whose handles went with the collector may still fail (exiting with
-- a lock held): run them all to the end, each failure once.
local drained, last_error = false, nil
for _ = 1, 1000 do
  local ok, e = pcall(kernel.sched.run)
  if ok then drained = true break end
  last_error = e
end
if FUZZ_TRACE then print("cleanup: tasks drained", drained, last_error) end
-- Tasks the calls left in a real deadlock (each waits for a lock another
-- holds) keep what they hold: EDEADLK is the right answer, and the
-- accounting cannot balance. The round says so instead of failing.
result.deadlocked = not drained
-- A task preempted in the middle of `handles[#handles + 1] = v` may have
-- stored into the new list: those go too (by the collector if they belong
-- to a task that ended).
for _, h in pairs(handles) do pcall(drop, h) end
handles = {}
collectgarbage()
-- What the collector dropped last may have queued work (mmput_async).
pcall(kernel.sched.run)

-- Where the Lua state still reaches a live handle from: the paths from
-- the registry (tables, upvalues, task stacks, user values) to up to
-- three of them, to tell a leak in mmlab from a reference the driver kept.
local function holders()
  local seen, paths = {}, {}
  local function visit(v, path, d)
    local t = type(v)
    if #paths >= 3 or d > 40 or seen[v] or (t ~= "table" and t ~= "function" and t ~= "userdata" and t ~= "thread") then
      return
    end
    seen[v] = true
    if t == "userdata" then
      local ok, s = pcall(state, v)
      if ok and s ~= "dropped" and s ~= "moved" then paths[#paths + 1] = tostring(v) .. " at " .. path end
      local i = 1
      while true do
        local uv, has = debug.getuservalue(v, i)
        if not has then break end
        visit(uv, path .. ".uservalue" .. i, d + 1)
        i = i + 1
      end
      visit(debug.getmetatable(v), path .. ".metatable", d + 1)
    elseif t == "table" then
      for k, x in next, v do
        visit(k, path .. ".key", d + 1)
        visit(x, path .. "." .. tostring(k):sub(1, 30), d + 1)
      end
      visit(debug.getmetatable(v), path .. ".metatable", d + 1)
    elseif t == "function" then
      for i = 1, math.huge do
        local name, x = debug.getupvalue(v, i)
        if not name then break end
        visit(x, path .. ".upvalue:" .. name, d + 1)
      end
    else
      for level = 0, math.huge do
        local info = debug.getinfo(v, level, "fl")
        if not info then break end
        visit(info.func, path .. ".level" .. level, d + 1)
        for i = 1, math.huge do
          local name, x = debug.getlocal(v, level, i)
          if not name then break end
          visit(x, ("%s.level%d(line %d):%s"):format(path, level, info.currentline, name), d + 1)
        end
      end
    end
  end
  visit(debug.getregistry(), "registry", 0)
  return paths
end

-- What must hold now: nothing native left alive, the machine consistent,
-- every page back on the free lists.
local live = drained and kernel.debug.live() or {}
local left = {}
for name, count in pairs(live) do left[#left + 1] = name .. "=" .. count end
if #left > 0 then
  local leaks = {}
  for _, leak in ipairs(kernel.debug.leaks()) do
    if #leaks < 5 then leaks[#leaks + 1] = leak.object .. " (" .. leak.site .. ")" end
  end
  local held = holders()
  fail("native objects alive after every handle was dropped: " .. table.concat(left, ", ") ..
       ": " .. table.concat(leaks, ", ") .. (#held > 0 and "; still reachable: " .. table.concat(held, "; ") or ""))
end
local ok, e = pcall(kernel.debug.check)
if not ok then fail("kernel.debug.check: " .. tostring(e)) end
mem = kernel.mem.stats()
if drained and mem.free_pages + mem.pcp_pages ~= free_before then
  fail(("free pages drifted: %d before, %d after"):format(free_before, mem.free_pages + mem.pcp_pages))
end

for _, n in pairs(calls) do result.calls = result.calls + n end
FUZZ_RESULT = result
