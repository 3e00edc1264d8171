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
