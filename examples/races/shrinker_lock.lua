-- races/shrinker_lock: a shrinker that takes a blocking lock instead of a trylock
--
-- What it shows: Binder's shrinker (binder_alloc_free_page) frees a page
-- of a process's binder mapping, which needs that process's mmap lock. It
-- takes it with mmap_read_trylock and skips the page (LRU_SKIP) when the
-- lock is busy, because whoever holds the lock may be waiting for reclaim
-- itself: here a task maps memory under the mmap write lock and waits for
-- the shrinker to give pages back. With a blocking mmap_read_lock the
-- shrinker waits for the mapper and the mapper for the shrinker. Lockdep
-- does not see it (a completion is not a lock): only the interleaving does.
-- Bug depth 1 or 2: the mapper must take the lock before the shrinker asks
-- for it; no preemption is needed when the mapper starts first, one when
-- the shrinker does.
-- Found by (medians over 20 exploration seeds, which scripts/bench
-- measures again): random 96.5 runs, pct 7.5, dfs 2 schedules (the mapper
-- starting first: no preemption).
-- Budget: pct finds it within 40 runs (the worst of those 20 seeds: 35);
-- dfs with at most 1 preemption.
-- What to look at: the EDEADLK report names who holds and who waits.
-- Writes: nothing. `... fixed` runs the fixed variant, clean on every schedule.
local fixed = ... == "fixed"
local process = kernel.mm.mm_alloc()
local reclaimed = kernel.sched.Completion()
local LRU_PAGES = 2
local WORK = 20  -- scheduling points before the mapper takes the lock

local function shrinker()
  local freed = 0
  for _ = 1, LRU_PAGES do
    if fixed then
      local mmap <close> = process:mmap_read_trylock()
      if mmap then freed = freed + 1 end  -- busy: LRU_SKIP, try the next page
    else
      local mmap <close> = process:mmap_read_lock()
      freed = freed + 1
    end
  end
  reclaimed:complete_all()  -- reclaim made its pass
  return freed
end

local function mapper()
  for _ = 1, WORK do kernel.sched.cond_resched() end  -- it sets the mapping up first
  local mmap <close> = process:mmap_write_lock()
  reclaimed:wait_for_completion()  -- memory is short: wait for reclaim
end

local s = kernel.sched.spawn(shrinker, {name = "kswapd0"})
local m = kernel.sched.spawn(mapper, {name = "mapper"})
kernel.sched.run()
print("the shrinker freed", s:join(), "pages")
