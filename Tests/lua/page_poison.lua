-- page_poison = false: freed pages are neither poisoned nor zeroed (the
-- default, poisoning with PAGE_POISON 0xaa, is in buddy.lua).
kernel.boot{memory = "16M", page_poison = false}

test("a reused page keeps what was written", function()
  expect_eq(kernel.machine().page_poison, false)
  local p = kernel.page.Page.alloc_page()
  local pfn = p:pfn()
  p:write_raw(string.rep("x", 4096), 0)
  kernel.drop(p)
  local q <close> = kernel.page.Page.alloc_page()
  expect_eq(q:pfn(), pfn)
  expect_eq(q:read_raw(0, 4096), string.rep("x", 4096))
end)

test("__GFP_ZERO still zeroes", function()
  local p = kernel.page.Page.alloc_page()
  p:write_u64(0, -1)
  kernel.drop(p)
  local z <close> = kernel.page.Page.alloc_page(kernel.gfp.GFP_KERNEL | kernel.gfp.__GFP_ZERO)
  expect_eq(z:read_u64(0), 0)
end)

test("page_poison must be a boolean", function()
  expect_error("field 'page_poison': boolean expected", kernel.boot, {page_poison = 1})
end)
