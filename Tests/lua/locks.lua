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

-- The line of the caller: where a lock was created, taken or asked for.
-- The message of the bug error of a failed pcall: `bug(pcall(f, ...))`
-- (the pcall on the test's line, where the error is raised).
local function bug(ok, err)
  assert(not ok and type(err) == "table" and err.bug, tostring(err))
  return err.message
end

test("taking a lock twice is a bug; so is dropping a lock while a guard borrows it", function()
  local m = sync.Mutex("twice")
  local g <close> = m:lock() local first = here()
  local message, at = bug(pcall(m.lock, m)), here()
  expect_eq(message, ("possible recursive locking detected: task 'main' is trying to acquire Mutex{twice} at %s, which it already holds (locked at %s)"):format(at, first))
  expect_error("possible recursive locking detected", m.lock_nested, m, 1)  -- the same lock deadlocks whatever the subclass
  expect_error("dropped while borrowed", kernel.drop, m)
end)

-- Lockdep works on classes (kernel/locking/lockdep.c): a lock's class is the
-- line that created it, as mutex_init's static lock_class_key is per call
-- site, or the class it names.
local MUTEXES
local function mutexes(n, options)
  local out = {}
  for i = 1, n do out[i] = sync.Mutex("m" .. i, options) MUTEXES = here() end  -- one line: one class
  return out
end

test("two locks of one class: the second is recursive locking unless nested (check_deadlock)", function()
  local m = mutexes(2)
  local g1 <close> = m[1]:lock() local first = here()
  local message, at = bug(pcall(m[2].lock, m[2])), here()
  expect_eq(message, ("possible recursive locking detected: task 'main' is trying to acquire Mutex{m2} (class %s) at %s and already holds Mutex{m1} (class %s), locked at %s; may be due to missing lock nesting notation: take the second one with a subclass (lock_nested), or give the locks classes of their own ({class=}; locks created on one line share one)"):format(MUTEXES, at, MUTEXES, first))
  local g2 <close> = m[2]:lock_nested(1)  -- mutex_lock_nested(&m2, SINGLE_DEPTH_NESTING)
  expect_eq(m[2]:stats().owner, "main")
  message, at = bug(pcall(m[2].lock_nested, m[2], 8)), here()
  expect_eq(message, ("looking up invalid subclass: 8 (lockdep has 8, 0 to 7) for Mutex{m2} at %s"):format(at))
  expect_error("bad argument #2 to 'lock_nested' (number expected, got no value)", m[2].lock_nested, m[2])
end)

test("a named class spans lines; different classes are not recursive", function()
  local a = sync.Mutex("a", {class = "bucket"})
  local b = sync.Mutex("b", {class = "bucket"})
  local c = sync.SpinLock("c")
  local d = sync.SpinLock("d")
  do
    local gc <close> = c:lock()
    local gd <close> = d:lock()  -- another line, another class: fine
  end
  local ga <close> = a:lock()
  expect_error("possible recursive locking detected: task 'main' is trying to acquire Mutex{b} (class bucket)", b.lock, b)
  expect_error("bad argument #2 to 'Mutex' (field 'class': string expected, got number)", sync.Mutex, "x", {class = 1})
  expect_error("unknown field 'klass'", sync.Mutex, "x", {klass = "y"})
end)

test("a lock inversion is reported even when this run does not deadlock", function()
  local a = sync.Mutex("A") local A = here()
  local b = sync.Mutex("B") local B = here()
  local took_a, took_b
  local first = sched.spawn(function()
    local ga <close> = a:lock() took_a = here()
    local gb <close> = b:lock() took_b = here()
  end, {name = "ab"})
  first:join()  -- A then B, all released: no deadlock is possible now
  local held, asked
  local second = sched.spawn(function()
    local gb <close> = b:lock() held = here()
    asked = here() local ga <close> = a:lock()
  end, {name = "ba"})
  local err = expect_error("BUG", second.join, second)
  expect_eq(err.message, table.concat({
    ("possible circular locking dependency detected: task 'ba' is trying to acquire Mutex{A} (class %s) at %s while holding Mutex{B} (class %s), locked at %s; which lock already depends on the new lock."):format(A, asked, B, held),
    "the existing dependency chain (in reverse order) is:",
    ("-> #1 (class %s): Mutex{B} taken at %s by task 'ab' while holding Mutex{A}, locked at %s"):format(B, took_b, took_a),
    ("-> #0 (class %s): Mutex{A} taken at %s by task 'ba'"):format(A, asked),
  }, "\n"))
  expect_eq(a:stats().owner, nil)
  expect_eq(b:stats().owner, nil, "the failing task's guards closed as it unwound")
end)

test("an inversion between classes is reported whatever the instances", function()
  local x = mutexes(2, {class = "X"})
  local y = mutexes(2, {class = "Y"})
  do local gx <close> = x[1]:lock() local gy <close> = y[1]:lock() end  -- X then Y
  local gy <close> = y[2]:lock() local held = here()
  local message, at = bug(pcall(x[2].lock, x[2])), here()  -- Y then X: other locks, the same classes
  expect_eq(message:match("^[^\n]*"), ("possible circular locking dependency detected: task 'main' is trying to acquire Mutex{m2} (class X) at %s while holding Mutex{m2} (class Y), locked at %s; which lock already depends on the new lock."):format(at, held))
end)

test("subclasses are classes of their own: nested in one order, then the other, is an inversion", function()
  local m = mutexes(2)
  do local g1 <close> = m[1]:lock() local g2 <close> = m[2]:lock_nested(1) end
  local g2 <close> = m[2]:lock_nested(1) local held = here()
  local message, at = bug(pcall(m[1].lock, m[1])), here()
  expect_eq(message:match("^[^\n]*"), ("possible circular locking dependency detected: task 'main' is trying to acquire Mutex{m1} (class %s) at %s while holding Mutex{m2} (class %s/1), locked at %s; which lock already depends on the new lock."):format(MUTEXES, at, MUTEXES, held))
end)

test("a trylock is neither checked nor recorded (validate_chain)", function()
  local a = sync.Mutex("A2")
  local b = sync.Mutex("B2")
  do local ga <close> = a:lock() local gb <close> = b:try_lock() end
  do local gb <close> = b:lock() local ga <close> = a:lock() end  -- no inversion: B2 was only tried
  local m = mutexes(2)
  local g1 <close> = m[1]:lock()
  local g2 <close> = m[2]:try_lock()  -- the same class, but a trylock cannot deadlock
  expect_eq(m[2]:stats().owner, "main")
  expect_eq(m[1]:try_lock(), nil, "held: the trylock fails, with no report")
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

test("a CpuGuard whose share a preempt_enable took cannot take a held spinlock's count", function()
  local g = kernel.percpu.CpuGuard()
  local s = sync.SpinLock("s")
  local l, site = s:lock(), here()
  kernel.sched.preempt_enable()  -- allowed: the CpuGuard's count is above the lock's
  -- Dropping the guard would take the lock's count: preemptible inside a
  -- spinlock, where a task spinning for it on this CPU would never let go.
  expect_eq(expect_error("BUG", kernel.drop, g).message,
    "put_cpu of CpuGuard{cpu=0, task=main} in task 'main': its preempt_count 1 is what SpinLock{s} (locked at " .. site .. ") took; an unmatched preempt_enable took the guard's share")
  expect_eq(kernel.sched.preempt_count(), 1, "the lock keeps preemption off")
  kernel.drop(l)
  expect_eq(s:stats().owner, nil)
  expect_eq(kernel.sched.preempt_count(), 0)
  kernel.debug.check()  -- the script's bug, not the model's
end)
