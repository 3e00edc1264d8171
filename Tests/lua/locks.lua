-- kernel.sync: spinlocks, mutexes, guards and lockdep.
local sched, sync = kernel.sched, kernel.sync

test("a mutex keeps a read-modify-write whole across preemption", function()
  local m = sync.Mutex("counter")
  local counter = 0
  for i = 1, 4 do
    sched.spawn(function()
      for j = 1, 200 do
        local g <close> = m:lock()
        local c = counter
        kernel.page_align(j)  -- a binding call: a preemption point
        counter = c + 1
      end
    end)
  end
  sched.run()
  expect_eq(counter, 800)
  local s = m:stats()
  expect_eq(s.acquisitions, 800)
  assert(s.contentions > 0, "four tasks contended")
  expect_eq(s.owner, nil)
end)

test("a spinlock disables preemption while held", function()
  local s = sync.SpinLock("s")
  expect_eq(sched.preempt_count(), 0)
  do
    local g <close> = s:lock()
    expect_eq(sched.preempt_count(), 1)
    expect_eq(sched.smp_processor_id(), sched.raw_smp_processor_id(), "a CPU is stable under a spinlock")
  end
  expect_eq(sched.preempt_count(), 0)
end)

test("preempt_enable may not take back what a held spinlock disabled", function()
  local s = sync.SpinLock("s")
  local g <close> = s:lock()
  local e = expect_error("preempt_enable without a matching preempt_disable in task 'main': the count left is what SpinLock{s}", sched.preempt_enable)
  expect_eq(e.bug, true)
  expect_eq(sched.preempt_count(), 1, "still not preemptible")
  sched.preempt_disable()
  sched.preempt_enable()  -- a matched pair is fine
  expect_eq(sched.preempt_count(), 1)
end)

test("sleeping while holding a spinlock is a bug", function()
  local s, m = sync.SpinLock("s"), sync.Mutex("m")
  local g <close> = s:lock()
  local err = expect_error("BUG", m.lock, m)
  assert(err.message:find("^sleeping function called from invalid context: mutex_lock%(Mutex{m}%) in task 'main' with preempt_count 1; holding SpinLock{s}"), err.message)
  expect_error("sleeping function called from invalid context: alloc_pages", kernel.page.Page.alloc_page, kernel.gfp.GFP_KERNEL)
  kernel.drop(kernel.page.Page.alloc_page(kernel.gfp.GFP_ATOMIC))  -- atomic allocations may
  expect_error("scheduling while atomic", sched.yield)
  expect_error("sleeping function called from invalid context: cond_resched", sched.cond_resched)
  expect_error("sleeping function called from invalid context", sched.run)
  local tg <close> = m:try_lock()
  assert(tg, "try_lock never sleeps")
end)

test("try_lock: a guard when free, nil when another task holds it", function()
  local m = sync.Mutex("m")
  local g = m:try_lock()
  assert(g, "free")
  local other = sched.spawn(function() return m:try_lock() end)
  expect_eq(other:join(), nil)
  kernel.drop(g)
  local again = sched.spawn(function() local x = m:try_lock() local ok = x ~= nil kernel.drop(x) return ok end)
  expect_eq(again:join(), true)
end)

test("guards are not Send: another task may not drop one", function()
  local m = sync.Mutex("m")
  local g = m:lock()
  local t = sched.spawn(function() kernel.drop(g) end, {name = "thief"})
  local err = expect_error("BUG", t.join, t)
  assert(err.message:find("MutexGuard{Mutex{m}} released by task 'thief'; it was taken by task 'main'"), err.message)
  expect_eq(kernel.state(g), "owned", "the failed drop left it held")
  kernel.drop(g)
  expect_error("double drop", kernel.drop, g)
  expect_eq(m:stats().owner, nil)
end)

test("taking a lock twice is a bug; so is dropping a lock while a guard borrows it", function()
  local m = sync.Mutex("twice")
  local g <close> = m:lock()
  local err = expect_error("BUG", m.lock, m)
  assert(err.message:find("possible recursive locking detected: task 'main' is trying to acquire Mutex{twice}"), err.message)
  expect_error("dropped while borrowed", kernel.drop, m)
end)

test("a lock inversion is reported even when this run does not deadlock", function()
  local a, b = sync.Mutex("A"), sync.Mutex("B")
  local first = sched.spawn(function()
    local ga <close> = a:lock()
    local gb <close> = b:lock()
  end, {name = "ab"})
  first:join()  -- A then B, all released: no deadlock is possible now
  local second = sched.spawn(function()
    local gb <close> = b:lock()
    local ga <close> = a:lock()
  end, {name = "ba"})
  local err = expect_error("BUG", second.join, second)
  local m = err.message
  assert(m:find("^possible circular locking dependency: task 'ba' is trying to acquire Mutex{A} at Tests/lua/locks.lua:%d+ while holding Mutex{B}"), m)
  assert(m:find("Mutex{B} taken at Tests/lua/locks.lua:%d+ by task 'ab' while holding Mutex{A}"), m)
  expect_eq(a:stats().owner, nil)
  expect_eq(b:stats().owner, nil, "the failing task's guards closed as it unwound")
end)

test("a trylock adds no dependency", function()
  local a, b = sync.Mutex("A2"), sync.Mutex("B2")
  do local ga <close> = a:lock() local gb <close> = b:try_lock() end
  do local gb <close> = b:lock() local ga <close> = a:lock() end  -- no inversion: B2 was only tried
end)

test("spinlocks are contended across CPUs; waiters spin on their own CPU", function()
  local s = sync.SpinLock("spin")
  local counter, log = 0, {}
  for cpu = 0, 3 do
    sched.spawn(function()
      for j = 1, 50 do
        local g <close> = s:lock()
        log[#log + 1] = cpu
        local c = counter
        kernel.page_align(j)  -- a switch point: other CPUs run, this one keeps its task
        counter = c + 1
        log[#log + 1] = cpu
      end
    end, {cpu = cpu})
  end
  sched.run()
  expect_eq(counter, 200)
  assert(s:stats().contentions > 0, "other CPUs ran while it was held")
  for i = 1, #log, 2 do expect_eq(log[i], log[i + 1], "a critical section is never interleaved") end
end)

test("locks check their arguments", function()
  expect_error("bad argument #1 to 'SpinLock' (string expected, got table)", sync.SpinLock, {})
  local m = sync.Mutex()
  assert(tostring(m):match("^Mutex{#%d+}$"), tostring(m))
  expect_error("bad argument #1 to 'lock' (SpinLock expected, got number)", m.lock, 1)
end)
