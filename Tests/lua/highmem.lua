-- A HighMem zone: the top of RAM has no permanent kernel mapping.
kernel.boot{memory = "64M", highmem = "16M"}
local Page = kernel.page.Page
local gfp = kernel.gfp
-- RAM is pfns 0x100-0x4100; HighMem is its top 16 MiB, from 0x3100.
local HIGH = 0x3100

test("two zones in buddyinfo; the machine reports highmem", function()
  local lines = {}
  for line in kernel.mem.buddyinfo():gmatch("[^\n]+") do lines[#lines + 1] = line end
  expect_eq(#lines, 2)
  assert(lines[1]:match("^Node 0, zone   Normal "), lines[1])
  assert(lines[2]:match("^Node 0, zone  HighMem "), lines[2])
  expect_eq(kernel.machine().highmem, 16 << 20)
  expect_eq(kernel.mem.stats().total_pages, 16384)
end)

test("GFP_KERNEL stays in Normal; __GFP_HIGHMEM prefers HighMem", function()
  local low <close> = Page.alloc_page(gfp.GFP_KERNEL)
  assert(low:pfn() < HIGH, ("0x%x"):format(low:pfn()))
  local high <close> = Page.alloc_page(gfp.GFP_KERNEL | gfp.__GFP_HIGHMEM)
  assert(high:pfn() >= HIGH, ("0x%x"):format(high:pfn()))
end)

test("Normal runs out while HighMem has room", function()
  local held = {}
  while true do
    local ok, p = pcall(Page.alloc_page, gfp.GFP_KERNEL)
    if not ok then break end
    held[#held + 1] = p
  end
  -- Normal down to its min watermark (HighMem holds no lowmem reserve back
  -- from a Normal-only allocation).
  local normal = kernel.mem.zones()[1]
  expect_eq(#held + kernel.mem.stats().free_pages - kernel.mem.zones()[2].free, HIGH - 0x100)
  assert(normal.free <= normal.min, normal.free)
  local high <close> = Page.alloc_page(gfp.GFP_KERNEL | gfp.__GFP_HIGHMEM)
  assert(high:pfn() >= HIGH)
  for _, p in ipairs(held) do kernel.drop(p) end
end)

test("lowmem maps at its direct-map address, highmem at a temporary one", function()
  local low <close> = Page.alloc_page()
  local high <close> = Page.alloc_page(gfp.__GFP_HIGHMEM)
  local PAGE_OFFSET = 0xffff888000000000
  low:with_page_mapped(function(map) expect_eq(map:addr(), PAGE_OFFSET + low:phys()) end)
  high:with_page_mapped(function(map)
    local a = map:addr()
    assert(a ~= PAGE_OFFSET + high:phys(), "no direct map for highmem")
    high:with_page_mapped(function(inner) assert(inner:addr() ~= a, "each nested mapping has its own slot") end)
    map:write("hi", 0)
  end)
  expect_eq(high:read_raw(0, 2), "hi")
end)
