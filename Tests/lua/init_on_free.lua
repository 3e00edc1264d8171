-- init_on_free: freed pages are zeroed instead of poisoned.
kernel.boot{memory = "16M", init_on_free = true, page_poison = false}  -- init_on_free wins either way

test("a freed page comes back zeroed", function()
  local p = kernel.page.Page.alloc_page()
  local pfn = p:pfn()
  p:write_raw(string.rep("x", 4096), 0)
  kernel.drop(p)
  local q <close> = kernel.page.Page.alloc_page()
  expect_eq(q:pfn(), pfn)
  expect_eq(q:read_raw(0, 4096), string.rep("\0", 4096))
  expect_eq(kernel.machine().init_on_free, true)
end)
