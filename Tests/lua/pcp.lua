-- The per-CPU lists' high moves as 6.12's nr_pcp_alloc and nr_pcp_high move
-- it, and zoneinfo and zones() show it.
kernel.boot{memory = "16M", cpus = 1}  -- 4096 pages: min 128, low 160, high 192
local Page = kernel.page.Page

local function pcp() return kernel.mem.zones()[1].pcp end

local function zoneinfo_pageset()
  return kernel.mem.zoneinfo():match("\n    cpu: 0\n(              count: %d+\n              high:  %d+\n              batch: %d+\n)")
end

test("high starts at high_min and grows by a batch with each refill, up to high_max; frees above the high watermark leave it", function()
  local p = pcp()
  expect_eq(p.high_min, 160, "zone_highsize: the low watermark over the CPUs")
  expect_eq(p.high_max, 512, "zone_highsize: an eighth of the zone")
  expect_eq(p.batch, 1, "zone_batchsize of 4096 pages")
  expect_eq(p.high, 160)
  expect_eq(p.count, 0)
  local held = {}
  for i = 1, 400 do held[i] = Page.alloc_page() end
  expect_eq(pcp().high, 512, "nr_pcp_alloc raised it while the zone was not below its high watermark")
  expect_eq(pcp().count, 15)
  for i = 1, 400 do kernel.drop(held[i]) end
  expect_eq(pcp().count, 415, "below high, every free stays on the list")
  expect_eq(pcp().high, 512)
  expect_eq(zoneinfo_pageset(), "              count: 415\n              high:  512\n              batch: 1\n")
end)

test("below the high watermark (ZONE_BELOW_HIGH) frees shrink high back to high_min", function()
  local keep = {}
  while kernel.mem.zones()[1].free > 150 do keep[#keep + 1] = Page.alloc_page() end
  expect_eq(pcp().high, 512)
  local count = pcp().count
  for _ = 1, 50 do kernel.drop(table.remove(keep)) end
  expect_eq(pcp().high, 160, "nr_pcp_high: each free takes max(free_count, batch) off, down to high_min")
  expect_eq(pcp().count, count + 50, "each free is measured against max(count, high_min): nothing goes back")
  expect_eq(zoneinfo_pageset(), ("              count: %d\n              high:  160\n              batch: 1\n"):format(count + 50))
  for _, page in ipairs(keep) do kernel.drop(page) end
end)
