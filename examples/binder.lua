-- binder: Android Binder's one-copy transactions, its buffer pages, LRU and shrinker
--
-- What it shows:
--   * Process B maps a 4 MiB binder buffer space (a read-only MIXEDMAP VMA).
--   * Tasks of process A send transactions of realistic sizes: most under
--     1 KiB, a tail of large ones, some oneway. Each is copied once, from
--     A's user memory straight into B's buffer pages (copy_from_user into
--     pages that are mapped in B), and B reads it from its own mapping.
--   * Buffer pages are allocated the first time a buffer covers them and
--     inserted with vm_insert_page; when B frees the last buffer on a page,
--     the page goes on the shrinker's LRU instead of being freed, so the
--     next transaction reuses it.
--   * One sender floods B with oneway transactions that B is slow to free:
--     once oneway space runs low, the allocator flags it as a spammer.
--   * A memory hog then fills the machine: before an allocation fails, the
--     page allocator runs binder's shrinker, which frees LRU pages (taking
--     every lock with a trylock).
-- What to look at: pages active/lru/free as traffic comes and goes, the
-- shrinker's reclaims under pressure, and the spam detections.
--
-- Writes: with --out DIR, binder-pages.svg (pages active, on the LRU and
-- free as the run goes), binder-strip.svg (every page when traffic peaks),
-- binder-memory.svg (physical memory while the hog holds it). The timeline
-- with --results FILE; a trace of tasks, locks and reclaim with --trace FILE.
--
-- Usage: mmlab --seed N examples/binder.lua [transactions per sender]
kernel.boot{memory = "24M"}  -- small enough that the hog reaches binder's pages
local mm, binder, uaccess, sched = kernel.mm, kernel.binder, kernel.uaccess, kernel.sched
local PAGE = kernel.PAGE_SIZE
local PER_SENDER = math.tointeger(tonumber(arg and arg[1])) or 150

-- Process B, the receiver, and its binder mmap.
local b_mm = mm.mm_alloc()
local alloc = binder.Alloc(b_mm, 4 << 20)
-- Process A, the sender.
local a_mm = mm.mm_alloc()

local inbox = {}          -- delivered buffers, oldest first, under `todo`
local todo = kernel.sync.SpinLock("B todo")  -- as binder's proc->inner_lock: tasks preempt each other
local stats = {sent = 0, bytes = 0, oneway = 0, waits = 0, spam = 0, verified = 0}  -- under `todo`
local stuck = false       -- a sender found no space: B should catch up (under `todo`)

