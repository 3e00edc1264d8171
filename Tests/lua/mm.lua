-- kernel.mm: mm refcounts, the mmap lock, VMAs, page tables.
local mm, sched, page = kernel.mm, kernel.sched, kernel.page
local PAGE = kernel.PAGE_SIZE

local function free_pages()
  local s = kernel.mem.stats()
  return s.free_pages + s.pcp_pages
end

test("mm_alloc, mmgrab, mmget, clone: the counts the kernel keeps", function()
  local u = mm.mm_alloc()
  expect_eq(tostring(u), ("MmWithUser{id=%d, users=1, count=1}"):format(u:id()))
  local m = u:mmgrab()
  expect_eq(m:mm_count(), 2)
  local u2 = u:mmget()
  expect_eq(u:mm_users(), 2)
  expect_eq(u:mm_count(), 2, "the users hold one count together")
  local m2, u3 = m:clone(), u2:clone()
  expect_eq(getmetatable(m2).__name, "Mm")
  expect_eq(getmetatable(u3).__name, "MmWithUser")
  expect_eq(u:mm_users(), 3)
  expect_eq(u:mm_count(), 3)
  local u4 = m:mmget_not_zero()
  expect_eq(u4:mm_users(), 4)
  for _, h in ipairs{u4, u3, u2, m2} do kernel.drop(h) end
  expect_eq(u:mm_users(), 1)
  expect_eq(m:mm_count(), 2)
  kernel.drop(u)
  kernel.drop(m)
end)

test("mmput at zero tears the address space down; mmdrop at zero frees it; nothing leaks", function()
  local base = free_pages()
  local u = mm.mm_alloc()
  local a = u:mmap{len = 4 * PAGE}
  kernel.uaccess.UserSlice(u, a, 4 * PAGE):writer():write_raw(("z"):rep(4 * PAGE))
  expect_eq(u:pgtables_bytes(), 4 * PAGE, "PGD, PUD, PMD and PTE tables")
  expect_eq(free_pages(), base - 8, "4 tables and 4 faulted pages")
  local m = u:mmgrab()
  kernel.drop(u)
  expect_eq(tostring(m), ("Mm{id=%d, users=0, count=1}"):format(m:id()))
  expect_eq(m:map_count(), 0, "exit_mmap unmapped every VMA")
  expect_eq(m:pgtables_bytes(), PAGE, "only the PGD is left until mmdrop")
  expect_eq(free_pages(), base - 1)
  expect_eq(m:mmget_not_zero(), nil)
  kernel.drop(m)
  expect_eq(free_pages(), base, "the PGD went with the last mmdrop")
  for _, leak in ipairs(kernel.debug.leaks()) do
    assert(not leak.type:find("Mm"), "leaked " .. leak.object)
  end
end)

test("a task spawned with an mm holds a user for its life; task:mm() is borrowed", function()
  local u = mm.mm_alloc()
  expect_eq(kernel.current():mm(), nil, "main is a kernel thread")
  local seen
  local t = sched.spawn(function()
    local me = kernel.current():mm()
    seen = {kernel.state(me), me:mm_users(), me:id()}
    return me:mmap{len = PAGE}
  end, {name = "proc", mm = u})
  expect_eq(u:mm_users(), 2)
  local view = t:mm()
  expect_eq(kernel.state(view), "borrowed")
  expect_eq(view:id(), u:id())
  kernel.drop(view)  -- a borrowed handle releases nothing
  expect_eq(u:mm_users(), 2)
  local a = t:join()
  expect_eq(seen[1], "borrowed")
  expect_eq(seen[2], 2)
  expect_eq(seen[3], u:id())
  expect_eq(u:mm_users(), 1, "exit_mm dropped the task's user")
  expect_eq(t:mm(), nil)
  assert(a > 0 and u:map_count() == 1, "the task mapped into the shared mm")
  kernel.drop(u)
end)

test("the last task user exiting tears down the mm an Mm still pins", function()
  local u = mm.mm_alloc()
  local view
  local t = sched.spawn(function()
    view = kernel.current():mm()
    view:mmap{len = PAGE}
  end, {mm = u})
  local m = u:mmgrab()
  kernel.drop(u)
  t:join()
  expect_eq(m:mm_users(), 0)
  expect_eq(m:mm_count(), 1)
  expect_eq(m:mmget_not_zero(), nil)
  local err = expect_error("BUG", view.mmap_read_lock, view)
  assert(err.message:find("after mm_users reached zero"), err.message)
  expect_error("BUG", view.mmget, view)
  expect_eq(view:mm_users(), 0, "Mm methods stay safe")
  kernel.drop(m)
end)

test("into_mmput_async moves the handle and defers exit_mmap to the work queue", function()
  local u = mm.mm_alloc()
  u:mmap{len = PAGE}
  local m = u:mmgrab()
  local async = u:into_mmput_async()
  expect_eq(kernel.state(u), "moved")
  expect_error("use after move", u.mm_users, u)
  expect_eq(getmetatable(async).__name, "MmWithUserAsync")
  expect_eq(async:map_count(), 1, "MmWithUser methods work on it")
  kernel.drop(async)
  expect_eq(m:mm_users(), 0)
  expect_eq(m:map_count(), 1, "teardown has not run yet")
  expect_eq(m:mm_count(), 2, "the users' count goes with the teardown")
  sched.yield()  -- the worker runs between tasks
  expect_eq(m:map_count(), 0)
  expect_eq(m:mm_count(), 1)
  kernel.drop(m)
end)

