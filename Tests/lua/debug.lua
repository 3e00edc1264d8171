-- kernel.debug: live objects, drop statistics, leaks.
local Page = kernel.page.Page

test("live counts native objects by type", function()
  collectgarbage()
  expect_eq(kernel.debug.live().Page, nil)
  local a, b = Page.alloc_page(), Page.alloc_page()
  expect_eq(kernel.debug.live().Page, 2)
  kernel.drop(a) kernel.drop(b)
  expect_eq(kernel.debug.live().Page, nil)
end)

test("leaks lists live objects with the line that created them", function()
  KEEP = Page.alloc_page() local line = debug.getinfo(1, "l").currentline
  local leaks = kernel.debug.leaks()
  expect_eq(#leaks, 1)
  expect_eq(leaks[1].type, "Page")
  expect_eq(leaks[1].object, tostring(KEEP))
  expect_eq(leaks[1].site, "Tests/lua/debug.lua:" .. line)
  kernel.drop(KEEP)
  KEEP = nil
  expect_eq(#kernel.debug.leaks(), 0)
end)

test("assert_no_leaks passes through results when nothing is left", function()
  local a, b = kernel.debug.assert_no_leaks(function(x)
    local p <close> = Page.alloc_page()
    Page.alloc_page()  -- the collector takes it: not a leak
    return x, "done"
  end, 41)
  expect_eq(a, 41) expect_eq(b, "done")
end)

test("assert_no_leaks lists what fn left alive", function()
  local kept
  local err = expect_error("assert_no_leaks: 1 native object created inside is still alive", kernel.debug.assert_no_leaks, function()
    kept = Page.alloc_page()
  end)
  assert(err:find("Page{pfn=0x%x+, order=0} created at Tests/lua/debug.lua:%d+"), err)
  kernel.drop(kept)
end)

test("assert_no_leaks ignores objects made before it", function()
  local old <close> = Page.alloc_page()
  kernel.debug.assert_no_leaks(function() end)
end)

test("assert_no_leaks re-raises fn's error", function()
  expect_error("inner", kernel.debug.assert_no_leaks, function() error("inner") end)
end)

test("stats has the SPEC's fields", function()
  local s = kernel.debug.stats()
  for _, k in ipairs{"dropped_by_close", "dropped_by_drop", "dropped_by_gc"} do
    expect_eq(math.type(s[k]), "integer", k)
  end
end)