local samples = 0
local function line(what)
  local c = alloc:page_counts()
  samples = samples + 1
  kernel.results.record{sample = samples, what = what, sent = stats.sent, active = c.active, lru = c.lru, free = c.free,
                        reclaimed = binder.stats().reclaimed, oneway_kib = alloc:free_async_space() // 1024}
  print(("%-26s sent %4d  pages active %4d lru %4d free %4d  reclaimed %4d  oneway space %4d KiB"):format(
    what, stats.sent, c.active, c.lru, c.free, binder.stats().reclaimed, alloc:free_async_space() // 1024))
end

-- Transaction sizes: mostly small, a tail of big ones.
local function draw_size()
  local r = math.random(100)
  if r <= 70 then return math.random(32, 1024) end
  if r <= 95 then return math.random(1024, 8 * 1024) end
  return math.random(32 * 1024, 128 * 1024)
end

-- One sender task of A: it writes each transaction into its own user
-- memory, and binder copies it once into a buffer of B.
local function sender(name, count, oneway_only)
  return sched.spawn(function()
    local me = kernel.current():mm()
    local pid = kernel.current():id()
    local user = me:mmap{len = 128 * 1024}
    for i = 1, count do
      local size = oneway_only and math.random(8 * 1024, 24 * 1024) or draw_size()
      local oneway = oneway_only or math.random(10) == 1
      local payload = ("%s#%d:"):format(name, i)
      uaccess.UserSlice(me, user, #payload):writer():write_raw(payload)
      local ok, buf = pcall(alloc.new_buf, alloc, {data_size = size, is_async = oneway, pid = pid})
      while not ok and buf.errno == "ENOSPC" do  -- B is behind: let it catch up
        do
          local g <close> = todo:lock()
          stats.waits, stuck = stats.waits + 1, true
        end
        sched.yield()
        ok, buf = pcall(alloc.new_buf, alloc, {data_size = size, is_async = oneway, pid = pid})
      end
      assert(ok, buf)
      buf:copy_into(uaccess.UserSlice(me, user, size):reader(), 0, size)  -- the one copy
      do  -- shared with the other senders and B: a read-modify-write here could lose updates
        local g <close> = todo:lock()
        inbox[#inbox + 1] = {buf = buf, payload = payload, oneway = oneway}
        if buf:spam_detected() then stats.spam = stats.spam + 1 end
        stats.sent, stats.bytes = stats.sent + 1, stats.bytes + size
        if oneway then stats.oneway = stats.oneway + 1 end
      end
      if i % 4 == 0 then sched.yield() end
    end
  end, {name = name, mm = a_mm})
end

-- B reads each transaction from its own mapping, then frees the buffer
-- (BC_FREE_BUFFER). Calls are handled after a short backlog; oneway ones
-- pile up until a sender is stuck.
local function receive(t, me)
  local seen = uaccess.UserSlice(me, t.buf:user_data(), #t.payload):reader():read_raw(#t.payload)
  if seen == t.payload then stats.verified = stats.verified + 1 end
  t.buf:free()
end

local receiving = true
local function receiver()
  return sched.spawn(function()
    local me = kernel.current():mm()
    while receiving or #inbox > 0 do
      local ready = {}
      do  -- take what to handle under the lock; read and free outside it (reads may sleep)
        local g <close> = todo:lock()
        local keep = receiving and 16 or 0
        local calls = 0
        for _, t in ipairs(inbox) do if not t.oneway then calls = calls + 1 end end
        local i = 1
        while i <= #inbox do
          local t = inbox[i]
          if (not t.oneway and calls > keep) or (t.oneway and (stuck or not receiving)) then
            ready[#ready + 1] = table.remove(inbox, i)
            if not t.oneway then calls = calls - 1 end
          else
            i = i + 1
          end
        end
        stuck = false
      end
      for _, t in ipairs(ready) do receive(t, me) end
      sched.yield()
    end
  end, {name = "B", mm = b_mm})
end

local peak = 0
local function traffic(senders, every)
  local total = 0
  for _, s in ipairs(senders) do total = total + s[2] end
  stats.sent = 0
  receiving = true
  local rx = receiver()
  local tasks = {}
  for _, s in ipairs(senders) do tasks[#tasks + 1] = sender(table.unpack(s)) end
  local next_line = every
  local function running()
    for _, t in ipairs(tasks) do
      if t:state() == "failed" then t:join() end  -- raises its error here
      if t:state() ~= "done" then return true end
    end
  end
  while running() do
    sched.yield()
    if stats.sent >= next_line then
      line(("  %d sent"):format(stats.sent))
      next_line = next_line + every
      if alloc:page_counts().active > peak then
        peak = alloc:page_counts().active
        kernel.plot.binder(alloc, {file = "binder-strip.svg", title = ("B's buffer pages at %d pages active"):format(peak)})
      end
    end
  end
  for _, t in ipairs(tasks) do t:join() end
  receiving = false
  rx:join()
end

line("start")
traffic({{"A1", PER_SENDER}, {"A2", PER_SENDER}, {"spammer", PER_SENDER, true}}, 75)
line("all received and freed")
local total = 3 * PER_SENDER

-- While B holds its mmap lock (say, in an mmap call), the shrinker cannot
-- zap B's pages: its trylock fails and it skips them.
local holder = sched.spawn(function()
  local g <close> = b_mm:mmap_write_lock()
  line(("shrink(64) while B maps: %d"):format(binder.shrink(64)))
end, {name = "B mmap"})
holder:join()

-- A memory hog: allocation runs binder's shrinker before it fails.
local hog = {}
pcall(function()
  -- __GFP_RETRY_MAYFAIL: reclaim hard, but fail rather than call the OOM killer.
  local gfp = kernel.gfp.GFP_KERNEL | kernel.gfp.__GFP_RETRY_MAYFAIL
  while true do hog[#hog + 1] = kernel.page.Page.alloc_page(gfp) end
end)
kernel.plot.memory{file = "binder-memory.svg", title = "Physical memory while a hog holds it: binder's LRU pages were reclaimed"}
line(("a hog took %d pages"):format(#hog))
hog = nil
collectgarbage()

-- More traffic: pages come back as buffers need them.
traffic({{"A3", 60}}, 30)
line("after more traffic")
total = total + 60

print(("%d transactions (%d KiB, %d oneway), %d read back by B, %d waits for space, %d oneway spam detections"):format(
  total, stats.bytes // 1024, stats.oneway, stats.verified, stats.waits, stats.spam))
print(("shrinker: %d pages reclaimed, %d skipped on contention"):format(binder.stats().reclaimed, binder.stats().skipped))
kernel.plot.line{file = "binder-pages.svg", title = "B's binder pages: traffic, a memory hog, traffic again", x = "sample",
                 y = {"active", "lru", "free"}, xlabel = "sample (the printed lines)", ylabel = "pages"}

kernel.drop(alloc)
kernel.drop(b_mm)
kernel.drop(a_mm)