test("run() returns once the queued work has run, with no task to wait for", function()
  local u = mm.mm_alloc()
  u:mmap{len = PAGE}
  local m = u:mmgrab()
  kernel.drop(u:into_mmput_async())
  expect_eq(m:map_count(), 1, "teardown has not run yet")
  sched.run()
  expect_eq(m:map_count(), 0)
  expect_eq(m:mm_count(), 1)
  kernel.drop(m)
end)

test("mmput_async is allowed where mmput may not sleep", function()
  local u = mm.mm_alloc()
  local a = u:mmget():into_mmput_async()
  local b = u:mmget()
  local s = kernel.sync.SpinLock("s")
  do
    local g <close> = s:lock()
    kernel.drop(a)
    expect_error("sleeping function called from invalid context: mmput", kernel.drop, b)
  end
  expect_eq(kernel.state(b), "owned", "a failed drop leaves the handle")
  kernel.drop(b)
  kernel.drop(u)
end)

test("a page inserted with vm_insert_page outlives its owner until zap_vma_range", function()
  local u = mm.mm_alloc()
  local p = page.Page.alloc_page(kernel.gfp.GFP_KERNEL)
  p:write_raw("shared with userspace", 0)
  local a = u:mmap{len = 2 * PAGE, hook = function(vma)
    vma:set_mixedmap():vm_insert_page(vma:vm_start(), p)
  end}
  expect_eq(p:refcount(), 2, "the PTE holds a reference")
  local pfn = p:pfn()
  kernel.drop(p)
  local mapped = u:follow_page(a)
  expect_eq(mapped:pfn(), pfn)
  expect_eq(mapped:refcount(), 1)
  expect_eq(kernel.uaccess.UserSlice(u, a, 21):reader():read_raw(21), "shared with userspace")
  do
    local g <close> = u:mmap_read_lock()
    local vma = g:vma_lookup(a)
    vma:zap_vma_range(a, PAGE)
  end
  expect_eq(u:follow_page(a), nil)
  expect_error("use after free: BorrowedPage", mapped.read_u8, mapped, 0)
  kernel.drop(u)
end)

test("exit_mmap drops the references of inserted pages", function()
  local u = mm.mm_alloc()
  local p = page.Page.alloc_page(kernel.gfp.GFP_KERNEL)
  u:mmap{len = PAGE, hook = function(vma) vma:set_mixedmap():vm_insert_page(vma:vm_start(), p) end}
  expect_eq(p:refcount(), 2)
  kernel.drop(u)
  expect_eq(p:refcount(), 1)
  kernel.drop(p)
end)

test("vm_insert_page: EFAULT outside the VMA, EBUSY where a page is, only with MIXEDMAP", function()
  local u = mm.mm_alloc()
  local p = page.Page.alloc_page(kernel.gfp.GFP_KERNEL)
  local a = u:mmap{len = 2 * PAGE, hook = function(vma)
    local mixed = vma:set_mixedmap()
    mixed:vm_insert_page(vma:vm_start() + 5, p)  -- the page holding the address, as the kernel does
    expect_error("EBUSY", mixed.vm_insert_page, mixed, vma:vm_start(), p)
    expect_error("EFAULT", mixed.vm_insert_page, mixed, vma:vm_end(), p)
    expect_error("EFAULT", mixed.vm_insert_page, mixed, vma:vm_start() - 1, p)
    mixed:vm_insert_page(vma:vm_end() - 1, p)
  end}
  expect_eq(p:refcount(), 3)
  local b = u:mmap{len = PAGE}
  do
    local g <close> = u:mmap_read_lock()
    expect_eq(g:vma_lookup(b):as_mixedmap_vma(), nil, "anonymous memory is not MIXEDMAP")
    local mixed = g:vma_lookup(a):as_mixedmap_vma()
    expect_eq(getmetatable(mixed).__name, "VmaMixedMap")
    expect_error("EBUSY", mixed.vm_insert_page, mixed, a + PAGE, p)
    expect_eq(g:vma_lookup(b).vm_insert_page, nil, "only a VmaMixedMap has it")
  end
  kernel.drop(u)
  expect_eq(p:refcount(), 1)
  kernel.drop(p)
end)

