-- with_pointer_into_page: a pointer valid for len bytes, only during the call.
local Page = kernel.page.Page

test("fn gets a pointer at the offset and its results come back", function()
  local p <close> = Page.alloc_page(kernel.gfp.__GFP_ZERO)
  p:write_raw("abcdefgh", 16)
  local a, b, c = p:with_pointer_into_page(18, 4, function(ptr)
    expect_eq(ptr:len(), 4)
    expect_eq(ptr:read(4), "cdef")
    expect_eq(ptr:read(2, 2), "ef")
    ptr:write("XY", 1)
    return 1, nil, "three"
  end)
  expect_eq(a, 1) expect_eq(b, nil) expect_eq(c, "three")
  expect_eq(p:read_raw(16, 8), "abcXYfgh")
end)

test("going past len through the pointer is a bug, and touches nothing", function()
  local p <close> = Page.alloc_page(kernel.gfp.__GFP_ZERO)
  p:with_pointer_into_page(0, 4, function(ptr)
    expect_error("BUG", ptr.read, ptr, 5)
    expect_error("BUG", ptr.write, ptr, "12345")
    expect_error("BUG", ptr.write, ptr, "1", 4)
    expect_error("BUG", ptr.read, ptr, 1, -1)
    expect_eq(ptr:read(0, 4), "", "(len, 0) is in bounds")
  end)
  expect_eq(p:read_raw(0, 8), string.rep("\0", 8))
end)

test("the pointer expires when fn returns", function()
  local p <close> = Page.alloc_page()
  local saved
  p:with_pointer_into_page(0, 8, function(ptr) saved = ptr end)
  expect_eq(kernel.state(saved), "dropped")
  local err = expect_error("BUG", saved.read, saved, 1)
  assert(err.message:find("use after scope: Pointer{pfn=0x%x+, offset=0, len=8} was valid only inside the callback at Tests/lua/callbacks.lua:%d+"), err.message)
  kernel.drop(p)  -- the borrow ended with the callback
end)

test("an error in fn propagates and leaks nothing", function()
  local p <close> = Page.alloc_page()
  collectgarbage()
  local live = kernel.debug.live()
  local saved
  local ok, err = pcall(p.with_pointer_into_page, p, 0, 8, function(ptr)
    saved = ptr
    Page.alloc_page()  -- unreferenced: the collector takes it
    error("boom")
  end)
  assert(not ok and err:find("callbacks.lua:%d+: boom$"), err)
  expect_eq(kernel.state(saved), "dropped", "the pointer expired on the error path")
  collectgarbage()
  expect_eq(kernel.debug.live().Page, live.Page)
end)

test("a kernel.Error from fn passes through unchanged", function()
  local p <close> = Page.alloc_page()
  local err = expect_error("EINVAL", p.with_pointer_into_page, p, 0, 1, function()
    p:read_raw(4096, 1)
  end)
  expect_eq(err.message, "offset 4096 + length 1 exceeds the page (4096)")
end)

test("callbacks nest and may yield in a coroutine", function()
  local p <close> = Page.alloc_page(kernel.gfp.__GFP_ZERO)
  local co = coroutine.wrap(function()
    return p:with_pointer_into_page(0, 4, function(outer)
      local inner = p:with_pointer_into_page(4, 4, function(inner)
        coroutine.yield("paused")
        inner:write("in")
        return "inner"
      end)
      outer:write("out")
      return inner
    end)
  end)
  expect_eq(co(), "paused")
  expect_eq(co(), "inner")
  expect_eq(p:read_raw(0, 6), "out\0in")
end)

test("fn must be a function", function()
  local p <close> = Page.alloc_page()
  expect_error("bad argument #3 to 'with_pointer_into_page' (function expected, got no value)", function()
    p:with_pointer_into_page(0, 1)
  end)
end)
