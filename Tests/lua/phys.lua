-- Ownership by physical address: into_phys, from_phys, borrow_phys.
local Page = kernel.page.Page
local kp = kernel.page
local mem = kernel.mem

test("the ownership round trip", function()
  collectgarbage()
  local free = mem.stats().free_pages + mem.stats().pcp_pages
  local p = Page.alloc_pages(kernel.gfp.__GFP_ZERO, 1)
  p:write_raw("table", 4096)
  local name, pfn = tostring(p), p:pfn()
  local pa = kp.into_phys(p)
  expect_eq(pa, pfn << 12)
  expect_eq(kernel.state(p), "moved")
  local err = expect_error("BUG", p.read_u8, p, 0)
  assert(err.message:match("^use after move: " .. name:gsub("%p", "%%%0") .. " moved by into_phys at Tests/lua/phys.lua:%d+$"), err.message)
  expect_error("drop after move", kernel.drop, p)
  collectgarbage()
  expect_eq(kernel.debug.live().Page, 1, "the page stays allocated, owned by its address")
  local b = kp.borrow_phys(pa)
  expect_eq(b:read_raw(0, 2), "\0\0")
  expect_eq(kp.borrow_phys(pa + 4096):read_raw(0, 5), "table", "the second page of the block")
  local back = kp.from_phys(pa)
  expect_eq(tostring(back), name, "the same page, with its order")
  expect_eq(back:read_raw(4096, 5), "table")
  expect_eq(kernel.state(back), "owned")
  expect_error("did not come from into_phys or was taken back already", kp.from_phys, pa)
  kernel.drop(back)
  expect_eq(mem.stats().free_pages + mem.stats().pcp_pages, free)
end)

test("from_phys of anything else is a bug", function()
  local p <close> = Page.alloc_page()
  expect_error("did not come from into_phys", kp.from_phys, p:phys())
  expect_error("not page aligned", kp.from_phys, p:phys() + 8)
  expect_error("did not come from into_phys", kp.from_phys, 0)
  expect_error("did not come from into_phys", kp.from_phys, -4096)
  expect_error("number expected, got nil", kp.from_phys, nil)
end)

test("into_phys takes an owned Page, not a borrowed or dead one", function()
  local p <close> = Page.alloc_page()
  local b = kp.borrow_phys(p:phys())
  expect_error("bad argument #1 to 'into_phys' (Page expected, got BorrowedPage)", kp.into_phys, b)
  local err = expect_error("BUG", p.with_pointer_into_page, p, 0, 1, function() kp.into_phys(p) end)
  assert(err.message:find("^into_phys of Page{.*} while it is borrowed"), err.message)
  expect_eq(kernel.state(p), "owned")
  local q = Page.alloc_page()
  kernel.drop(q)
  expect_error("use after drop", kp.into_phys, q)
end)

test("a borrowed page used after its owner freed it is a bug naming where", function()
  local p = Page.alloc_page()
  local b = kp.borrow_phys(p:phys())
  expect_eq(kernel.state(b), "borrowed")
  assert(tostring(b):match("^BorrowedPage{pfn=0x%x+}$"), tostring(b))
  b:write_u8(0, 7)
  expect_eq(p:read_u8(0), 7)
  kernel.drop(p) local line = debug.getinfo(1, "l").currentline
  local err = expect_error("BUG", b.read_u8, b, 0)
  expect_eq(err.message, ("use after free: %s freed at Tests/lua/phys.lua:%d"):format(tostring(b), line))
  expect_error("use after free", b.with_page_mapped, b, function() end)
  expect_error("use after free", b.with_pointer_into_page, b, 0, 1, function() end)
  -- The frame is handed out again: still the old borrow's bug.
  local again <close> = Page.alloc_page()
  expect_eq(again:pfn(), b:pfn())
  err = expect_error("BUG", b.read_u8, b, 0)
  assert(err.message:find("reallocated since"), err.message)
  kernel.drop(b)  -- dropping a borrow releases nothing
  expect_eq(again:read_u8(0), again:read_u8(0))
end)

test("borrowing a free page and touching it is a bug", function()
  mem.drain_pages()
  local p = Page.alloc_page()
  local pa = p:phys()
  kernel.drop(p)
  mem.drain_pages()
  local b = kp.borrow_phys(pa)
  local err = expect_error("BUG", b.read_u8, b, 0)
  assert(err.message:find("was free when it was borrowed"), err.message)
end)

test("into_phys without from_phys is a leak with the line that made the page", function()
  local p = Page.alloc_page() local line = debug.getinfo(1, "l").currentline
  local pa = kp.into_phys(p)
  collectgarbage()
  local found
  for _, leak in ipairs(kernel.debug.leaks()) do
    if leak.object == ("Page{pfn=0x%x, order=0}"):format(pa >> 12) then found = leak end
  end
  assert(found, "the given-away page is still a live object")
  expect_eq(found.site, "Tests/lua/phys.lua:" .. line)
  kernel.drop(kp.from_phys(pa))
end)

test("refcount of a page", function()
  local p <close> = Page.alloc_page()
  expect_eq(p:refcount(), 1)
  expect_eq(kp.borrow_phys(p:phys()):refcount(), 1)
end)