test("vm_insert_page validates as validate_page_before_insert: EINVAL for an anonymous page, refcount 0, the zero page in a shared writable mapping", function()
  local u = mm.mm_alloc()
  local anon = u:mmap{len = 2 * PAGE}
  kernel.uaccess.UserSlice(u, anon, 1):writer():write_raw("a")      -- an anonymous page
  kernel.uaccess.UserSlice(u, anon + PAGE, 1):reader():read_raw(1)  -- the zero page
  local anonymous, zero = u:follow_page(anon), u:follow_page(anon + PAGE)
  expect_eq(zero:pfn(), page.ZERO_PAGE_PFN)
  local p = page.Page.alloc_pages(kernel.gfp.GFP_KERNEL, 1)   -- not compound: its tail's refcount is 0
  local tail = page.borrow_phys(p:phys() + PAGE)
  local errors = {}
  local function try(mixed, at, what, pg)
    local ok, err = pcall(mixed.vm_insert_page, mixed, at, pg)
    errors[#errors + 1] = what .. "=" .. (ok and "ok" or err.errno .. ": " .. err.message)
  end
  u:mmap{len = 4 * PAGE, flags = mm.MAP_SHARED, hook = function(vma)
    local mixed = vma:set_mixedmap()
    local at = vma:vm_start()
    try(mixed, at, "anonymous", anonymous)
    try(mixed, at, "tail", tail)
    try(mixed, at, "zero", zero)
  end}
  u:mmap{len = PAGE, hook = function(vma)  -- private: a COW mapping may hold the zero page
    try(vma:set_mixedmap(), vma:vm_start(), "zero in private", zero)
  end}
  expect_eq(table.concat(errors, "\n"), table.concat({
    ("anonymous=EINVAL: vm_insert_page of pfn 0x%x, an anonymous page"):format(anonymous:pfn()),
    ("tail=EINVAL: vm_insert_page of pfn 0x%x, whose refcount is 0"):format(tail:pfn()),
    ("zero=EINVAL: vm_insert_page of the zero page into Vma{0x%x-0x%x rw-s}, a shared writable mapping"):format(
      anon - 4 * PAGE, anon),
    "zero in private=ok",
  }, "\n"))
  kernel.drop(u)
  kernel.drop(p)
  kernel.debug.check()  -- the zero page still reads as zeros, and no reference went astray
end)

test("zap_vma_range does nothing outside the VMA or when the range overflows", function()
  local u = mm.mm_alloc()
  local a = u:mmap{len = 2 * PAGE}
  kernel.uaccess.UserSlice(u, a, 2 * PAGE):writer():write_raw(("x"):rep(2 * PAGE))
  local g <close> = u:mmap_read_lock()
  local vma = g:vma_lookup(a)
  vma:zap_vma_range(a, 3 * PAGE)
  vma:zap_vma_range(a - PAGE, 2 * PAGE)
  vma:zap_vma_range(a + PAGE, -1)
  assert(u:follow_page(a) and u:follow_page(a + PAGE), "nothing was zapped")
  vma:zap_vma_range(a + PAGE, PAGE)
  assert(u:follow_page(a) and not u:follow_page(a + PAGE), "exactly the second page")
  kernel.drop(vma)
  kernel.drop(g)
  kernel.drop(u)
end)

test("a VmaRef is valid only while its guard is held", function()
  local u = mm.mm_alloc()
  local a = u:mmap{len = PAGE}
  local g = u:mmap_read_lock()
  local vma = g:vma_lookup(a) local at = here()
  expect_eq(vma:vm_start(), a)
  expect_eq(vma:vm_end(), a + PAGE)
  expect_eq(kernel.state(vma), "borrowed")
  expect_eq(g:vma_lookup(a + PAGE), nil)
  expect_eq(g:vma_lookup(a - 1), nil)
  -- The VmaRef borrows its guard (SPEC §2): an explicit drop is refused.
  expect_eq(expect_error("BUG", kernel.drop, g).message,
    ("dropped while borrowed: MmapReadGuard{mm=%d} has 1 live borrow: VmaRef{0x%x-0x%x} taken at %s"):format(u:id(), a, a + PAGE, at))
  expect_eq(kernel.state(g), "owned", "still held")
  kernel.drop(vma)
  kernel.drop(g)
  expect_error("use after drop", g.vma_lookup, g, a)
  -- The guard's scope may end while a VmaRef is still reachable: the VmaRef
  -- ends with it, as Rust ends a borrow at its last use.
  local kept
  do
    local g2 <close> = u:mmap_read_lock()
    kept = g2:vma_lookup(a)
    expect_eq(kernel.state(kept), "borrowed")
  end
  expect_eq(kernel.state(kept), "dropped")
  local err = expect_error("BUG", kept.vm_start, kept)
  expect_eq(err.message, ("use of VmaRef{0x%x-0x%x} after its MmapReadGuard{mm=%d} was released: the VMA is no longer protected"):format(a, a + PAGE, u:id()))
  expect_error("BUG", kept.zap_vma_range, kept, a, PAGE)
  kernel.drop(u)
end)

test("a lock guard borrows its mm", function()
  local u = mm.mm_alloc()
  local g = u:mmap_read_lock()
  expect_error("dropped while borrowed", kernel.drop, u)
  kernel.drop(g)
  kernel.drop(u)
end)

local function wait_blocked(task)
  while task:state() ~= "blocked" do sched.yield() end
end

test("readers share the mmap lock while a writer waits; trylocks give nil under contention", function()
  local u = mm.mm_alloc()
  local a = u:mmap{len = PAGE}
  local inside, release, writer_saw = 0, false, nil
  for i = 1, 2 do
    sched.spawn(function()
      local g <close> = u:mmap_read_lock()
      inside = inside + 1
      while not release do sched.yield() end
      inside = inside - 1
    end, {name = "r" .. i})
  end
  while inside < 2 do sched.yield() end
  local w = sched.spawn(function()
    local g <close> = u:mmap_write_lock()
    writer_saw = inside
  end, {name = "w"})
  wait_blocked(w)
  expect_eq(inside, 2, "both readers still hold it")
  expect_eq(u:mmap_write_trylock(), nil, "readers hold it")
  expect_eq(u:mmap_read_trylock(), nil, "a writer waits")
  local v = u:lock_vma_under_rcu(a)
  assert(v, "the per-VMA lock does not care who holds or waits for the mmap lock")
  kernel.drop(v)
  release = true
  sched.run()
  expect_eq(writer_saw, 0, "the writer went in once both readers left")
  local wg = u:mmap_write_trylock()
  assert(wg, "free again")
  local r = sched.spawn(function() return u:mmap_read_trylock() == nil end)
  expect_eq(r:join(), true, "a writer holds it")
  kernel.drop(wg)
  kernel.drop(u)
end)

test("downgrade turns the write guard into a read guard and lets readers in", function()
  local u = mm.mm_alloc()
  local wg = u:mmap_write_lock()
  local got = false
  local t = sched.spawn(function()
    local g <close> = u:mmap_read_lock()
    got = true
  end)
  wait_blocked(t)
  expect_eq(got, false)
  local rg = wg:downgrade()
  expect_eq(kernel.state(wg), "moved")
  expect_eq(getmetatable(rg).__name, "MmapReadGuard")
  t:join()
  expect_eq(got, true, "the reader shared it with the downgraded writer")
  expect_error("use after move", wg.downgrade, wg)
  expect_error("dropped while borrowed", kernel.drop, u)
  kernel.drop(rg)
  kernel.drop(u)
end)

test("mmap lock guards: double drop and another task's drop are bugs", function()
  local u = mm.mm_alloc()
  local g = u:mmap_write_lock()
  local t = sched.spawn(function() kernel.drop(g) end, {name = "thief"})
  local err = expect_error("BUG", t.join, t)
  assert(err.message:find("MmapWriteGuard{mm=%d+} released by task 'thief'; it was taken by task 'main': guards are not Send"), err.message)
  kernel.drop(g)
  expect_error("double drop", kernel.drop, g)
  local v = u:lock_vma_under_rcu(u:mmap{len = PAGE})
  local t2 = sched.spawn(function() kernel.drop(v) end)
  expect_error("guards are not Send", t2.join, t2)
  kernel.drop(v)
  kernel.drop(u)
end)

test("taking the mmap lock twice is a bug lockdep reports", function()
  local u = mm.mm_alloc()
  local g <close> = u:mmap_read_lock()
  local err = expect_error("BUG", u.mmap_read_lock, u)
  assert(err.message:find("possible recursive locking detected"), err.message)
end)

test("lock_vma_under_rcu: the VMA read-locked, nil without a VMA or while a writer waits for its readers", function()
  local u = mm.mm_alloc()
  local a = u:mmap{len = 2 * PAGE}
  expect_eq(u:lock_vma_under_rcu(a - PAGE), nil)
  local v = u:lock_vma_under_rcu(a + PAGE)
  expect_eq(v:vm_start(), a)
  expect_eq(v:mm():id(), u:id())
  local wrote = false
  local w = sched.spawn(function()
    u:munmap(a, PAGE)  -- vma_start_write: waits, holding the mmap write lock, for the VMA's reader
    wrote = true
  end, {name = "unmapper"})
  wait_blocked(w)
  expect_eq(wrote, false)
  expect_eq(w:state(), "blocked")
  expect_eq(u:lock_vma_under_rcu(a), nil, "a writer waits for this VMA's readers")
  expect_eq(u:mmap_read_trylock(), nil, "and holds the mmap lock meanwhile")
  kernel.drop(v)
  w:join()
  expect_eq(wrote, true)
  expect_error("use after drop", v.vm_start, v)
  local tail = u:lock_vma_under_rcu(a + PAGE)
  assert(tail, "the epoch ended with mmap_write_unlock (vma_end_write_all)")
  kernel.drop(tail)
  kernel.drop(u)
end)

test("lock_vma_under_rcu fails only for a VMA write-locked in the current epoch (vm_lock_seq == mm_lock_seq)", function()
  local u = mm.mm_alloc()
  local ANON = mm.MAP_PRIVATE | mm.MAP_ANONYMOUS
  local base = 0x300000
  u:mmap{addr = base, len = 3 * PAGE, flags = mm.MAP_FIXED | ANON}
  u:mmap{addr = base + 8 * PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON, prot = mm.PROT_READ}
  do
    local g <close> = u:mmap_write_lock()  -- held, nothing changed: every VMA can still be read-locked
    local r = u:lock_vma_under_rcu(base)
    assert(r, "a writer holding the mmap lock stops nothing by itself")
    kernel.drop(r)
  end
  local seen = {}
  -- MAP_FIXED over the middle page write-locks the VMA it splits; the
  -- driver's handler runs under the write lock, in the same epoch.
  u:mmap{addr = base + PAGE, len = PAGE, flags = mm.MAP_FIXED | mm.MAP_PRIVATE, hook = function()
    seen.head = u:lock_vma_under_rcu(base) == nil
    seen.tail = u:lock_vma_under_rcu(base + 2 * PAGE) == nil
    local other = u:lock_vma_under_rcu(base + 8 * PAGE)
    seen.other = other ~= nil
    kernel.drop(other)
  end}
  expect_eq(seen.head, true, "the head of the split VMA is write-locked")
  expect_eq(seen.tail, true, "so is its tail")
  expect_eq(seen.other, true, "a VMA the mmap did not touch is not")
  local after = u:lock_vma_under_rcu(base)
  assert(after, "a new epoch after the unlock")
  kernel.drop(after)
  kernel.drop(u)
end)

local function layout(u)
  local g <close> = u:mmap_read_lock()
  local out = {}
  for _, v in ipairs(g:vmas()) do
    out[#out + 1] = ("%d:%s"):format((v.vm_end - v.vm_start) // PAGE, v.perms)
  end
  return table.concat(out, " ")
end

local ANON = mm.MAP_PRIVATE | mm.MAP_ANONYMOUS

test("adjacent anonymous VMAs with equal flags merge; munmap splits", function()
  local u = mm.mm_alloc()
  local base = 0x100000
  u:mmap{addr = base, len = PAGE, flags = mm.MAP_FIXED | ANON}
  u:mmap{addr = base + PAGE, len = 2 * PAGE, flags = mm.MAP_FIXED | ANON}
  expect_eq(layout(u), "3:rw-p")
  u:mmap{addr = base + 3 * PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON, prot = mm.PROT_READ}
  expect_eq(layout(u), "3:rw-p 1:r--p", "different flags stay apart")
  u:munmap(base + PAGE, PAGE)
  expect_eq(layout(u), "1:rw-p 1:rw-p 1:r--p")
  u:mmap{addr = base + PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON}
  expect_eq(layout(u), "3:rw-p 1:r--p", "filling the hole merges both sides")
  u:mmap{addr = base + PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON, prot = mm.PROT_READ}
  expect_eq(layout(u), "1:rw-p 1:r--p 1:rw-p 1:r--p", "MAP_FIXED replaces the middle")
  u:munmap(base, 4 * PAGE)
  expect_eq(u:map_count(), 0)
  u:munmap(base, PAGE)  -- nothing there: not an error
  local s1 = u:mmap{addr = base, len = PAGE, flags = mm.MAP_FIXED | mm.MAP_SHARED | mm.MAP_ANONYMOUS}
  u:mmap{addr = base + PAGE, len = PAGE, flags = mm.MAP_FIXED | mm.MAP_SHARED | mm.MAP_ANONYMOUS}
  expect_eq(layout(u), "1:rw-s 1:rw-s", "shared anonymous mappings are separate shmem objects")
  kernel.drop(u)
end)

-- The anon_vma of the VMA at `addr`, or nil.
local function anon_vma(u, addr)
  local g <close> = u:mmap_read_lock()
  local v <close> = g:vma_lookup(addr)
  return v:anon_vma()
end

test("anon_vmas: a write fault gives one; VMAs with different anon_vmas do not merge (is_mergeable_anon_vma)", function()
  local u = mm.mm_alloc()
  local base = 0x400000
  local function fault(addr) kernel.uaccess.UserSlice(u, addr, 1):writer():write_raw("x") end
  u:mmap{addr = base, len = PAGE, flags = mm.MAP_FIXED | ANON}
  u:mmap{addr = base + 2 * PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON}
  expect_eq(anon_vma(u, base), nil, "no anonymous page yet")
  kernel.uaccess.UserSlice(u, base, 1):reader():read_raw(1)
  expect_eq(anon_vma(u, base), nil, "a read maps the zero page: still none (do_anonymous_page)")
  fault(base)
  fault(base + 2 * PAGE)
  local left, right = anon_vma(u, base), anon_vma(u, base + 2 * PAGE)
  assert(left and right and left ~= right, "two anon_vmas")
  u:mmap{addr = base + PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON}
  expect_eq(layout(u), "2:rw-p 1:rw-p", "the hole merges with prev only: prev and next disagree (can_vma_merge_right)")
  expect_eq(anon_vma(u, base + PAGE), left)
  -- A split keeps the anon_vma on both sides, so the hole merges back.
  u:munmap(base, 3 * PAGE)
  u:mmap{addr = base, len = 3 * PAGE, flags = mm.MAP_FIXED | ANON}
  fault(base)
  local av = anon_vma(u, base)
  u:munmap(base + PAGE, PAGE)
  expect_eq(anon_vma(u, base + 2 * PAGE), av)
  u:mmap{addr = base + PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON}
  expect_eq(layout(u), "3:rw-p")
  -- A neighbour that differs only in protection shares its anon_vma at the
  -- first fault (find_mergeable_anon_vma).
  u:mmap{addr = base + 3 * PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON, prot = mm.PROT_READ | mm.PROT_WRITE | mm.PROT_EXEC}
  fault(base + 3 * PAGE)
  expect_eq(anon_vma(u, base + 3 * PAGE), av)
  kernel.drop(u)
end)

test("a driver's VMAs merge like a file's, unless IO, DONTEXPAND or MIXEDMAP is set", function()
  local u = mm.mm_alloc()
  local base = 0x200000
  local FIXED = mm.MAP_FIXED | mm.MAP_PRIVATE
  local function driver(vma) end
  u:mmap{addr = base, len = PAGE, flags = FIXED, hook = driver}
  u:mmap{addr = base + PAGE, len = PAGE, flags = FIXED, hook = driver, offset = PAGE}
  expect_eq(layout(u), "2:rw-p", "same file, contiguous offsets")
  u:mmap{addr = base + 2 * PAGE, len = PAGE, flags = FIXED, hook = driver}
  expect_eq(layout(u), "2:rw-p 1:rw-p", "offset 0 again does not continue the file")
  u:mmap{addr = base + 3 * PAGE, len = PAGE, flags = FIXED, hook = function() end, offset = PAGE}
  expect_eq(layout(u), "2:rw-p 1:rw-p 1:rw-p", "another driver's file")
  u:munmap(base, 4 * PAGE)
  for _, set in ipairs{"set_io", "set_dontexpand", "set_mixedmap"} do
    local function special(vma) vma[set](vma) end
    u:mmap{addr = base, len = PAGE, flags = FIXED, hook = special}
    u:mmap{addr = base + PAGE, len = PAGE, flags = FIXED, hook = special, offset = PAGE}
    expect_eq(layout(u), "1:rw-p 1:rw-p", set .. " never merges")
    u:munmap(base, 2 * PAGE)
  end
  local function dontdump(vma) vma:set_dontdump() end
  u:mmap{addr = base, len = PAGE, flags = FIXED, hook = dontdump}
  u:mmap{addr = base + PAGE, len = PAGE, flags = FIXED, hook = dontdump, offset = PAGE}
  expect_eq(layout(u), "2:rw-p", "DONTDUMP is not special")
  kernel.drop(u)
end)

test("VmaNew sets flags during the hook and is gone after it", function()
  local u = mm.mm_alloc()
  local kept
  local a = u:mmap{len = PAGE, prot = mm.PROT_READ, hook = function(vma)
    kept = vma
    expect_eq(getmetatable(vma).__name, "VmaNew")
    expect_eq(vma:readable(), true)
    expect_eq(vma:writable(), false)
    expect_eq(vma:executable(), false)
    expect_error("EINVAL", vma.try_clear_mayread, vma)
    vma:try_clear_maywrite()
    vma:try_clear_mayexec()
    vma:set_io()
    vma:set_dontcopy()
  end}
  local g <close> = u:mmap_read_lock()
  local f = g:vma_lookup(a):flags()
  expect_eq(f & mm.VM_MAYWRITE, 0)
  expect_eq(f & mm.VM_MAYEXEC, 0)
  expect_eq(f & (mm.VM_IO | mm.VM_DONTCOPY | mm.VM_READ | mm.VM_MAYREAD), mm.VM_IO | mm.VM_DONTCOPY | mm.VM_READ | mm.VM_MAYREAD)
  local err = expect_error("BUG", kept.set_io, kept)
  assert(err.message:find("use after scope"), err.message)
end)

test("a hook that fails fails the mmap and leaves nothing mapped", function()
  local u = mm.mm_alloc()
  local p = page.Page.alloc_page(kernel.gfp.GFP_KERNEL)
  local err = expect_error("ENOMEM", u.mmap, u, {len = PAGE, hook = function(vma)
    vma:set_mixedmap():vm_insert_page(vma:vm_start(), p)
    error(kernel.Error and setmetatable({errno = "ENOMEM", code = 12, bug = false, message = "driver out of memory"}, kernel.Error))
  end})
  expect_eq(u:map_count(), 0)
  expect_eq(p:refcount(), 1, "the inserted page's reference went")
  expect_error("driver failed", u.mmap, u, {len = PAGE, hook = function() error("driver failed") end})
  local g = u:mmap_write_trylock()
  assert(g, "the lock was released")
  kernel.drop(g)
  kernel.drop(p)
  kernel.drop(u)
end)

test("mmap and munmap bad input: the kernel's errno", function()
  local u = mm.mm_alloc()
  expect_error("EINVAL", u.mmap, u, {len = 0})
  expect_error("ENOMEM", u.mmap, u, {len = -1})
  expect_error("ENOMEM", u.mmap, u, {len = mm.TASK_SIZE + 1})
  expect_error("EINVAL", u.mmap, u, {addr = 0x100001, len = PAGE, flags = mm.MAP_FIXED | ANON})
  expect_error("ENOMEM", u.mmap, u, {addr = mm.TASK_SIZE, len = PAGE, flags = mm.MAP_FIXED | ANON})
  expect_error("ENOMEM", u.mmap, u, {addr = -PAGE, len = PAGE, flags = mm.MAP_FIXED | ANON})
  expect_error("EPERM", u.mmap, u, {addr = 0x1000, len = PAGE, flags = mm.MAP_FIXED | ANON})
  expect_error("EINVAL", u.mmap, u, {len = PAGE, prot = 8})
  expect_error("EINVAL", u.mmap, u, {len = PAGE, flags = mm.MAP_SHARED | mm.MAP_PRIVATE | mm.MAP_ANONYMOUS})
  expect_error("EINVAL", u.mmap, u, {len = PAGE, flags = 0x40000000 | ANON})
  expect_error("EINVAL", u.mmap, u, {len = PAGE, offset = 1, hook = function() end})
  expect_error("EOVERFLOW", u.mmap, u, {len = 2 * PAGE, offset = -PAGE, hook = function() end})
  expect_error("bad argument #2 to 'mmap' (field 'len': integer expected, got nil)", u.mmap, u, {})
  expect_error("unknown field 'lenght'", u.mmap, u, {lenght = PAGE})
  expect_error("field 'hook': function expected", u.mmap, u, {len = PAGE, hook = 1})
  -- do_mmap's map types: MAP_SHARED, MAP_PRIVATE, and for a file MAP_SHARED_VALIDATE.
  expect_eq(expect_error("EINVAL", u.mmap, u, {len = PAGE, flags = mm.MAP_ANONYMOUS}).message,
    "mmap: map type 0x0 is not MAP_SHARED, MAP_PRIVATE")
  expect_eq(expect_error("EINVAL", u.mmap, u, {len = PAGE, flags = 0x04 | mm.MAP_ANONYMOUS}).message,
    "mmap: map type 0x4 is not MAP_SHARED, MAP_PRIVATE")
  expect_eq(expect_error("EINVAL", u.mmap, u, {len = PAGE, flags = mm.MAP_SHARED_VALIDATE | mm.MAP_ANONYMOUS}).message,
    "mmap: map type 0x3 is not MAP_SHARED, MAP_PRIVATE (anonymous memory does not take MAP_SHARED_VALIDATE)")
  expect_eq(expect_error("EINVAL", u.mmap, u, {len = PAGE, flags = 0x0f, hook = function() end}).message,
    "mmap: map type 0xf is not MAP_SHARED, MAP_PRIVATE or MAP_SHARED_VALIDATE")
  expect_eq(mm.MAP_SHARED_VALIDATE, 0x03)
  local validated = u:mmap{len = PAGE, flags = mm.MAP_SHARED_VALIDATE, hook = function() end}
  u:munmap(validated, PAGE)
  expect_eq(expect_error("EOPNOTSUPP", u.mmap, u, {len = PAGE, addr = 0x500000, hook = function() end,
    flags = mm.MAP_SHARED_VALIDATE | mm.MAP_FIXED_NOREPLACE}).message,
    "mmap: MAP_SHARED_VALIDATE with flags 0x100000 the file does not support")
  expect_eq(expect_error("EBADF", u.mmap, u, {len = PAGE, flags = mm.MAP_PRIVATE}).message,
    "mmap without MAP_ANONYMOUS needs a file: a driver's mmap handler (hook)")
  expect_eq(expect_error("EINVAL", u.mmap, u, {len = PAGE, flags = ANON, hook = function() end}).message,
    "mmap: MAP_ANONYMOUS with a driver's file: an anonymous mapping has no mmap handler")
  expect_eq(u:map_count(), 0)
  local a = u:mmap{addr = 0x300000, len = PAGE, flags = mm.MAP_FIXED_NOREPLACE | ANON}
  expect_eq(a, 0x300000)
  expect_error("EEXIST", u.mmap, u, {addr = a, len = PAGE, flags = mm.MAP_FIXED_NOREPLACE | ANON})
  local hinted = u:mmap{addr = a, len = PAGE}
  assert(hinted ~= a, "a taken hint is not used")
  expect_error("EINVAL", u.munmap, u, a + 1, PAGE)
  expect_error("EINVAL", u.munmap, u, a, 0)
  expect_error("EINVAL", u.munmap, u, a, -PAGE)
  expect_error("EINVAL", u.munmap, u, -PAGE, PAGE)
  expect_eq(u:map_count(), 2, "nothing changed")
  kernel.drop(u)
end)

test("anonymous memory is demand paged: a write faults a zeroed page in, a read of an untouched page reads zeros", function()
  local u = mm.mm_alloc()
  local a = u:mmap{len = 2 * PAGE}
  local before = free_pages()
  expect_eq(u:follow_page(a), nil, "nothing mapped yet")
  expect_eq(kernel.uaccess.UserSlice(u, a, 8):reader():read_raw(8), ("\0"):rep(8))
  local zero = u:follow_page(a)
  expect_eq(zero:pfn(), page.ZERO_PAGE_PFN, "a read fault maps the shared zero page (do_anonymous_page)")
  expect_eq(free_pages(), before - (u:pgtables_bytes() // PAGE - 1), "and allocates nothing but the page tables")
  expect_eq(zero:read_u64(8), 0)
  expect_eq(expect_error("BUG", zero.write_u8, zero, 0, 1).message,
    ("write to the shared zero page (pfn 0x%x): it is mapped read-only wherever it is mapped"):format(page.ZERO_PAGE_PFN))
  kernel.uaccess.UserSlice(u, a + PAGE - 2, 4):writer():write_raw("abcd")
  assert(u:follow_page(a):pfn() ~= page.ZERO_PAGE_PFN, "the first write replaced the zero page")
  assert(u:follow_page(a) and u:follow_page(a + PAGE), "the write spanned two pages")
  expect_eq(u:follow_page(a + PAGE):read_raw(0, 2), "cd")
  expect_eq(u:follow_page(a):read_raw(0, 4), "\0\0\0\0", "faulted pages are zeroed")
  kernel.drop(u)
end)

test("copy_from_user in one mm, copy_to_user into another", function()
  local src, dst = mm.mm_alloc(), mm.mm_alloc()
  local p = page.Page.alloc_page(kernel.gfp.GFP_KERNEL)
  local message = "from one address space to another"
  local producer = sched.spawn(function()
    local me = kernel.current():mm()
    local a = me:mmap{len = PAGE}
    kernel.uaccess.UserSlice(me, a, #message):writer():write_raw(message)
    return a
  end, {mm = src})
  local from = producer:join()
  local reader = kernel.uaccess.UserSlice(src, from, #message):reader()
  p:copy_from_user_slice_raw(reader, 100, #message)
  expect_eq(reader:len(), 0)
  expect_eq(reader:is_empty(), true)
  local consumer = sched.spawn(function()
    local me = kernel.current():mm()
    local a = me:mmap{len = PAGE}
    kernel.uaccess.UserSlice(me, a, #message):writer():write_raw(p:read_raw(100, #message))
    return kernel.uaccess.UserSlice(me, a, #message):reader():read_raw(#message)
  end, {mm = dst})
  expect_eq(consumer:join(), message)
  expect_eq(src:id() ~= dst:id(), true)
  kernel.drop(p)
  kernel.drop(src)
  kernel.drop(dst)
end)

test("EFAULT on an unmapped byte in the middle of a slice; the reader and writer do not move", function()
  local u = mm.mm_alloc()
  local a = u:mmap{len = 3 * PAGE}
  u:munmap(a + PAGE, PAGE)
  local slice = kernel.uaccess.UserSlice(u, a + PAGE - 10, 20)
  local r, w = slice:reader_writer()
  expect_eq(kernel.state(slice), "moved")
  local err = expect_error("EFAULT", r.read_raw, r, 20)
  assert(err.message:find(("0x%x is not mapped"):format(a + PAGE)), err.message)
  expect_eq(r:len(), 20)
  expect_eq(r:read_raw(10), ("\0"):rep(10), "the bytes before the hole read")
  expect_error("EFAULT", w.write_raw, w, ("w"):rep(20))
  expect_eq(w:len(), 20)
  expect_eq(kernel.uaccess.UserSlice(u, a + PAGE - 10, 10):reader():read_raw(10), ("w"):rep(10),
    "copy_to_user wrote up to the fault")
  local p = page.Page.alloc_page(kernel.gfp.GFP_KERNEL)
  local r2 = kernel.uaccess.UserSlice(u, a + PAGE - 10, 20):reader()
  expect_error("EINVAL", p.copy_from_user_slice_raw, p, r2, PAGE - 10, 20)
  expect_error("EFAULT", p.copy_from_user_slice_raw, p, r2, 0, 20)
  expect_eq(r2:len(), 20)
  expect_error("EFAULT", r2.skip, r2, 21)
  r2:skip(20)
  expect_error("EFAULT", r2.read_raw, r2, 1)
  kernel.drop(p)
  kernel.drop(u)
end)

test("EFAULT where the VMA does not allow the access, or past TASK_SIZE", function()
  local u = mm.mm_alloc()
  local ro = u:mmap{len = PAGE, prot = mm.PROT_READ}
  local none = u:mmap{len = PAGE, prot = mm.PROT_NONE}
  local w = kernel.uaccess.UserSlice(u, ro, 1):writer()
  expect_error("EFAULT", w.write_raw, w, "x")
  local r = kernel.uaccess.UserSlice(u, none, 1):reader()
  expect_error("EFAULT", r.read_raw, r, 1)
  local far = kernel.uaccess.UserSlice(u, mm.TASK_SIZE - 1, 2):reader()
  expect_error("EFAULT", far.read_raw, far, 2)
  local wrap = kernel.uaccess.UserSlice(u, -1, 2):reader()
  expect_error("EFAULT", wrap.read_raw, wrap, 2)
  expect_error("EINVAL", kernel.uaccess.UserSlice, u, 0, -1)
  local driver = u:mmap{len = PAGE, hook = function() end}
  local d = kernel.uaccess.UserSlice(u, driver, 1):writer()
  local err = expect_error("EFAULT", d.write_raw, d, "x")
  assert(err.message:find("no fault handler"), err.message)
  kernel.drop(u)
end)

test("user copies may fault: not under a spinlock, not under the same mmap lock", function()
  local u = mm.mm_alloc()
  local a = u:mmap{len = PAGE}
  local s = kernel.sync.SpinLock("s")
  do
    local g <close> = s:lock()
    local w = kernel.uaccess.UserSlice(u, a, 1):writer()
    expect_error("sleeping function called from invalid context: copy_to_user", w.write_raw, w, "x")
  end
  do
    local g <close> = u:mmap_read_lock()
    local r = kernel.uaccess.UserSlice(u, a, 1):reader()
    expect_error("possible recursive locking detected", r.read_raw, r, 1)
  end
  kernel.drop(u)
end)

test("a page fault waits for the mmap lock a writer holds", function()
  local u = mm.mm_alloc()
  local a = u:mmap{len = PAGE}
  local log = {}
  local wg = u:mmap_write_lock()
  local t = sched.spawn(function()
    kernel.uaccess.UserSlice(u, a, 2):writer():write_raw("hi")
    log[#log + 1] = "wrote"
  end)
  wait_blocked(t)
  log[#log + 1] = "unlock"
  kernel.drop(wg)
  t:join()
  expect_eq(table.concat(log, " "), "unlock wrote")
  expect_eq(u:follow_page(a):read_raw(0, 2), "hi")
  kernel.drop(u)
end)

test("lockdep: a mutex taken under the mmap lock and a fault under the mutex", function()
  local u = mm.mm_alloc()
  local a = u:mmap{len = PAGE}
  local m = kernel.sync.Mutex("binder_lock")
  do
    local g <close> = u:mmap_read_lock()
    local mg <close> = m:lock()
  end
  local mg <close> = m:lock()
  local w = kernel.uaccess.UserSlice(u, a, 1):writer()
  local err = expect_error("BUG", w.write_raw, w, "x")
  assert(err.message:find("possible circular locking dependency"), err.message)
  assert(err.message:find("mmap_lock of mm"), err.message)
end)
