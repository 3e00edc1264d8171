-- mm_lifecycle: mm_users, mm_count, and what each kind of mm handle allows
--
-- What it shows:
--   * A process task holds an mm_users reference to its address space for
--     its life; kernel.current():mm() is a borrowed view that holds nothing.
--   * A driver that must outlive the process pins the mm with mmgrab (an
--     Mm: mm_count + 1), as binder does in open(). The Mm keeps the
--     structure, not the address space.
--   * To touch the memory, the driver upgrades with mmget_not_zero, which
--     works only while some user is left.
--   * When the process exits, mm_users reaches zero: exit_mmap unmaps every
--     VMA, frees the pages and page tables, and drops the users' mm_count.
--     The Mm still pins the structure (its PGD); mmget_not_zero now fails.
--   * The last mmdrop frees the structure.
-- What to look at: the counts on each line, and which calls still work.
--
-- Writes: mm-lifecycle.svg (the counts step by step) with --out DIR; the
-- steps with --results FILE.
--
-- Usage: mmlab examples/mm_lifecycle.lua
local mm, sched, uaccess = kernel.mm, kernel.sched, kernel.uaccess
local PAGE = kernel.PAGE_SIZE

local steps = 0
local function show(step, m)
  print(("%-40s users=%d count=%d vmas=%d page-table pages=%d"):format(
    step, m:mm_users(), m:mm_count(), m:map_count(), m:pgtables_bytes() // PAGE))
  steps = steps + 1
  kernel.results.record{step = steps, what = step, mm_users = m:mm_users(), mm_count = m:mm_count(),
                        vmas = m:map_count(), page_tables = m:pgtables_bytes() // PAGE}
end

local function try(what, fn, ...)
  local ok, result = pcall(fn, ...)
  print(("  %-38s %s"):format(what, ok and tostring(result) or "error: " .. tostring(result)))
end

local free_before = kernel.mem.stats().free_pages + kernel.mem.stats().pcp_pages

-- fork: the new address space goes to the process task, which holds its
-- own user; the parent lets its reference go.
local u = mm.mm_alloc()
show("mm_alloc", u)
local state = "starting"
local addr
local process = sched.spawn(function()
  local me = kernel.current():mm()
  addr = me:mmap{len = 4 * PAGE}
  uaccess.UserSlice(me, addr, 13):writer():write_raw("hello, kernel")
  state = "running"
  while state ~= "exit" do sched.yield() end
  -- returning is exit(): exit_mm drops the task's user
end, {name = "process", mm = u})
show("spawned the process with it", u)
kernel.drop(u)
while state ~= "running" do sched.yield() end

local view = process:mm()
show("the process mapped 4 pages, wrote one", view)
print(("  kernel.state(view) = %s: CurrentTask::mm() takes no count"):format(kernel.state(view)))

-- A driver (another task) pins the mm, as binder's open() does.
local pinned
sched.spawn(function()
  pinned = process:mm():mmgrab()
end, {name = "driver"}):join()
show("the driver pinned it with mmgrab", pinned)

do
  local user <close> = pinned:mmget_not_zero()
  show("mmget_not_zero while the process runs", user)
  try("read through it:", function()
    return uaccess.UserSlice(user, addr, 13):reader():read_raw(13)
  end)
end

state = "exit"
process:join()
show("the process exited (mm_users hit 0)", pinned)
try("pinned:mmget_not_zero()", pinned.mmget_not_zero, pinned)
try("pinned:mm_count()", pinned.mm_count, pinned)
try("view:mmap_read_lock()", view.mmap_read_lock, view)

kernel.plot.line{file = "mm-lifecycle.svg", title = "One mm_struct from mm_alloc to its last mmdrop", x = "step",
                 y = {"mm_users", "mm_count", "vmas", "page_tables"}, xlabel = "step (see the printed lines)"}
kernel.drop(pinned)
print("the last mmdrop freed it")
try("pinned:mm_users()", pinned.mm_users, pinned)
local free_after = kernel.mem.stats().free_pages + kernel.mem.stats().pcp_pages
print(("pages not returned to the allocator: %d"):format(free_before - free_after))
