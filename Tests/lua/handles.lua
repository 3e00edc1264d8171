-- Handles: drop, <close>, the collector, and what happens after.
local Page = kernel.page.Page

test("kernel.state follows a handle's life", function()
  local p = Page.alloc_page()
  expect_eq(kernel.state(p), "owned")
  kernel.drop(p)
  expect_eq(kernel.state(p), "dropped")
  assert(tostring(p):match("%(dropped%)$"), tostring(p))
end)

test("use after drop names the object and the drop site", function()
  local p = Page.alloc_page()
  local name = tostring(p)
  kernel.drop(p) local line = debug.getinfo(1, "l").currentline
  local err = expect_error("BUG", p.read_u8, p, 0)
  expect_eq(err.errno, nil)
  expect_eq(err.code, nil)
  expect_eq(err.bug, true)
  expect_eq(err.message, ("use after drop: %s dropped at Tests/lua/handles.lua:%d"):format(name, line))
  expect_eq(tostring(err), "BUG: " .. err.message)
  for _, m in ipairs{"size", "pfn", "phys", "read_raw", "write_u64", "with_pointer_into_page"} do
    expect_error("use after drop", function() return p[m](p, 0, 0, function() end) end)
  end
end)

test("double drop is a bug; __close and __gc of a dropped handle do nothing", function()
  local p <close> = Page.alloc_page()
  collectgarbage()
  local live = kernel.debug.live().Page
  kernel.drop(p)
  local err = expect_error("BUG", kernel.drop, p)
  assert(err.message:match("^double drop: Page{pfn=0x%x+, order=0} dropped at Tests/lua/handles.lua:%d+$"), err.message)
  expect_eq(kernel.debug.live().Page or 0, live - 1)
end)

test("<close> drops at scope exit and is counted", function()
  local before = kernel.debug.stats().dropped_by_close
  local pfn
  do
    local p <close> = Page.alloc_page()
    pfn = p:pfn()
    expect_eq(kernel.state(p), "owned")
  end
  expect_eq(kernel.debug.stats().dropped_by_close, before + 1)
  local q <close> = Page.alloc_page()
  expect_eq(q:pfn(), pfn, "the freed frame is reused first")
end)

test("<close> drops on error too", function()
  local before = kernel.debug.live().Page or 0
  local ok = pcall(function()
    local p <close> = Page.alloc_page()
    error("boom")
  end)
  assert(not ok)
  expect_eq(kernel.debug.live().Page or 0, before)
end)

test("the collector drops unreferenced handles and counts them", function()
  collectgarbage()
  local before = kernel.debug.stats()
  local live = kernel.debug.live().Page or 0
  for i = 1, 100 do Page.alloc_page() end
  expect_eq(kernel.debug.live().Page, live + 100)
  collectgarbage()
  local after = kernel.debug.stats()
  expect_eq(after.dropped_by_gc, before.dropped_by_gc + 100)
  expect_eq(after.dropped_by_drop, before.dropped_by_drop)
  expect_eq(kernel.debug.live().Page or 0, live)
end)

test("kernel.drop counts drops", function()
  local before = kernel.debug.stats().dropped_by_drop
  kernel.drop(Page.alloc_page())
  kernel.drop(Page.alloc_page())
  expect_eq(kernel.debug.stats().dropped_by_drop, before + 2)
end)

test("a lender cannot be dropped while borrowed", function()
  local p = Page.alloc_page()
  local err = expect_error("BUG", p.with_pointer_into_page, p, 0, 8, function(ptr)
    kernel.drop(p)
  end)
  assert(err.message:match("^dropped while borrowed: Page{"), err.message)
  expect_eq(kernel.state(p), "owned", "the failed drop left it alone")
  kernel.drop(p)
end)

test("kernel.drop and kernel.state want handles", function()
  expect_error("bad argument #1 to 'drop' (handle expected, got number)", kernel.drop, 1)
  expect_error("bad argument #1 to 'state' (handle expected, got no value)", kernel.state)
  expect_error("handle expected, got table", kernel.drop, {})
  expect_error("handle expected, got FILE*", kernel.drop, io.stdout)
end)

