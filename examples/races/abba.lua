-- races/abba: an AB-BA between a process's mmap lock and its Binder allocator lock
--
-- What it shows: a transaction takes the allocator's lock and then the
-- mmap lock to install pages (binder_alloc_new_buf), while an munmap of the
-- binder mapping holds the mmap lock for writing and takes the allocator
-- lock (binder_vma_close). Interleaved, each holds what the other waits
-- for. Lockdep needs no interleaving: once both orders have run, in any
-- order, the second one is a "possible circular locking dependency", as
-- the kernel's lockdep reports it on the first run that takes both paths.
-- The fix is the kernel's: the allocator never takes the mmap lock while
-- holding its own lock (it drops it first, or uses mmap_read_trylock).
-- Bug depth 1 for lockdep (every schedule that runs both paths reports
-- it); the deadlock itself needs one preemption inside the transaction.
-- Found by: every strategy in its 1st run, whatever the seed (scripts/bench
-- measures the medians over 20 exploration seeds: random 1, pct 1, dfs 1).
-- Budget: pct finds it within 1 run; dfs with at most 0 preemptions.
-- What to look at: the lockdep report names both chains of sites.
-- Writes: nothing. `... fixed` runs the fixed variant, clean on every schedule.
local fixed = ... == "fixed"
local process = kernel.mm.mm_alloc()
local alloc_lock = kernel.sync.Mutex("binder_alloc.mutex")

local function transaction()
  if fixed then
    do
      local g <close> = alloc_lock:lock()  -- reserve the buffer's range
    end
    local mmap <close> = process:mmap_read_lock()  -- then install its pages
  else
    local g <close> = alloc_lock:lock()
    local mmap <close> = process:mmap_read_lock()
  end
end

local function unmap()
  local mmap <close> = process:mmap_write_lock()
  local g <close> = alloc_lock:lock()  -- binder_vma_close: the mapping goes
end

kernel.sched.spawn(transaction, {name = "transaction"})
kernel.sched.spawn(unmap, {name = "munmap"})
kernel.sched.run()
print("both paths ran")
