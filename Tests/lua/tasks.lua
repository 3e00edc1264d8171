-- Tasks: spawn, join, run, failures and deadlocks.
local sched = kernel.sched

test("the main chunk runs as task main", function()
  local me = kernel.current()
  expect_eq(me:name(), "main")
  expect_eq(me:state(), "runnable")
  expect_eq(kernel.state(me), "borrowed")
  expect_eq(sched.nr_cpu_ids(), 4)
end)

test("spawn and join: results come back, state follows", function()
  local t = sched.spawn(function() return 1, nil, "three" end, {name = "worker"})
  expect_eq(t:name(), "worker")
  expect_eq(t:state(), "runnable")
  assert(tostring(t):match("^Task{worker, cpu=%d, runnable}$"), tostring(t))
  local a, b, c = t:join()
  expect_eq(a, 1) expect_eq(b, nil) expect_eq(c, "three")
  expect_eq(t:state(), "done")
  expect_eq(select("#", t:join()), 3, "joining again gives the results again")
end)

test("a bound task stays on its CPU; default names count up", function()
  local seen = {}
  local t = sched.spawn(function()
    for i = 1, 50 do seen[sched.smp_processor_id()] = true sched.yield() end
  end, {cpu = 2})
  t:join()
  expect_eq(t:cpu(), 2)
  expect_eq(next(seen), 2)
  expect_eq(next(seen, 2), nil)
  assert(sched.spawn(function() end):name():match("^task%d+$"))
  sched.run()
end)

test("a failing task's error reaches join with its name", function()
  local t = sched.spawn(function() kernel.page.Page.alloc_page():read_u8(-1) end, {name = "bad"})
  local err = expect_error("EINVAL", t.join, t)
  expect_eq(err.task, "bad")
  expect_eq(t:state(), "failed")
  local s = sched.spawn(function() error("plain") end, {name = "plain"})
  expect_error("task 'plain': Tests/lua/tasks.lua:", s.join, s)
end)

test("a failure nobody joined reaches run", function()
  sched.spawn(function() error("unjoined") end, {name = "lost"})
  sched.spawn(function() end)
  local err = expect_error("task 'lost': Tests/lua/tasks.lua:", sched.run)
  assert(err:find("unjoined"), err)
  sched.run()  -- reported once
end)

test("bad spawns and joins", function()
  expect_error("EDEADLK", kernel.current().join, kernel.current())
  expect_error("EINVAL", sched.spawn, function() end, {cpu = 4})
  expect_error("EINVAL", sched.spawn, function() end, {cpu = -1})
  expect_error("unknown field 'mmm'", sched.spawn, function() end, {mmm = 1})
  expect_error("function expected", sched.spawn, "not a function")
  expect_error("field 'name': string expected", sched.spawn, function() end, {name = {}})
end)

test("tasks interleave, and the run is deterministic", function()
  local log = {}
  for i = 1, 3 do
    sched.spawn(function() for j = 1, 20 do log[#log + 1] = i kernel.page_align(j) end end)
  end
  sched.run()
  expect_eq(#log, 60)
  local switches = 0
  for i = 2, #log do if log[i] ~= log[i - 1] then switches = switches + 1 end end
  assert(switches > 3, "the scheduler preempts at binding calls: " .. table.concat(log))
end)

test("a task that returns holding a lock fails; its guard is not main's to drop", function()
  local m = kernel.sync.Mutex("held")
  local t = sched.spawn(function() HELD = m:lock() end, {name = "holder"})
  local err = expect_error("BUG", t.join, t)
  assert(err.message:find("task 'holder' exited holding Mutex{held}"), err.message)
  expect_error("released by task 'main'; it was taken by task 'holder'", kernel.drop, HELD)
  expect_eq(m:stats().owner, "holder")
  HELD = nil
  collectgarbage()  -- the collector releases it, with a warning
  expect_eq(m:stats().owner, nil)
end)

test("an ABBA pair is stopped by lockdep, naming both chains", function()
  local a = kernel.sync.Mutex("A")  -- a line each: two lockdep classes
  local b = kernel.sync.Mutex("B")
  local t1 = sched.spawn(function() local ga <close> = a:lock() sched.yield() local gb <close> = b:lock() end, {name = "ab"})
  local t2 = sched.spawn(function() local gb <close> = b:lock() sched.yield() local ga <close> = a:lock() end, {name = "ba"})
  local err = expect_error("BUG", sched.run)
  local m = err.message
  assert(m:find("possible circular locking dependency"), m)
  assert(m:find("Mutex{A}") and m:find("Mutex{B}"), m)
  assert(m:find("task 'ab'") and m:find("task 'ba'"), "both chains: " .. m)
  sched.run()  -- the other one finished: the failed task's guards were released
end)

test("a real deadlock: run raises EDEADLK listing waits and holds", function()
  local m = kernel.sync.Mutex("M")
  local joiner, taker
  joiner = sched.spawn(function()
    local g <close> = m:lock()
    sched.yield()
    taker:join()
  end, {name = "joiner"})
  taker = sched.spawn(function() sched.yield() local g <close> = m:lock() end, {name = "taker"})
  local err = expect_error("EDEADLK", sched.run)
  expect_eq(err.code, 35)
  assert(err.message:find("task 'joiner' %(cpu %d%): waits for task 'taker' to finish; holds Mutex{M}"), err.message)
  assert(err.message:find("task 'taker' %(cpu %d%): waits for Mutex{M} %(held by 'joiner'%); holds nothing"), err.message)
  assert(err.message:find("task 'main' %(cpu %d%): waits for every other task to finish"), err.message)
  expect_eq(joiner:state(), "blocked")
  expect_eq(taker:state(), "blocked")
end)