test("methods check self", function()
  local p <close> = Page.alloc_page()
  expect_error("bad argument #1 to 'read_u8' (Page expected, got number)", p.read_u8, 1, 0)
  expect_error("bad argument #1 to 'read_u8' (Page expected, got FILE*)", p.read_u8, io.stdout, 0)
  expect_error("calling 'read_u8' on bad self", function() local t = {read_u8 = p.read_u8}; return t:read_u8(0) end)
end)

test("a method the handle's type lacks names the type, a close name, or the type that has it", function()
  local function message(code)
    local ok, err = pcall(load(code, "=x.lua"))
    expect_eq(ok, false)
    return err
  end
  expect_eq(message("local u <close> = kernel.mm.mm_alloc(); local m <close> = u:mmgrab(); m:mmap_read_lock()"),
    "x.lua:1: Mm has no method 'mmap_read_lock' (a MmWithUser method: take one with mmget_not_zero())")
  expect_eq(message("local p <close> = kernel.page.Page.alloc_page()\np:raed_u8(0)"),
    "x.lua:2: Page has no method 'raed_u8' (did you mean 'read_u8'?)")
  expect_eq(message("local p <close> = kernel.page.Page.alloc_page() p:mmap()"),
    "x.lua:1: Page has no method 'mmap' (a method of MmWithUser and MmWithUserAsync)")
  expect_eq(message("local p <close> = kernel.page.Page.alloc_page() p:wait_event()"),
    "x.lua:1: Page has no method 'wait_event' (a WaitQueue method)")
  expect_eq(message("local p <close> = kernel.page.Page.alloc_page() p:xyzzy()"), "x.lua:1: Page has no method 'xyzzy'")
  local p <close> = Page.alloc_page()
  expect_eq(p.mmap, nil, "reading a field that is not there is nil, as for a table")
  expect_eq(p[1], nil)
end)

test("a moved handle names the operation that moved it, for a use and for a drop", function()
  local p = Page.alloc_page()
  local name = tostring(p)
  local pa = kernel.page.into_phys(p) local at = here()
  expect_eq(expect_error("BUG", p.read_u8, p, 0).message, ("use after move: %s moved by into_phys at %s"):format(name, at))
  expect_eq(expect_error("BUG", kernel.drop, p).message, ("drop after move: %s moved by into_phys at %s"):format(name, at))
  kernel.drop(kernel.page.from_phys(pa))
end)

test("dropped while borrowed lists every live borrow and where it was taken", function()
  local u <close> = kernel.mm.mm_alloc()
  local g = u:mmap_read_lock() local at = here()
  expect_eq(expect_error("BUG", kernel.drop, u).message,
    ("dropped while borrowed: MmWithUser{id=%d, users=1, count=1} has 1 live borrow: MmapReadGuard{mm=%d} taken at %s"):format(u:id(), u:id(), at))
  kernel.drop(g)
  local p <close> = Page.alloc_page()
  p:with_page_mapped(function(m) p:with_pointer_into_page(0, 8, function(ptr) local inner = here()
    expect_eq(expect_error("BUG", kernel.drop, p).message,
      ("dropped while borrowed: %s has 2 live borrows: %s taken at %s, %s taken at %s"):format(tostring(p), tostring(m), inner, tostring(ptr), inner))
  end) end)
end)

test("a <close> drop that fails while an error unwinds leaves that error in place", function()
  local original = {}
  local ok, err = pcall(function()
    local u <close> = kernel.mm.mm_alloc()
    local g <close> = u:mmap_read_lock()
    kernel.drop(g)
    local g2 = u:mmap_read_lock()  -- not scoped: u cannot be dropped
    error(original)
  end)
  expect_eq(ok, false)
  expect_eq(err, original, "the script's error, not the drop's")
  collectgarbage()
end)
