-- percpu_counter: counting events from many tasks three ways, and what each costs
--
-- What it shows:
--   * A per-CPU counter (this_cpu_inc) is exact and never contended: each
--     increment is one preempt-safe operation on the running CPU's slot.
--   * A shared counter under a spinlock is exact too, but the tasks queue
--     for the lock: the contention count says how often.
--   * An unguarded read-modify-write on a per-CPU slot (read the slot of the
--     CPU you are on, add one, write it back) loses updates: the task can be
--     preempted or migrated between the read and the write, and another task
--     on that CPU writes in between.
--   * The machine's seed decides every preemption: run it twice with the
--     same --seed and the numbers are the same; change the seed and the
--     interleaving (and the losses) change.
-- What to look at: the lost updates of the unguarded counter, the spread of
-- the per-CPU slots, and the spinlock's contention.
--
-- Writes: percpu-counters.svg (the three counters as the run goes) with
-- --out DIR; the samples with --results FILE.csv; a trace with --trace FILE.
--
-- Usage: mmlab --seed N examples/percpu_counter.lua [tasks] [events]
local sched, percpu, sync = kernel.sched, kernel.percpu, kernel.sync
local TASKS = kernel.params.tasks or math.tointeger(tonumber(arg and arg[1])) or 8
local EVENTS = kernel.params.events or math.tointeger(tonumber(arg and arg[2])) or 500
local expected = TASKS * EVENTS

local per_cpu = percpu.alloc("u64")        -- exact, no lock
local racy = percpu.alloc("u64")           -- unguarded read-modify-write
local lock = sync.SpinLock("counter")
local shared = 0                           -- under the spinlock

local tasks = {}
for t = 1, TASKS do
  tasks[t] = sched.spawn(function()
    for _ = 1, EVENTS do
      per_cpu:this_cpu_inc()

      do
        local g <close> = lock:lock()
        shared = shared + 1
      end

      local cpu = sched.raw_smp_processor_id()
      local seen = racy:per_cpu(cpu)       -- preemption may strike here...
      racy:set_per_cpu(cpu, seen + 1)      -- ...and this write loses someone else's
    end
  end, {name = "counter" .. t})
end
-- Main samples the counters while the tasks run.
local function running()
  for _, t in ipairs(tasks) do if t:state() ~= "done" and t:state() ~= "failed" then return true end end
end
local step = 0
repeat
  step = step + 1
  kernel.results.record{step = step, per_cpu = per_cpu:sum(), shared = shared, racy = racy:sum(),
                        lost = per_cpu:sum() - racy:sum()}
  kernel.progress("counting", per_cpu:sum(), expected)
  sched.yield()
until not running()
sched.run()  -- re-raises a task's failure
kernel.results.record{step = step + 1, per_cpu = per_cpu:sum(), shared = shared, racy = racy:sum(),
                      lost = per_cpu:sum() - racy:sum()}
kernel.plot.line{file = "percpu-counters.svg", title = "this_cpu_inc (exact, as the spinlocked counter) vs an unguarded RMW",
                 x = "step", y = {"per_cpu", "racy", "lost"}, xlabel = "samples by main", ylabel = "events counted"}

local function slots(v)
  local out = {}
  local values = v:values()
  for cpu = 0, sched.nr_cpu_ids() - 1 do out[#out + 1] = ("%5d"):format(values[cpu]) end
  return table.concat(out, " ")
end

print(("%d tasks x %d events = %d on %d CPUs, seed %d\n"):format(
  TASKS, EVENTS, expected, sched.nr_cpu_ids(), kernel.machine().seed))
print("counter                    total   lost   per CPU")
print(("per-CPU this_cpu_inc  %10d %6d   %s"):format(per_cpu:sum(), expected - per_cpu:sum(), slots(per_cpu)))
print(("shared, spinlock      %10d %6d"):format(shared, expected - shared))
print(("per-CPU unguarded RMW %10d %6d   %s"):format(racy:sum(), expected - racy:sum(), slots(racy)))
local s = lock:stats()
print(("\nspinlock: %d acquisitions, %d contended (%.1f%%)"):format(
  s.acquisitions, s.contentions, 100 * s.contentions / s.acquisitions))
