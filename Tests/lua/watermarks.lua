-- Zone watermarks as __setup_per_zone_wmarks sets them (Watermark.swift has the arithmetic).

test("kernel.mem.zones reports each zone's pages and watermarks", function()
  kernel.boot{memory = "256M"}
  local zones = kernel.mem.zones()
  expect_eq(#zones, 1)
  local z = zones[1]
  expect_eq(z.name, "Normal")
  expect_eq(z.managed, 65536)
  expect_eq(z.min, 512)
  expect_eq(z.low, 640)
  expect_eq(z.high, 768)
  expect_eq(z.promo, 896)
  expect_eq(z.free + z.pcp.count, kernel.mem.stats().free_pages + kernel.mem.stats().pcp_pages)
  -- zone_batchsize: min(65536 >> 10, 256) / 4 = 16, rounddown_pow_of_two(24) - 1;
  -- zone_highsize over 4 CPUs: low / 4 up to an eighth of the zone / 4.
  expect_eq(z.pcp.batch, 15)
  expect_eq(z.pcp.high_min, 160)
  expect_eq(z.pcp.high_max, 2048)
  expect_eq(z.pcp.high, 160)
  expect_eq(kernel.machine().min_free_kbytes, 2048)
  expect_eq(kernel.machine().watermark_scale_factor, 10)
end)

test("kernel.boot takes min_free_kbytes and watermark_scale_factor; nonsense is EINVAL", function()
  kernel.boot{memory = "256M", min_free_kbytes = 65536, watermark_scale_factor = 100}
  local z = kernel.mem.zones()[1]
  expect_eq(z.min, 16384)
  expect_eq(z.low, 20480)
  expect_eq(z.high, 24576)
end)

test("a min watermark above the zone, a negative min_free_kbytes and a scale factor out of range are refused", function()
  expect_eq(expect_error("EINVAL", kernel.boot, {memory = "16M", min_free_kbytes = 1 << 20}).message,
    "min_free_kbytes 1048576 puts the Normal zone's min watermark (262144 pages) above its 4096 managed pages")
  expect_eq(expect_error("EINVAL", kernel.boot, {min_free_kbytes = -1}).message, "min_free_kbytes must not be negative, got -1")
  expect_eq(expect_error("EINVAL", kernel.boot, {watermark_scale_factor = 3001}).message,
    "watermark_scale_factor must be between 1 and 3000, got 3001")
end)

test("GFP_HIGHUSER_MOVABLE is GFP_HIGHUSER with __GFP_MOVABLE", function()
  local gfp = kernel.gfp
  expect_eq(gfp.GFP_HIGHUSER_MOVABLE, gfp.GFP_HIGHUSER | gfp.__GFP_MOVABLE)
  local p <close> = kernel.page.Page.alloc_page(gfp.GFP_HIGHUSER_MOVABLE)
  expect_eq(p:order(), 0)
end)

test("extfrag_index and unusable_index follow the free areas (the per-CPU lists drained)", function()
  kernel.boot{memory = "16M", min_free_kbytes = 0}  -- no watermark: every page can go
  expect_eq(kernel.mem.extfrag_index(0), -1.0, "a free block: the index means nothing")
  expect_eq(kernel.mem.unusable_index(0), 0.0)
  local pages = {}
  for i = 1, 4096 do pages[i] = kernel.page.Page.alloc_page() end
  for i = 1, 4096, 2 do kernel.drop(pages[i]) end  -- every other page: nothing merges
  kernel.mem.drain_pages()
  expect_eq(kernel.mem.stats().free_pages, 2048)
  expect_eq(kernel.mem.extfrag_index(1), 0.5, "1000 - (1000 + 2048 * 1000 / 2) / 2048")
  expect_eq(kernel.mem.unusable_index(1), 1.0, "no free page can serve order 1")
  expect_eq(kernel.mem.unusable_index(0), 0.0)
  for i = 2, 4096, 2 do kernel.drop(pages[i]) end
  expect_error("EINVAL", kernel.mem.extfrag_index, 11)
end)

test("lowmem_reserve: Normal keeps back managed(HighMem) / lowmem_reserve_ratio", function()
  kernel.boot{memory = "4G", highmem = "1G"}
  local zones = kernel.mem.zones()
  expect_eq(table.concat(zones[1].lowmem_reserve, " "), "0 8192", "262144 / 32")
  expect_eq(table.concat(zones[2].lowmem_reserve, " "), "0 0")
end)

test("lowmem_reserve_ratio as the sysctl takes it", function()
  kernel.boot{memory = "4G", highmem = "1G", lowmem_reserve_ratio = {256}}
  expect_eq(kernel.mem.zones()[1].lowmem_reserve[2], 1024)
  expect_eq(expect_error("bad argument #1", kernel.boot, {lowmem_reserve_ratio = {1, 2, 3}}),
    "bad argument #1 to 'boot' (field 'lowmem_reserve_ratio': a list of 1 or 2 integers (Normal, HighMem))")
end)

test("a lowmem_reserve_ratio below 1 keeps nothing back", function()
  kernel.boot{memory = "4G", highmem = "1G", lowmem_reserve_ratio = {0}}
  expect_eq(kernel.mem.zones()[1].lowmem_reserve[2], 0)
end)

test("a high-order GFP_ATOMIC allocation under pressure reserves its pageblock: HighAtomic in zones(), pagetypeinfo and pageblock_type", function()
  -- min_free_kbytes 240000: low (75000) above what is free, so the slow
  -- path runs, where GFP_ATOMIC above order 0 has ALLOC_HIGHATOMIC.
  kernel.boot{memory = "256M", cpus = 1, min_free_kbytes = 240000}
  local page <close> = kernel.page.Page.alloc_pages(kernel.gfp.GFP_ATOMIC, 2)
  expect_eq(kernel.mem.pageblock_type(page:pfn()), "HighAtomic")
  local z = kernel.mem.zones()[1]
  expect_eq(z.pageblocks.HighAtomic, 1)
  local free = 0
  for order = 0, 10 do free = free + z.free_area[order].HighAtomic * (1 << order) end
  assert(free > 0, "the pageblock's free blocks are on the reserve's lists")
  assert(kernel.mem.pagetypeinfo():find("\nNumber of blocks type     Unmovable      Movable  Reclaimable   HighAtomic \n", 1, true),
    kernel.mem.pagetypeinfo())
  local small <close> = kernel.page.Page.alloc_page(kernel.gfp.GFP_ATOMIC)
  assert(kernel.mem.pageblock_type(small:pfn()) ~= "HighAtomic", "order 0 does not take the reserve while it has other pages")
end)
