-- races/teardown_mmget: a teardown that uses an mm without mmget_not_zero
--
-- What it shows: a driver keeps a process's mm to work on it later (as
-- Binder's allocator does), but only `current->mm`, borrowed: no mm_users
-- reference is taken (Rust's `CurrentTask::mm()`). When the process exits
-- first, exit_mm drops the last user and exit_mmap tears the address space
-- down; the driver's later mmap_read_lock is then on a dead mm. The fix is
-- Binder's: keep an `Mm` (mmgrab: the struct stays, the address space may
-- go) and take a user with mmget_not_zero() for each use, skipping the
-- work when it returns nil.
-- Bug depth 2: the driver must be preempted between its set-up and its
-- work, and the process exit meanwhile.
-- Found by (medians over 20 exploration seeds, which scripts/bench
-- measures again): random 348 runs, pct 5, dfs 6 schedules with 1
-- preemption.
-- Budget: pct finds it within 20 runs (the worst of those 20 seeds: 16);
-- dfs with at most 1 preemption.
-- What to look at: the bug error: mm_users reached zero.
-- Writes: nothing. `... fixed` runs the fixed variant, clean on every schedule.
local fixed = ... == "fixed"
local mm = kernel.mm.mm_alloc()
local addr = mm:mmap{len = 4096}
local saved, acked = kernel.sched.Completion(), kernel.sched.Completion()
local kept
local WORK = 20  -- scheduling points of work the process does before it exits

local function process()
  kept = fixed and kernel.current():mm():mmgrab() or kernel.current():mm()
  saved:complete()
  acked:wait_for_completion()  -- the driver is set up
  for _ = 1, WORK do kernel.sched.cond_resched() end  -- the rest of its life
end  -- the process exits: its mm loses its last user

local function driver()
  saved:wait_for_completion()
  acked:complete()
  kernel.sched.cond_resched()  -- the driver's work comes later
  local user = kept
  if fixed then
    user = kept:mmget_not_zero()
    if not user then return "the process is gone: nothing to do" end
  end
  local mmap <close> = user:mmap_read_lock()
  return mmap:vma_lookup(addr) and "the mapping is there" or "no mapping"
end

local p = kernel.sched.spawn(process, {name = "process", mm = mm})
kernel.drop(mm)  -- the process holds the only user now
local d = kernel.sched.spawn(driver, {name = "driver"})
kernel.sched.run()
print(d:join())
