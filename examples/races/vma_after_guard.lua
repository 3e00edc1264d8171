-- races/vma_after_guard: a VMA used after its guard, in another task
--
-- What it shows: a VmaRef is valid only while the mmap lock guard it was
-- looked up under is held (Rust's `&VmaRef` borrows the guard). Here a
-- fault handler looks a VMA up and hands it to a worker, and unlocks once
-- the worker says it has it; but the worker reads the VMA's bounds a little
-- after saying so. If the worker is preempted in between, the VMA is read
-- after the lock went and could be freed under it (an munmap may run
-- meanwhile). The fix: the worker says so only when it is done with it.
-- Bug depth 2: the worker must be preempted before it reads and the
-- handler run to its unlock meanwhile.
-- Found by (medians over 20 exploration seeds, which scripts/bench
-- measures again): random 91.5 runs, pct 5, dfs 4 schedules with 1
-- preemption.
-- Budget: pct finds it within 20 runs (the worst of those 20 seeds: 15);
-- dfs with at most 1 preemption.
-- What to look at: the bug error names the VmaRef and its released guard.
-- Writes: nothing. `... fixed` runs the fixed variant, clean on every schedule.
local fixed = ... == "fixed"
local process = kernel.mm.mm_alloc()
local addr = process:mmap{len = 4 * 4096}
local handed, taken = kernel.sched.Completion(), kernel.sched.Completion()
local shared
local WORK = 20  -- scheduling points of the fault after the hand-over

local function fault_handler()
  local mmap <close> = process:mmap_read_lock()
  shared = mmap:vma_lookup(addr)
  handed:complete()
  taken:wait_for_completion()
  for _ = 1, WORK do kernel.sched.cond_resched() end  -- the rest of the fault
end  -- the mmap lock goes

local function worker()
  handed:wait_for_completion()
  if not fixed then taken:complete() end  -- too early
  kernel.sched.cond_resched()  -- other work first
  local size = shared:vm_end() - shared:vm_start()
  if fixed then taken:complete() end
  return size
end

local h = kernel.sched.spawn(fault_handler, {name = "fault"})
local w = kernel.sched.spawn(worker, {name = "worker"})
kernel.sched.run()
print("the worker saw a VMA of", w:join(), "bytes")
