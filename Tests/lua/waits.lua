-- Wait queues and completions (kernel/sched/wait.c, include/linux/wait.h's
-- ___wait_event, kernel/sched/completion.c), through the engine's one way
-- to wait: a task blocks, and a script's coroutine inside it resumes.
local sched, sync = kernel.sched, kernel.sync

local function message(...) return tostring((select(2, pcall(...)))) end

test("wait_event: a true condition returns at once, checked once", function()
  local wq = sched.WaitQueue("q")
  local checks = 0
  expect_eq(select("#", wq:wait_event(function() checks = checks + 1; return 1 end)), 0)
  expect_eq(checks, 1, "the macro's fast path: no prepare_to_wait, no second check")
  expect_eq(tostring(wq), "WaitQueue{q}")
  expect_eq(tostring(sched.WaitQueue()), "WaitQueue{#2}", "a default name counts up")
end)

test("wait_event sleeps until a wake-up finds the condition true, rechecking after every wake", function()
  local wq = sched.WaitQueue("q")
  local ready, checks = false, 0
  local waiter = sched.spawn(function()
    wq:wait_event(function() checks = checks + 1; return ready end)
    return checks
  end, {name = "waiter"})
  until_blocked(waiter)
  expect_eq(checks, 2, "the fast path, then once on the queue before sleeping")
  wq:wake_up()
  until_blocked(waiter)
  expect_eq(checks, 3, "woken with the condition false: checked, asleep again")
  ready = true
  expect_eq(waiter:state(), "blocked", "a condition that turns true wakes nobody by itself")
  wq:wake_up_all()
  expect_eq(waiter:join(), 4)
end)

