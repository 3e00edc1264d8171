-- init_on_alloc: every allocation is zeroed, as if __GFP_ZERO.
kernel.boot{memory = "16M", init_on_alloc = true}

test("a reused page is zeroed without __GFP_ZERO", function()
  local p = kernel.page.Page.alloc_page()
  local pfn = p:pfn()
  p:write_raw(string.rep("x", 4096), 0)
  kernel.drop(p)
  local q <close> = kernel.page.Page.alloc_page()
  expect_eq(q:pfn(), pfn, "the hot page comes back")
  expect_eq(q:read_raw(0, 4096), string.rep("\0", 4096))
  expect_eq(kernel.machine().init_on_alloc, true)
end)
