-- races/percpu_rmw: a per-CPU read-modify-write without a guard loses updates
--
-- What it shows: two tasks on CPU 0 count events in a per-CPU counter by
-- reading it and writing back one more. Between the read and the write a
-- task can be preempted; the other one's increments are then overwritten.
-- this_cpu_inc() (or a CpuGuard around the read and write, as
-- get_cpu_var/put_cpu_var) makes the update atomic with respect to the
-- scheduler, which is all a per-CPU variable needs.
-- Bug depth 2: one preemption of a task between its read and its write,
-- and the other task running its whole increment meanwhile.
-- Found by (medians over 20 exploration seeds, which scripts/bench
-- measures again): random 4 runs, pct 15, dfs 4 schedules with 1
-- preemption. A window of one scheduling point among 49 is where random's
-- many preemptions beat PCT's few.
-- Budget: pct finds it within 50 runs (the worst of those 20 seeds: 39);
-- dfs with at most 1 preemption.
-- What to look at: `mmlab explore examples/races/percpu_rmw.lua` and the
-- shrunk schedule, one line: the preemption between the read and the write.
-- Writes: nothing. `... fixed` runs the fixed variant, clean on every schedule.
local fixed = ... == "fixed"
local counter = kernel.percpu.alloc("u64", 0)
local ROUNDS = 2
local WORK = 10  -- scheduling points of other work around each count

local function count_events()
  for _ = 1, ROUNDS do
    for _ = 1, WORK do kernel.sched.cond_resched() end  -- the events' own work
    if fixed then
      counter:this_cpu_inc()
    else
      local here = kernel.sched.smp_processor_id()  -- the task is bound: it stays here
      local seen = counter:per_cpu(here)
      counter:set_per_cpu(here, seen + 1)
    end
  end
end

kernel.sched.spawn(count_events, {name = "counter1", cpu = 0})
kernel.sched.spawn(count_events, {name = "counter2", cpu = 0})
kernel.sched.run()
local total = counter:sum()
assert(total == 2 * ROUNDS, "lost update: the counter missed increments")
print("counted", total)
