-- Script coroutines inside tasks (coroutines.c): the task's own coroutine is
-- the script's main thread, and a blocking binding inside a script's
-- coroutine blocks the task and comes back into the coroutine.
local sched, sync = kernel.sched, kernel.sync

local function message(...) return select(2, pcall(...)) end

-- lcorolib's answers for the main thread, in main and in every task.
local function main_thread_view()
  local me, ismain = coroutine.running()
  expect_eq(type(me), "thread")
  expect_eq(ismain, true)
  expect_eq(coroutine.isyieldable(), false)
  expect_eq(coroutine.isyieldable(me), false)
  expect_eq(coroutine.status(me), "running")
  expect_eq(message(coroutine.yield, 1), "attempt to yield from outside a coroutine")
  expect_eq(select("#", coroutine.resume(me)), 2)
  expect_eq(select(2, coroutine.resume(me)), "cannot resume non-suspended coroutine")
  expect_eq(message(coroutine.close, me), "cannot close a running coroutine")
  local co = coroutine.create(function()
    expect_eq(coroutine.status(me), "normal")
    expect_eq(coroutine.isyieldable(), true)
    expect_eq(select(2, coroutine.running()), false)
    expect_eq(message(coroutine.close, me), "cannot close a normal coroutine")
    return coroutine.yield("paused")
  end)
  expect_eq(select(2, coroutine.resume(co)), "paused")
  expect_eq(coroutine.status(co), "suspended")
  expect_eq(select(2, coroutine.resume(co, "back")), "back")
  expect_eq(coroutine.status(co), "dead")
  return me
end

test("the main chunk and every task see themselves as Lua's main thread", function()
  local main = main_thread_view()
  local task = sched.spawn(function()
    local me = main_thread_view()
    expect_eq(coroutine.status(main), "normal", "another task's thread is active")
    expect_eq(select(2, coroutine.resume(main)), "cannot resume non-suspended coroutine")
    return me
  end, {name = "viewer"})
  local its = task:join()
  expect_eq(coroutine.status(its), "dead", "a finished task's thread")
  expect_eq(select(2, coroutine.resume(its)), "cannot resume dead coroutine")
end)

test("three nested coroutines block in a task and resume in order", function()
  local m = sync.Mutex("held")
  local log = {}
  local function add(what) log[#log + 1] = what end
  local held = m:lock()
  local task = sched.spawn(function()
    local c1 = coroutine.wrap(function()
      local c2 = coroutine.create(function()
        local c3 = coroutine.wrap(function()
          add("c3 locks")
          local g <close> = m:lock()  -- contended: the task blocks here
          add("c3 has it")
          coroutine.yield("c3 yields")
          add("c3 ends")
          return "c3 done"
        end)
        add(c3())
        add(c3())
        return "c2 done"
      end)
      local ok, r = coroutine.resume(c2)
      add(r)
      return "c1 done"
    end)
    add(c1())
  end, {name = "nested"})
  until_blocked(task)
  add("main unlocks")
  kernel.drop(held)
  task:join()
  expect_eq(table.concat(log, ", "),
    "c3 locks, main unlocks, c3 has it, c3 yields, c3 ends, c3 done, c2 done, c1 done")
end)

test("a generator that yields the CPU inside coroutine.wrap interleaves with other tasks", function()
  local order = {}
  local function gen(name)
    return coroutine.wrap(function()
      for i = 1, 3 do
        sched.yield()  -- the task's yield: through the wrap, to the scheduler
        coroutine.yield(name .. i)
      end
    end)
  end
  local a = sched.spawn(function() for v in gen("a") do order[#order + 1] = v end end, {name = "a", cpu = 0})
  local b = sched.spawn(function() for v in gen("b") do order[#order + 1] = v end end, {name = "b", cpu = 0})
  a:join() b:join()
  expect_eq(#order, 6)
  local seen = table.concat(order, " ")
  assert(seen:find("a1") < seen:find("a2") and seen:find("b1") < seen:find("b2"), seen)
  assert(seen ~= "a1 a2 a3 b1 b2 b3", "the tasks took turns: " .. seen)
end)

test("a coroutine its task waits in is normal to everyone else: no resume, no close", function()
  local m = sync.Mutex("gate")
  local held = m:lock()
  local inner
  local task = sched.spawn(function()
    inner = coroutine.create(function() local g <close> = m:lock() return "locked" end)
    return coroutine.resume(inner)
  end, {name = "waiter"})
  until_blocked(task)
  expect_eq(coroutine.status(inner), "normal")
  expect_eq(select(2, coroutine.resume(inner)), "cannot resume non-suspended coroutine")
  expect_eq(message(coroutine.close, inner), "cannot close a normal coroutine")
  kernel.drop(held)
  local ok, r = task:join()
  expect_eq(ok, true) expect_eq(r, "locked")
  expect_eq(coroutine.status(inner), "dead")
end)

test("a deadlock found while main waits inside a coroutine raises in that coroutine", function()
  local a = sync.Mutex("a")
  local ga = a:lock()
  local other = sched.spawn(function() local g <close> = a:lock() end, {name = "other"})
  until_blocked(other)
  local co = coroutine.create(function() return other:join() end)  -- main waits for other, which waits for main
  local ok, err = coroutine.resume(co)
  expect_eq(ok, false)
  expect_eq(err.errno, "EDEADLK")
  expect_eq(coroutine.status(co), "dead")
  kernel.drop(ga)
  other:join()
end)

test("a blocking call where no yield can reach the scheduler is the bug it was", function()
  local m = sync.Mutex("sorted")
  local held <close> = m:lock()
  sched.spawn(function()
    local err = select(2, pcall(table.sort, {1, 2}, function() local g <close> = m:lock() return false end))
    expect_eq(err.bug, true)
    expect_eq(err.message, "Mutex{sorted}.lock() would wait here, but this code cannot yield to the scheduler (it runs inside a metamethod, a callback from native code, or a coroutine resumed outside a task)")
  end, {name = "sorter"}):join()
end)

test("a coroutine suspended inside a binding's callback cannot be closed: what it was lent would stay borrowed", function()
  local p = kernel.page.Page.alloc_page()
  local co = coroutine.create(function() p:with_page_mapped(function(m) coroutine.yield(m) end) end)
  local _, m = coroutine.resume(co)
  expect_eq(message(coroutine.close, co),
    "cannot close a coroutine suspended inside the callback of 'with_page_mapped': resume it past the callback first")
  expect_eq(kernel.state(m), "borrowed")
  expect_eq(coroutine.resume(co), true)
  expect_eq(kernel.state(m), "dropped", "the callback ended: its Mapping with it")
  expect_eq(coroutine.close(co), true)
  kernel.drop(p)
  local plain = coroutine.create(function() coroutine.yield() end)
  coroutine.resume(plain)
  expect_eq(coroutine.close(plain), true, "one suspended outside any callback closes as in Lua")
end)
