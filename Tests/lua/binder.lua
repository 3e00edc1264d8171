-- kernel.binder: Rust Binder's range allocator, binder_alloc's buffers and
-- pages, the LRU and its shrinker.
kernel.boot{memory = "16M"}  -- 4096 pages: small enough to run out
local binder, mm, uaccess = kernel.binder, kernel.mm, kernel.uaccess
local PAGE = kernel.PAGE_SIZE

local function states(r)
  local out = {}
  for _, x in ipairs(r:ranges()) do
    out[#out + 1] = ("%d+%d:%s%s"):format(x.offset, x.size, x.state:sub(1, 1), x.oneway and "o" or "")
  end
  return table.concat(out, " ")
end

-- Rust Binder's range allocator is Empty, an Array of at most 8 buffers, or
-- a Tree (drivers/android/binder/range_alloc/mod.rs `Impl`).
local function tree(size)
  -- Nine buffers make it a Tree (the ninth reserve_new, with the Array full).
  local r = binder.RangeAllocator(size)
  local o = {}
  for i = 1, 9 do o[i] = r:reserve_new{size = 8} end
  expect_eq(r:mode(), "tree")
  for i = 1, 9 do r:reservation_abort(o[i]) end
  expect_eq(r:mode(), "empty", "a Tree that empties becomes Empty")
  for i = 1, 9 do o[i] = r:reserve_new{size = 8} end
  return r, o
end

test("RangeAllocator: Empty, then an Array, a Tree once full, Empty when the Tree empties (mod.rs)", function()
  local r = binder.RangeAllocator(4 * PAGE)
  expect_eq(r:mode(), "empty")
  expect_eq(states(r), "0+16384:f")
  local a = r:reserve_new{size = 100}
  expect_eq(r:mode(), "array", "the first reserve_new makes it an Array")
  r:reservation_abort(a)
  expect_eq(r:mode(), "array", "an Array that empties stays an Array")
  local o = {}
  for i = 1, 8 do o[i] = r:reserve_new{size = 100} end
  expect_eq(r:mode(), "array", "TREE_THRESHOLD = 8 buffers fit in the Array")
  expect_error("ENOSPC", r.reserve_new, r, {size = 4 * PAGE})
  expect_eq(r:mode(), "tree", "a reserve_new while the Array is full makes it a Tree, even one that fails")
  expect_eq(r:count_buffers(), 8)
  expect_eq(states(r), "0+100:r 100+100:r 200+100:r 300+100:r 400+100:r 500+100:r 600+100:r 700+100:r 800+15584:f")
  for i = 1, 7 do r:reservation_abort(o[i]) end
  expect_eq(r:mode(), "tree")
  r:reservation_abort(o[8])
  expect_eq(r:mode(), "empty")
  expect_eq(r:free_oneway_space(), 2 * PAGE)
end)

test("RangeAllocator: reserve, commit, reserve_existing, abort", function()
  local r = binder.RangeAllocator(4 * PAGE)
  local off = r:reserve_new{size = 100}
  expect_eq(off, 0)
  expect_eq(states(r), "0+100:r 100+16284:f")
  r:reservation_commit(0, {id = 7})
  expect_eq(states(r), "0+100:a 100+16284:f")
  local size, data = r:reserve_existing(0)
  expect_eq(size, 100)
  expect_eq(data.id, 7)
  expect_eq(states(r), "0+100:r 100+16284:f")
  local first, last = r:reservation_abort(0)
  expect_eq(first, 0)
  expect_eq(last, 1, "the one page it touched, now wholly free")
  expect_eq(states(r), "0+16384:f")
  expect_eq(r:count_buffers(), 0)
end)

test("RangeAllocator: the errno of each wrong state, in each representation", function()
  local r = binder.RangeAllocator(PAGE)
  -- Empty: every call but reserve_new is EINVAL.
  expect_eq(expect_error("EINVAL", r.reservation_commit, r, 0).message, "reservation_commit at offset 0: the allocator is empty")
  expect_error("EINVAL", r.reserve_existing, r, 0)
  expect_error("EINVAL", r.reservation_abort, r, 0)
  expect_error("BUG", r.reserve_new, r, {size = 0})
  expect_error("field 'size'", r.reserve_new, r, {})
  expect_error("EINVAL", binder.RangeAllocator, -1)
  -- The Array (array.rs) and the Tree (tree.rs) answer alike.
  for _, r in ipairs{binder.RangeAllocator(PAGE), (tree(PAGE))} do
    local a = r:reserve_new{size = 64}
    local mode = r:mode()
    expect_eq(expect_error("ENOENT", r.reservation_commit, r, 1).message,
      "reservation_commit at offset 1: no buffer starts there", mode)
    expect_error("ENOENT", r.reserve_existing, r, a, mode)          -- reserved, not allocated
    expect_eq(expect_error("EINVAL", r.reservation_abort, r, 7).message,
      "reservation_abort at offset 7: no buffer starts there", mode)
    r:reservation_commit(a, "data")
    expect_error("ENOENT", r.reservation_commit, r, a)              -- allocated already
    expect_error("EPERM", r.reservation_abort, r, a)                -- allocated
    expect_error("ENOSPC", r.reserve_new, r, {size = PAGE})
    local _, d = r:reserve_existing(a)
    expect_eq(d, "data")
    r:reservation_abort(a)
  end
  -- Only the Tree stores free ranges: one's offset is EINVAL or ENOENT.
  local t = tree(PAGE)
  expect_eq(states(t):match("72%+%d+:f") ~= nil, true)
  expect_error("EINVAL", t.reservation_abort, t, 72)
  expect_error("ENOENT", t.reservation_commit, t, 72)
  expect_error("ENOENT", t.reserve_existing, t, 72)
end)

test("RangeAllocator: the Array places after the last buffer, else in the first gap (find_empty_range)", function()
  local r = binder.RangeAllocator(1000)
  local o = {}
  for i = 1, 6 do o[i] = r:reserve_new{size = 100} end
  r:reservation_abort(o[2])
  r:reservation_abort(o[4])
  expect_eq(states(r), "0+100:r 100+100:f 200+100:r 300+100:f 400+100:r 500+100:r 600+400:f")
  expect_eq(r:reserve_new{size = 50}, 600, "after the last range, where it fits: not best fit")
  expect_eq(r:reserve_new{size = 300}, 650)
  expect_eq(r:reserve_new{size = 60}, 100, "nothing after the last: the first gap that fits")
  expect_eq(r:mode(), "array")
  expect_eq(states(r), "0+100:r 100+60:r 160+40:f 200+100:r 300+100:f 400+100:r 500+100:r 600+50:r 650+300:r 950+50:f")
  expect_error("ENOSPC", r.reserve_new, r, {size = 101})
end)

test("RangeAllocator: the Tree is best fit, smallest range then lowest offset; frees merge both ways", function()
  local r, o = tree(1000)
  -- 9 buffers of 8 at 0..72; free ranges of 8 at 8 and 24, of 16 at 40 after these go
  r:reservation_abort(o[2])
  r:reservation_abort(o[4])
  r:reservation_abort(o[6])
  r:reservation_abort(o[7])
  expect_eq(states(r), "0+8:r 8+8:f 16+8:r 24+8:f 32+8:r 40+16:f 56+8:r 64+8:r 72+928:f")
  expect_eq(r:reserve_new{size = 4}, 8, "the smallest free range, then the lowest offset")
  expect_eq(r:reserve_new{size = 8}, 24)
  expect_eq(r:reserve_new{size = 12}, 40)
  expect_eq(states(r), "0+8:r 8+4:r 12+4:f 16+8:r 24+8:r 32+8:r 40+12:r 52+4:f 56+8:r 64+8:r 72+928:f")
  r:reservation_abort(16)  -- merges with the free range before it
  expect_eq(states(r), "0+8:r 8+4:r 12+12:f 24+8:r 32+8:r 40+12:r 52+4:f 56+8:r 64+8:r 72+928:f")
  r:reservation_abort(8)   -- merges with the one after it
  expect_eq(states(r), "0+8:r 8+16:f 24+8:r 32+8:r 40+12:r 52+4:f 56+8:r 64+8:r 72+928:f")
  r:reservation_abort(40)  -- and with both
  expect_eq(states(r), "0+8:r 8+16:f 24+8:r 32+8:r 40+16:f 56+8:r 64+8:r 72+928:f")
end)

test("RangeAllocator: the pages an abort frees, in the Array and in the Tree", function()
  for _, make in ipairs{binder.RangeAllocator, function(size)
    local r = tree(size)
    for _, x in ipairs(r:ranges()) do if x.state ~= "free" then r:reservation_abort(x.offset) end end
    return r
  end} do
    -- Both: [0, 100), [100, 4196), [4196, 4296) in a space of four pages
    -- (the Tree places them where the emptied Tree's free range starts).
    local r = make(4 * PAGE)
    local a = r:reserve_new{size = 100}
    local b = r:reserve_new{size = PAGE}
    local c = r:reserve_new{size = 100}
    expect_eq(a, 0) expect_eq(b, 100) expect_eq(c, 4196)
    local first, last = r:reservation_abort(b)
    expect_eq(first, 1)
    expect_eq(last, 1, "both pages b touched are shared with a and c: none freed")
    first, last = r:reservation_abort(a)
    expect_eq(first, 0)
    expect_eq(last, 1, "page 0: a's, and free after it")
    first, last = r:reservation_abort(c)
    expect_eq(first, 1)
    expect_eq(last, 2, "page 1 only: the free neighbours cover the rest of it")
  end
  -- They differ at an unaligned end: the Array frees the page after the
  -- last buffer even past the space (array.rs), the Tree only a page a free
  -- range covers (tree.rs).
  local r = binder.RangeAllocator(PAGE + 100)
  local a = r:reserve_new{size = PAGE + 50}
  expect_eq(select(2, r:reservation_abort(a)), 2)
  local t = tree(PAGE + 100)
  for _, x in ipairs(t:ranges()) do if x.state ~= "free" then t:reservation_abort(x.offset) end end
  local o = {}
  for i = 1, 9 do o[i] = t:reserve_new{size = i < 9 and 8 or PAGE - 64 + 50} end
  for i = 1, 8 do t:reservation_abort(o[i]) end
  expect_eq(states(t), "0+64:f 64+4082:r 4146+50:f")
  expect_eq(select(2, t:reservation_abort(o[9])), 1, "the last 50 bytes do not reach the end of page 1")
end)

test("RangeAllocator: oneway space is half; the Tree detects spammers, the Array never does", function()
  local r = tree(100 * PAGE)
  for _, x in ipairs(r:ranges()) do if x.state ~= "free" then r:reservation_abort(x.offset) end end
  for i = 1, 9 do r:reserve_new{size = 8} end  -- stays a Tree with these
  expect_eq(r:free_oneway_space(), 50 * PAGE)
  expect_error("ENOSPC", r.reserve_new, r, {size = 50 * PAGE + 1, is_oneway = true})
  local big, spam = r:reserve_new{size = 20 * PAGE, is_oneway = true, pid = 1}
  expect_eq(spam, false, "30 pages of oneway space left")
  _, spam = r:reserve_new{size = 25 * PAGE, is_oneway = true, pid = 2}
  expect_eq(spam, false, "under a tenth left, but pid 2 holds a quarter, not more")
  _, spam = r:reserve_new{size = PAGE, is_oneway = true, pid = 1}
  expect_eq(spam, false, "pid 1 holds 21 pages")
  _, spam = r:reserve_new{size = PAGE, is_oneway = true, pid = 2}
  expect_eq(spam, true, "pid 2 now holds more than a quarter of the space")
  _, spam = r:reserve_new{size = PAGE}
  expect_eq(spam, false, "only oneway transactions are checked")
  r:reservation_abort(big)
  expect_eq(r:free_oneway_space(), 23 * PAGE)
  -- The same in an Array: no spam, ever.
  local a = binder.RangeAllocator(100 * PAGE)
  a:reserve_new{size = 25 * PAGE, is_oneway = true, pid = 2}
  _, spam = a:reserve_new{size = 24 * PAGE, is_oneway = true, pid = 2}
  expect_eq(spam, false, "oneway_spam_detected is always false in array.rs")
  expect_eq(a:mode(), "array")
  expect_eq(a:free_oneway_space(), PAGE)
  -- More than 50 buffers also counts, in the Tree.
  local s = binder.RangeAllocator(1000)
  local flagged = false
  for i = 1, 60 do
    local ok, _, sp = pcall(s.reserve_new, s, {size = 8, is_oneway = true, pid = 9})
    if ok and sp then flagged = true end
  end
  expect_eq(flagged, true)
end)

-- A process with a binder mmap.
local function process(size)
  local u = mm.mm_alloc()
  return u, binder.Alloc(u, size or 16 * PAGE)
end

test("Alloc maps a read-only MIXEDMAP VMA, at most 4 MiB of it used", function()
  local u, alloc = process(8 << 20)
  expect_eq(alloc:buffer_size(), 4 << 20)
  expect_eq(alloc:free_async_space(), 2 << 20)
  local g <close> = u:mmap_read_lock()
  local vma = g:vma_lookup(alloc:user_address())
  expect_eq(vma:vm_end() - vma:vm_start(), 8 << 20)
  local f = vma:flags()
  expect_eq(f & (mm.VM_MIXEDMAP | mm.VM_DONTCOPY | mm.VM_READ), mm.VM_MIXEDMAP | mm.VM_DONTCOPY | mm.VM_READ)
  expect_eq(f & (mm.VM_WRITE | mm.VM_MAYWRITE), 0)
  expect_error("EINVAL", binder.Alloc, u, 0)
end)

test("buffers: the kernel's size rules, and bounds", function()
  local u, alloc = process(4 * PAGE)
  local b = alloc:new_buf{data_size = 1}
  expect_eq(b:size(), 8, "rounded up to 8")
  local z = alloc:new_buf{data_size = 0}
  expect_eq(z:size(), 8, "at least 8: a unique address")
  local c = alloc:new_buf{data_size = 5, offsets_size = 9, extra_buffers_size = 1}
  expect_eq(c:size(), 8 + 16 + 8)
  expect_error("EINVAL", alloc.new_buf, alloc, {data_size = -1})
  expect_error("EINVAL", alloc.new_buf, alloc, {data_size = 1, offsets_size = -8})
  expect_error("ENOSPC", alloc.new_buf, alloc, {data_size = 4 * PAGE + 1})
  expect_error("ENOSPC", alloc.new_buf, alloc, {data_size = 2 * PAGE + 8, is_async = true})
  expect_error("field 'data_size'", alloc.new_buf, alloc, {})
  expect_error("EINVAL", b.write, b, 1, "12345678")
  expect_error("EINVAL", b.read, b, -1, 1)
  b:write(0, "abcdefgh")
  expect_eq(b:read(2, 3), "cde")
  expect_eq(b:user_data(), alloc:user_address() + b:offset())
  expect_error("EINVAL", alloc.page_state, alloc, 4)
  expect_error("EINVAL", alloc.page_state, alloc, -1)
end)

test("buffer pages are active while used, on the LRU after free, reused without reallocation", function()
  local u, alloc = process(16 * PAGE)
  local b = alloc:new_buf{data_size = 2 * PAGE}
  expect_eq(alloc:page_state(0), "active")
  expect_eq(alloc:page_state(1), "active")
  expect_eq(alloc:page_state(2), "free")
  b:write(PAGE - 2, "spans")
  expect_eq(uaccess.UserSlice(u, b:user_data() + PAGE - 2, 5):reader():read_raw(5), "spans",
    "the process sees what the kernel wrote: the pages are in its VMA")
  local pfn0 = u:follow_page(alloc:user_address()):pfn()
  local lru_before = binder.lru_count()
  b:free()
  expect_eq(kernel.state(b), "dropped")
  expect_eq(alloc:page_state(0), "lru")
  expect_eq(alloc:page_state(1), "lru")
  expect_eq(binder.lru_count(), lru_before + 2)
  local c = alloc:new_buf{data_size = 100}
  expect_eq(c:offset(), 0)
  expect_eq(alloc:page_state(0), "active", "taken off the LRU")
  expect_eq(alloc:page_state(1), "lru")
  expect_eq(u:follow_page(alloc:user_address()):pfn(), pfn0, "the same page, not a new one")
  expect_eq(c:read(0, 2), "\0\0", "binder pages start zeroed; this one holds what the last buffer left")
  local counts = alloc:page_counts()
  expect_eq(counts.active, 1); expect_eq(counts.lru, 1); expect_eq(counts.free, 14)
  kernel.drop(c)
end)

test("the shrinker frees LRU pages and zaps them from the VMA", function()
  binder.shrink(binder.lru_count())  -- what earlier tests left
  local u, alloc = process(8 * PAGE)
  local b = alloc:new_buf{data_size = 3 * PAGE}
  local addr = alloc:user_address()
  local mapped = u:follow_page(addr + 2 * PAGE)
  b:free()
  expect_eq(alloc:page_counts().lru, 3)
  local freed = binder.shrink(2)
  expect_eq(freed, 2)
  -- stop_using_range queues the pages last first: the oldest is page 2
  expect_eq(alloc:page_state(2), "free")
  expect_eq(alloc:page_state(1), "free")
  expect_eq(alloc:page_state(0), "lru")
  expect_eq(u:follow_page(addr + 2 * PAGE), nil, "zapped")
  expect_error("use after free", mapped.read_u8, mapped, 0)
  local again = alloc:new_buf{data_size = 100}
  expect_eq(alloc:page_state(0), "active", "back from the LRU")
  kernel.drop(again)
  expect_eq(binder.shrink(1000) >= 1, true)
  expect_eq(alloc:page_counts().lru, 0)
end)

-- A task that holds `u`'s mmap write lock until release() is called.
local function hold_write_lock(u)
  local held, released = false, false
  local t = kernel.sched.spawn(function()
    local g <close> = u:mmap_write_lock()
    held = true
    while not released do kernel.sched.yield() end
  end)
  while not held do kernel.sched.yield() end
  return function() released = true t:join() end
end

test("the shrinker takes every lock with a trylock and skips on contention (rust_shrink_free_page)", function()
  binder.shrink(binder.lru_count())
  local u, alloc = process(4 * PAGE)
  alloc:new_buf{data_size = PAGE}:free()
  expect_eq(alloc:page_state(0), "lru")
  local release = hold_write_lock(u)
  local skipped = binder.stats().skipped
  expect_eq(binder.shrink(10), 0, "another task holds the mmap lock for writing")
  expect_eq(binder.stats().skipped - skipped, 1, "the walk ends at the end of the list: nothing was freed to restart it")
  release()
  do
    local g <close> = u:mmap_read_lock()
    expect_eq(binder.shrink(10), 1, "down_read_trylock succeeds for a task holding the lock for reading")
  end
end)

test("the shrinker walks as list_lru_walk: a freed entry restarts at the head, every visit counts", function()
  collectgarbage()
  binder.shrink(1000)
  expect_eq(binder.lru_count(), 0)
  local ua, a = process(4 * PAGE)
  local ub, b = process(4 * PAGE)
  a:new_buf{data_size = PAGE}:free()      -- the LRU's head: a's page
  b:new_buf{data_size = 2 * PAGE}:free()  -- then b's two pages
  expect_eq(binder.lru_count(), 3)
  local release = hold_write_lock(ua)     -- a's entry is LRU_SKIP
  local skipped = binder.stats().skipped
  -- skip a, free b's first (restart), skip a: three entries walked.
  expect_eq(binder.shrink(3), 1)
  expect_eq(binder.stats().skipped - skipped, 2)
  expect_eq(b:page_counts().lru, 1)
  -- skip a, free b's other (restart), skip a, then nothing is left to walk.
  expect_eq(binder.shrink(5), 1)
  expect_eq(binder.stats().skipped - skipped, 4)
  expect_eq(binder.lru_count(), 1)
  release()
  expect_eq(binder.shrink(1), 1)
end)

test("memory pressure runs the shrinker before an allocation fails", function()
  local u, alloc = process(4 << 20)
  local bufs = {}
  for i = 1, 256 do bufs[i] = alloc:new_buf{data_size = 4 * PAGE - 8} end
  for i = 1, 256 do kernel.drop(bufs[i]) end
  bufs = nil
  expect_eq(alloc:page_counts().lru, 1024)
  local reclaimed = binder.stats().reclaimed
  local keep = {}
  local ok = pcall(function()
    for i = 1, 4096 do keep[i] = kernel.page.Page.alloc_page() end
  end)
  expect_eq(binder.stats().reclaimed - reclaimed > 0, true, "reclaim freed LRU pages")
  expect_eq(#keep > 3500, true, "the LRU's pages went to the allocations (" .. #keep .. " pages)")
  keep = nil
  collectgarbage()
end)

test("new_buf waits for a writer holding the mmap lock to insert pages", function()
  local u, alloc = process(4 * PAGE)
  local log = {}
  local g = u:mmap_write_lock()
  local t = kernel.sched.spawn(function()
    local b = alloc:new_buf{data_size = 100}
    log[#log + 1] = "buffer"
    return b:offset()
  end)
  while t:state() ~= "blocked" do kernel.sched.yield() end
  expect_eq(alloc:page_state(0), "free", "nothing inserted while the writer holds the lock")
  log[#log + 1] = "unlock"
  kernel.drop(g)
  expect_eq(t:join(), 0)
  expect_eq(table.concat(log, " "), "unlock buffer")
end)

test("a transaction's one copy: from the sender's user memory into the receiver's pages", function()
  local sender, receiver = mm.mm_alloc(), mm.mm_alloc()
  local alloc = binder.Alloc(receiver, 8 * PAGE)
  local message = ("payload-"):rep(100)
  local from = sender:mmap{len = PAGE}
  uaccess.UserSlice(sender, from, #message):writer():write_raw(message)
  local b = alloc:new_buf{data_size = #message}
  local reader = uaccess.UserSlice(sender, from, #message):reader()
  b:copy_into(reader, 0, #message)
  expect_eq(reader:len(), 0)
  expect_eq(uaccess.UserSlice(receiver, b:user_data(), #message):reader():read_raw(#message), message)
  local short = uaccess.UserSlice(sender, from + PAGE - 4, 8):reader()
  expect_error("EFAULT", b.copy_into, b, short, 0, 8)
  expect_eq(short:len(), 8, "a failed copy does not move the reader")
  expect_error("EINVAL", b.copy_into, b, short, #message, 8)
  kernel.drop(b)
end)

test("an Alloc whose mm is gone, double frees, and release", function()
  local u, alloc = process(4 * PAGE)
  local b = alloc:new_buf{data_size = 10}
  kernel.drop(b)
  expect_error("double drop", kernel.drop, b)
  expect_error("use after drop", b.read, b, 0, 1)
  local live = alloc:new_buf{data_size = 10}
  kernel.drop(u)  -- mm_users reaches zero: exit_mmap
  expect_error("ESRCH", alloc.new_buf, alloc, {data_size = 10})
  expect_eq(live:read(0, 2), "\0\0", "buffers still hold their pages")
  kernel.drop(alloc)
  expect_error("ESRCH", live.read, live, 0, 1)
  kernel.drop(live)  -- freeing after the release does nothing more
  expect_eq(binder.lru_count() >= 0, true)
end)

test("releasing an Alloc frees every page and its mm reference", function()
  collectgarbage()
  local before = kernel.mem.stats()
  local u, alloc = process(8 * PAGE)
  local m = u:mmgrab()
  for i = 1, 4 do alloc:new_buf{data_size = PAGE}:free() end
  expect_eq(m:mm_count(), 3, "ours, the users', and the Alloc's")
  kernel.drop(alloc)
  expect_eq(m:mm_count(), 2)
  kernel.drop(u)
  kernel.drop(m)
  local after = kernel.mem.stats()
  expect_eq(after.free_pages + after.pcp_pages, before.free_pages + before.pcp_pages, "nothing kept")
end)