test("wake_up wakes every wait_event sleeper, the latest first, as __wake_up_common walks from the head", function()
  local wq = sched.WaitQueue("q")
  local go, woke = false, {}
  local tasks = {}
  for i = 1, 3 do
    tasks[i] = sched.spawn(function()
      wq:wait_event(function() return go end)
      woke[#woke + 1] = i
    end, {name = "w" .. i, cpu = 1})
  end
  for i = 1, 3 do until_blocked(tasks[i]) end
  go = true
  wq:wake_up()  -- not wake_up_all: wait_event's entries are not exclusive
  sched.run()
  expect_eq(table.concat(woke, " "), "3 2 1")
end)

test("a wake-up while the condition runs is not lost: the task rechecks instead of sleeping", function()
  local wq = sched.WaitQueue("q")
  local ready, inside, woken, checks = false, false, false, 0
  local waiter = sched.spawn(function()
    wq:wait_event(function()
      checks = checks + 1
      local seen = ready
      if checks == 2 then  -- on the queue: the waker runs now, and wakes it
        inside = true
        while not woken do sched.yield() end
      end
      return seen
    end)
    return checks
  end, {name = "waiter"})
  local waker = sched.spawn(function()
    while not inside do sched.yield() end
    ready = true
    wq:wake_up()
    woken = true
  end, {name = "waker"})
  waker:join()
  expect_eq(waiter:join(), 3, "the stale false of check 2 did not put it to sleep")
end)

test("wait_event inside a script's coroutine blocks the task and resumes the coroutine", function()
  local wq = sched.WaitQueue("q")
  local ready = false
  local waiter = sched.spawn(function()
    local co = coroutine.wrap(function(x)
      wq:wait_event(function() return ready end)
      return x .. " and back"
    end)
    return co("into the coroutine")
  end, {name = "waiter"})
  until_blocked(waiter)
  ready = true
  wq:wake_up()
  expect_eq(waiter:join(), "into the coroutine and back")
end)

test("an error in the condition leaves the queue and reaches the caller", function()
  local wq = sched.WaitQueue("q")
  local fail, ready = false, false
  local waiter = sched.spawn(function()
    local ok, err = pcall(wq.wait_event, wq, function()
      if fail then error("condition failed", 0) end
      return false
    end)
    expect_eq(ok, false)
    expect_eq(err, "condition failed")
    wq:wait_event(function() return ready end)
    return "second wait done"
  end, {name = "waiter"})
  until_blocked(waiter)
  fail = true
  wq:wake_up()
  until_blocked(waiter)
  ready = true
  wq:wake_up()
  expect_eq(waiter:join(), "second wait done")
end)

test("wait_event and wait_for_completion might sleep: under a spinlock a bug error, even when they would not wait", function()
  local wq, c, s = sched.WaitQueue("q"), sched.Completion("c"), sync.SpinLock("s")
  c:complete()
  local g <close> = s:lock() local at = here()
  expect_eq(message(wq.wait_event, wq, function() return true end),
    "BUG: sleeping function called from invalid context: wait_event on WaitQueue{q} in task 'main' with preempt_count 1; holding SpinLock{s} (locked at " .. at .. ")")
  expect_eq(message(c.wait_for_completion, c),
    "BUG: sleeping function called from invalid context: wait_for_completion on Completion{c} in task 'main' with preempt_count 1; holding SpinLock{s} (locked at " .. at .. ")")
  expect_eq(c:completion_done(), true, "the refused wait took nothing")
end)

test("bad arguments and waits nobody can end", function()
  local wq = sched.WaitQueue("q")
  expect_eq(message(wq.wait_event, wq), "bad argument #2 to 'wait_event' (function expected, got no value)")
  expect_eq(message(wq.wait_event, wq, 3), "bad argument #2 to 'wait_event' (function expected, got number)")
  expect_eq(message(sched.Completion().complete), "bad argument #1 to 'complete' (Completion expected, got no value)")
  expect_eq(message(sched.WaitQueue, {}), "bad argument #1 to 'WaitQueue' (string expected, got table)")
  expect_eq(message(wq.wait_event, wq, function() return false end),
    "EDEADLK: deadlock: every task is blocked\n  task 'main' (cpu 0): waits for a wake-up of WaitQueue{q} (wait_event); holds nothing")
  local c = sched.Completion("never")
  sched.spawn(function() c:wait_for_completion() end, {name = "stuck", cpu = 2})
  expect_eq(message(sched.run),
    "EDEADLK: deadlock: every task is blocked\n  task 'main' (cpu 0): waits for every other task to finish; holds nothing\n" ..
    "  task 'stuck' (cpu 2): waits for Completion{never} (wait_for_completion); holds nothing")
  c:complete()
  sched.run()
end)

test("a complete before the wait is not lost; done counts", function()
  local c = sched.Completion("c")
  expect_eq(c:completion_done(), false)
  expect_eq(c:try_wait_for_completion(), false)
  c:complete()
  c:complete()
  expect_eq(c:completion_done(), true)
  c:wait_for_completion()  -- takes one without sleeping
  expect_eq(c:try_wait_for_completion(), true)
  expect_eq(c:completion_done(), false, "both dones taken")
  expect_eq(c:try_wait_for_completion(), false)
end)

test("complete wakes one waiter, first come first served; complete_all every one, now and later", function()
  local c = sched.Completion("c")
  local woke = {}
  local tasks = {}
  for i = 1, 3 do
    tasks[i] = sched.spawn(function()
      c:wait_for_completion()
      woke[#woke + 1] = i
    end, {name = "w" .. i, cpu = 1})
    until_blocked(tasks[i])
  end
  c:complete()
  tasks[1]:join()
  until_blocked(tasks[2])
  expect_eq(tasks[3]:state(), "blocked")
  expect_eq(table.concat(woke, " "), "1", "one complete, one waiter: the first")
  c:complete_all()
  sched.run()
  expect_eq(table.concat(woke, " "), "1 2 3")
  c:wait_for_completion()
  c:wait_for_completion()
  expect_eq(c:try_wait_for_completion(), true, "complete_all: done stays UINT_MAX")
  c:complete()
  expect_eq(c:completion_done(), true, "complete after complete_all keeps it complete")
end)

test("a woken waiter whose done was taken first sleeps again", function()
  local c = sched.Completion("c")
  local waiter = sched.spawn(function() c:wait_for_completion(); return "finally" end, {name = "waiter", cpu = 1})
  until_blocked(waiter)
  c:complete()  -- wakes the waiter, which has not run yet
  expect_eq(c:try_wait_for_completion(), true, "main takes the done first")
  for _ = 1, 20 do sched.yield() end
  expect_eq(waiter:state(), "blocked", "it found done at 0 and went back on the queue")
  c:complete()
  expect_eq(waiter:join(), "finally")
end)

test("wait_for_completion inside a script's coroutine, completed from another task", function()
  local c = sched.Completion("c")
  local waiter = sched.spawn(function()
    local co = coroutine.create(function()
      c:wait_for_completion()
      coroutine.yield("completed")
      return "resumed again"
    end)
    local _, first = coroutine.resume(co)
    local _, second = coroutine.resume(co)
    return first, second
  end, {name = "waiter"})
  sched.spawn(function()
    until_blocked(waiter)
    c:complete()
  end, {name = "completer"})
  local first, second = waiter:join()
  expect_eq(first, "completed")
  expect_eq(second, "resumed again")
end)
