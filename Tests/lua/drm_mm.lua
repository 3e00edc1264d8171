-- kernel.drm_mm: placement by mode, alignment, colors, eviction scans,
-- the kernel's edge cases (drivers/gpu/drm/tests/drm_mm_test.c).
local Allocator = kernel.drm_mm.Allocator

local function layout(a)
  local out = {}
  for n in a:nodes() do out[#out + 1] = ("%d+%d"):format(n:start(), n:size()) end
  return table.concat(out, " ")
end

local function holes(a)
  local out = {}
  for start, size in a:holes() do out[#out + 1] = ("%d+%d"):format(start, size) end
  return table.concat(out, " ")
end

local function drop_all(list)
  for i = #list, 1, -1 do kernel.drop(list[i]) end
end

test("a new allocator is one hole; reserving all of it leaves none; removing restores it", function()
  local a = Allocator(0, 4096)
  expect_eq(a:clean(), true)
  expect_eq(holes(a), "0+4096")
  local n = a:reserve_node(0, 4096)
  expect_eq(holes(a), "")
  expect_eq(n:hole_follows(), false)
  expect_eq(a:clean(), false)
  kernel.drop(n)
  expect_eq(holes(a), "0+4096")
  a:takedown()
  expect_error("after drm_mm_takedown", a.insert_node, a, 1)
end)

test("each mode's placement on a hand-checked layout", function()
  -- [0,10) free, [10,20) A, [20,50) free, [50,60) B, [60,64) free, [64,100) C, [100,120) free
  local a = Allocator(0, 120)
  local fixed = {a:reserve_node(10, 10), a:reserve_node(50, 10), a:reserve_node(64, 36)}
  expect_eq(holes(a), "0+10 20+30 60+4 100+20")
  local function place(size, opts)
    local n = a:insert_node(size, opts)
    local at = n:start()
    kernel.drop(n)
    return at
  end
  expect_eq(place(4, {mode = "best"}), 60, "best: the smallest hole that fits")
  expect_eq(place(11, {mode = "best"}), 100, "best: 20 beats 30")
  expect_eq(place(4, {mode = "low"}), 0, "low: the lowest hole")
  expect_eq(place(11, {mode = "low"}), 20, "low skips holes too small")
  expect_eq(place(4, {mode = "high"}), 116, "high: the top of the highest hole")
  expect_eq(place(21, {mode = "high"}), 29, "high: top of the only hole that fits")
  expect_eq(place(4, {mode = "lowest"}), 0)
  expect_eq(place(4, {mode = "highest"}), 116)
  expect_eq(place(4, {mode = "low", range_start = 30}), 30, "low within a range")
  expect_eq(place(4, {mode = "high", range_end = 45}), 41, "high within a range")
  expect_eq(place(4, {mode = "low", range_start = 55, range_end = 70}), 60)
  expect_error("ENOSPC", a.insert_node, a, 31)
  expect_error("ENOSPC", a.insert_node, a, 5, {range_start = 60, range_end = 64})
  -- evict: the most recently made hole first
  local n = a:insert_node(4, {mode = "low"})  -- splits [0,10): [4,10) is now the newest hole
  expect_eq(place(2, {mode = "evict"}), 4)
  kernel.drop(n)
  drop_all(fixed)
end)

test("the ONCE modes try one hole only", function()
  -- drm_test_mm_once: [0,7) with [1,2) and [5,6) reserved
  local a = Allocator(0, 7)
  local lo, hi = a:reserve_node(1, 1), a:reserve_node(5, 1)
  expect_eq(lo:hole_follows() and hi:hole_follows(), true)
  local n = a:insert_node(2, {mode = "lowest"})
  expect_eq(n:start(), 2)
  kernel.drop(n)
  n = a:insert_node(2, {mode = "highest"})
  expect_eq(n:start(), 3, "the top of [2,5)")
  kernel.drop(n)
  -- the lowest hole fits by size but not by alignment: no second try
  local b = Allocator(0, 64)
  local keep = {b:reserve_node(3, 1), b:reserve_node(20, 1)}  -- holes 0+3 4+16 21+43
  expect_error("ENOSPC", b.insert_node, b, 8, {mode = "lowest", alignment = 16})
  expect_eq(b:insert_node(8, {mode = "low", alignment = 16}):start(), 32, "low goes on to the next hole")
  kernel.drop(lo); kernel.drop(hi)
  drop_all(keep)
end)

test("high rounds down to the alignment; non-powers of two align", function()
  local a = Allocator(0, 1000)
  local n = a:insert_node(10, {mode = "high", alignment = 64})
  expect_eq(n:start(), 960)
  local m = a:insert_node(10, {alignment = 7})
  expect_eq(m:start() % 7, 0)
  local k = a:insert_node(10, {mode = "high", alignment = 7})
  expect_eq(k:start(), 987, "987 = 7 * 141: the top of [970, 1000) rounded down")
  local o = a:insert_node(3, {alignment = 1, mode = "low"})
  expect_eq(o:start(), 0, "alignment 1 is none (m went into the smaller top hole, at 973)")
  expect_eq(m:start(), 973)
  drop_all{n, m, k, o}
end)

test("alignment up to 2^63 over the whole 64-bit space", function()
  -- drm_test_mm_align64: [1, 2^64 - 2)
  local a = Allocator(1, -3)
  local nodes = {}
  for bit = 63, 1, -1 do
    local align, size = 1 << bit, (1 << (bit - 1)) + 1
    local n = a:insert_node(size, {alignment = align, color = bit})
    expect_eq(n:start() % align == 0 or (bit == 63 and n:start() == 1 << 63), true, "aligned to 2^" .. bit)
    expect_eq(n:size(), size)
    nodes[#nodes + 1] = n
  end
  expect_eq(nodes[1]:start(), 1 << 63, "the 2^63-aligned node sits at 2^63 (negative as a Lua integer)")
  expect_eq(math.ult(nodes[2]:start(), nodes[1]:start()), true)
  drop_all(nodes)
  expect_eq(a:clean(), true)
end)

test("unsigned arithmetic at the top of the range", function()
  local a = Allocator(-4096, 4095)  -- [2^64 - 4096, 2^64 - 1)
  local n = a:insert_node(4095)
  expect_eq(n:start(), -4096)
  expect_eq(a:interval_first(-1, -1), nil)
  expect_eq(a:interval_first(-2, -2), n)
  kernel.drop(n)
  expect_error("EINVAL", Allocator, 1, -1)  -- would end at 2^64
  expect_error("EINVAL", Allocator, 0, 0)
end)

test("removal and reinsertion restore a continuous layout", function()
  local a = Allocator(0, 64 * 8)
  local nodes = {}
  for i = 1, 64 do nodes[i] = a:insert_node(8, {data = i}) end
  expect_eq(holes(a), "")
  expect_error("ENOSPC", a.insert_node, a, 8)
  for _, i in ipairs{7, 33, 2, 64, 1, 40} do
    local start = nodes[i]:start()
    kernel.drop(nodes[i])
    nodes[i] = a:insert_node(8, {data = i})
    expect_eq(nodes[i]:start(), start, "the only hole refills itself")
  end
  local addr, count = 0, 0
  for n in a:nodes() do
    expect_eq(n:start(), addr)
    expect_eq(n:hole_follows(), false)
    expect_eq(a:interval_first(addr, addr + 7), n)
    addr, count = addr + 8, count + 1
  end
  expect_eq(count, 64)
  expect_eq(nodes[33]:data(), 33)
  drop_all(nodes)
  expect_eq(holes(a), "0+512")
end)

test("reserve_node refuses what overlaps, wraps or is empty", function()
  -- check_reserve_boundaries
  local count, size = 8, 16
  local a = Allocator(0, count * size)
  local bad = {{0, 0}, {-size, 0}, {size, 0}, {-size, size}, {-size, -size}, {0, -size}, {size, -size},
               {count * size, size}, {count * size, -size}, {(count + 1) * size, size}}
  for _, b in ipairs(bad) do expect_error("ENOSPC", a.reserve_node, a, b[1], b[2]) end
  local n = a:reserve_node(16, 16)
  expect_error("ENOSPC", a.reserve_node, a, 16, 1)
  expect_error("ENOSPC", a.reserve_node, a, 0, 17)
  expect_error("ENOSPC", a.reserve_node, a, 31, 2)
  local ok = a:reserve_node(32, 1)
  drop_all{n, ok}
end)

test("zero sizes, bad ranges and alignments larger than the range", function()
  local a = Allocator(0, 100)
  expect_error("ENOSPC", a.insert_node, a, 0)
  expect_error("ENOSPC", a.insert_node, a, 101)
  expect_error("ENOSPC", a.insert_node, a, 10, {range_start = 50, range_end = 55})
  expect_error("BUG", a.insert_node, a, 10, {range_start = 60, range_end = 50})
  expect_error("ENOSPC", a.insert_node, a, 10, {alignment = 1000, range_start = 1})
  expect_error("field 'mode'", a.insert_node, a, 10, {mode = "sideways"})
  expect_error("unknown field 'align'", a.insert_node, a, 10, {align = 8})
  -- insert_outside_range: a [1024, 2048) allocator
  local b = Allocator(1024, 1024)
  expect_error("ENOSPC", b.insert_node, b, 1, {range_end = 1024})
  expect_error("ENOSPC", b.insert_node, b, 1024, {range_start = 512, range_end = 1536})
  expect_error("ENOSPC", b.insert_node, b, 1, {range_start = 2048, range_end = 3072})
end)

test("colors force gaps between differently colored neighbours", function()
  -- separate_adjacent_colors, as drm_test_mm_color
  local a = Allocator(0, 1000)
  a:set_color_adjust(function(node, color, start, e)
    if node and node:color() ~= color then start = start + 1 end
    local nxt = node and node:next_node() or a:interval_first(e, e)
    if nxt and nxt:color() ~= color then e = e - 1 end
    return start, e
  end)
  local nodes = {}
  for i = 1, 20 do nodes[i] = a:insert_node(10, {color = i % 3, mode = "low"}) end
  local prev
  for n in a:nodes() do
    if prev and prev:color() ~= n:color() then
      expect_eq(prev:hole_follows(), true, "a gap between colors " .. prev:color() .. " and " .. n:color())
    end
    prev = n
  end
  expect_eq(nodes[2]:start(), 11, "one unit after a different color")
  local same = a:insert_node(10, {color = nodes[20]:color(), mode = "low"})
  expect_eq(same:start(), nodes[20]:start() + 10, "same colors abut")
  expect_error("ENOSPC", a.reserve_node, a, same:start() + 10, 5, nodes[20]:color() + 1)
  a:set_color_adjust(function(node, color, s, e) return e, s end)  -- start past end: nothing fits
  expect_error("ENOSPC", a.insert_node, a, 1)
  expect_error("ENOSPC", a.reserve_node, a, 999, 1)
  local sc = a:scan{size = 1}
  expect_eq(sc:add_block(nodes[1]), false)
  sc:remove_block(nodes[1])
  kernel.drop(sc)
  a:set_color_adjust(function() return "x" end)
  expect_error("two integers", a.insert_node, a, 1)
  a:set_color_adjust(function() error("callback failed") end)
  expect_error("callback failed", a.insert_node, a, 1)
  a:set_color_adjust(function(node, color, s, e) a:insert_node(1) return s, e end)
  expect_error("not reentrant", a.insert_node, a, 1)
  a:set_color_adjust(nil)
  drop_all(nodes)
  kernel.drop(same)
end)

test("eviction frees exactly the hole the scan promised", function()
  local a = Allocator(0, 64)
  local nodes = {}
  for i = 1, 64 do nodes[i] = a:insert_node(1) end
  -- Every insert mode scans; only high takes the top of the hole
  -- (drm_mm_scan_init_with_range keeps the mode as given, and
  -- drm_mm_scan_add_block tests it == DRM_MM_INSERT_HIGH: highest, which
  -- is HIGH | ONCE, scans from the bottom).
  local hits = {}
  for _, mode in ipairs{"low", "high", "best", "evict", "lowest", "highest"} do
    local s = a:scan{size = 8, alignment = 4, mode = mode}
    local added = {}
    for _, i in ipairs{9, 3, 40, 41, 42, 43, 44, 45, 46, 47, 48, 60} do
      added[#added + 1] = nodes[i]
      if s:add_block(nodes[i]) then break end
    end
    local hit_start, hit_end = s:hit()
    hits[#hits + 1] = mode .. "=" .. hit_start
    expect_eq(hit_end - hit_start, 8)
    expect_eq(hit_start % 4, 0)
    expect_error("eviction scan", a.insert_node, a, 1)
    expect_error("eviction scan", kernel.drop, nodes[40])
    local evict = {}
    for i = #added, 1, -1 do
      if s:remove_block(added[i]) then evict[#evict + 1] = added[i] end
    end
    expect_eq(#evict, 8, mode .. ": exactly the nodes under the hole")
    local starts = {}
    for _, n in ipairs(evict) do
      assert(n:start() >= hit_start and n:start() < hit_end, "evicted inside the hit")
      starts[#starts + 1] = n:start()
      kernel.drop(n)
    end
    expect_eq(s:color_evict(), nil, "no color_adjust: nothing more to evict")
    local t = a:insert_node(8, {alignment = 4, mode = "evict"})
    expect_eq(t:start(), hit_start)
    expect_eq(t:hole_follows(), false, "the eviction hole is filled exactly")
    kernel.drop(t)
    for _, start in ipairs(starts) do nodes[start + 1] = a:reserve_node(start, 1) end
    kernel.drop(s)
  end
  expect_eq(table.concat(hits, " "), "low=40 high=40 best=40 evict=40 lowest=40 highest=40",
    "the hole found is exactly 8 bytes")
  -- In a hole larger than asked for, high takes its top.
  local b = Allocator(0, 24)
  local x, y = b:insert_node(6), b:insert_node(6)
  local tops = {}
  for _, mode in ipairs{"low", "high", "best", "evict", "lowest", "highest"} do
    local s = b:scan{size = 8, mode = mode}
    expect_eq(s:add_block(x), false)
    expect_eq(s:add_block(y), true)
    tops[#tops + 1] = mode .. "=" .. s:hit()
    s:remove_block(y)
    s:remove_block(x)
  end
  expect_eq(table.concat(tops, " "), "low=0 high=16 best=0 evict=0 lowest=0 highest=0")
  kernel.drop(x) kernel.drop(y)
  expect_eq(holes(a), "", "continuous again")
  kernel.debug.check()
  drop_all(nodes)
end)

test("color_evict names the neighbour whose color still shortens the hole", function()
  local a = Allocator(0, 30)
  a:set_color_adjust(function(node, color, start, e)
    if node and node:color() ~= color then start = start + 1 end
    return start, e
  end)
  local left = a:insert_node(10, {color = 1, mode = "low"})   -- [0,10)
  local victim = a:insert_node(10, {color = 2, mode = "low"}) -- [11,21): a gap after color 1
  local s = a:scan{size = 10, color = 2}
  expect_eq(s:add_block(victim), true)
  expect_eq(expect_error("BUG", s.color_evict, s).message, "color_evict with 1 block(s) still added to the scan")
  expect_eq(s:remove_block(victim), true)
  -- drm_mm_scan_color_evict: DRM_MM_BUG_ON(&hole->hole_stack == &mm->hole_stack)
  expect_eq(expect_error("BUG", s.color_evict, s).message,
    "color_evict found no hole covering the scan's hit [0xb, 0x15): evict the nodes remove_block chose first")
  kernel.drop(victim)
  local evicted = s:color_evict()
  expect_eq(evicted, nil, "same color as the hole wants: nothing else")
  kernel.drop(s)
  kernel.drop(left)
  -- A node the scan kept can still shorten the hole: color 3 may not sit
  -- just before a color 1 node. B2 was scanned but is not evicted.
  local c = Allocator(0, 40)
  c:set_color_adjust(function(node, color, start, e)
    local nxt = node and node:next_node()
    if color == 3 and nxt and nxt:color() == 1 then e = e - 1 end
    return start, e
  end)
  local x = c:insert_node(10, {mode = "low"})
  local b1 = c:insert_node(10, {color = 1, mode = "low"})
  local b2 = c:insert_node(10, {color = 1, mode = "low"})
  local y = c:insert_node(10, {color = 1, mode = "low"})
  local s2 = c:scan{size = 10, color = 3}
  expect_eq(s2:add_block(b2), false)
  expect_eq(s2:add_block(b1), true, "with both out, [10, 29) fits")
  expect_eq(select(1, s2:hit()), 10)
  expect_eq(s2:remove_block(b1), true)
  expect_eq(s2:remove_block(b2), false, "b2 lies outside the hit")
  kernel.drop(b1)
  local more = s2:color_evict()
  expect_eq(more, b2, "b2's color still takes the hole's last byte")
  expect_eq(kernel.state(more), "borrowed", "the Node is borrowed: b2 owns it")
  kernel.drop(b2)
  expect_eq(s2:color_evict(), nil)
  kernel.drop(s2)
  local t = c:insert_node(10, {color = 3, mode = "evict"})
  expect_eq(t:start(), 10)
  kernel.drop(t)
  kernel.drop(x)
  kernel.drop(y)
end)

test("scan misuse: out of order, twice, foreign nodes, a second scan, dropped with blocks", function()
  local a, b = Allocator(0, 16), Allocator(0, 16)
  local n = {}
  for i = 1, 4 do n[i] = a:insert_node(1) end
  local foreign = b:insert_node(1)
  local s = a:scan{size = 2}
  local idle = a:scan{size = 1}  -- another scan may start while none has blocks added
  kernel.drop(idle)
  s:add_block(n[1])
  -- drm_mm_scan_init_with_range: DRM_MM_BUG_ON(mm->scan_active)
  expect_eq(expect_error("BUG", a.scan, a, {size = 1}).message,
    "scan on Allocator{start=0x0, size=0x10, nodes=4} while an eviction scan has 1 block(s) added: remove them first")
  s:add_block(n[2])
  expect_error("already", s.add_block, s, n[1])
  expect_error("another allocator", s.add_block, s, foreign)
  expect_error("out of order", s.remove_block, s, n[1])
  expect_error("still added", kernel.drop, s)
  expect_error("eviction scan", a.takedown, a)
  expect_eq(s:remove_block(n[2]), true)
  expect_eq(s:remove_block(n[1]), true)
  expect_error("was not added", s.remove_block, s, n[1])
  kernel.drop(s)
  expect_error("BUG", a.scan, a, {size = 0})
  expect_error("BUG", a.scan, a, {size = 4, range_start = 8, range_end = 8})
  expect_error("field 'mode'", a.scan, a, {size = 1, mode = "first"})
  local again = a:scan{size = 1, mode = "best"}  -- s is still open, with no blocks: fine
  expect_eq(again:add_block(n[4]), true)
  expect_eq(again:remove_block(n[4]), true)
  kernel.drop(again)
  expect_eq(layout(a), "0+1 1+1 2+1 3+1", "the scans left the allocator as it was")
  drop_all(n)
  kernel.drop(foreign)
end)

test("replace_node moves the allocation and its data to a new node", function()
  local a = Allocator(0, 100)
  local old = a:insert_node(10, {color = 5, data = "payload"})
  local new = a:replace_node(old)
  expect_eq(kernel.state(old), "dropped")
  expect_eq(new:start(), 0)
  expect_eq(new:color(), 5)
  expect_eq(new:data(), "payload")
  expect_error("use after drop", old.start, old)
  expect_eq(layout(a), "0+10")
  kernel.drop(new)
  expect_eq(a:clean(), true)
end)

test("takedown of an unclean allocator is a bug listing its nodes", function()
  local a = Allocator(0, 100)
  local n = a:insert_node(10)
  local err = expect_error("BUG", a.takedown, a)
  assert(err.message:find("not clean") and err.message:find("Node{start=0x0, size=0xa"), err.message)
  kernel.drop(n)
  a:takedown()
end)

test("nodes keep their allocator; dropped nodes remove themselves; print and stats", function()
  local a = Allocator(0, 4096)
  local n1 = a:insert_node(100)
  local n2 = a:insert_node(200, {mode = "high"})
  local text = a:print()
  expect_eq(text, table.concat({
    "0x0000000000000000-0x0000000000000064: 100: used",
    "0x0000000000000064-0x0000000000000f38: 3796: free",
    "0x0000000000000f38-0x0000000000001000: 200: used",
    "total: 4096, used 300 free 3796"}, "\n"))
  local st = a:stats()
  expect_eq(st.nodes, 2); expect_eq(st.holes, 1); expect_eq(st.free, 3796); expect_eq(st.largest_hole, 3796)
  local size, start = a:largest_hole()
  expect_eq(size, 3796); expect_eq(start, 100)
  kernel.drop(a)  -- the allocator handle goes; the nodes hold the structure
  expect_eq(n1:next_node(), n2)
  kernel.drop(n1)
  expect_eq(n2:next_node(), nil)
  kernel.drop(n2)
  collectgarbage()
  expect_eq(kernel.debug.live().Node, nil)
end)

test("nodes the collector drops are removed, even during a scan", function()
  local a = Allocator(0, 10)
  for i = 1, 5 do a:insert_node(1) end  -- handles dropped on the floor
  local keep = a:insert_node(1)
  local s = a:scan{size = 1}
  s:add_block(keep)
  collectgarbage()
  collectgarbage()
  s:remove_block(keep)
  kernel.drop(s)
  expect_eq(layout(a), "5+1", "only the node still referenced")
  kernel.drop(keep)
end)
