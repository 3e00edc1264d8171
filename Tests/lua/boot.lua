-- kernel.boot: configure before first use; EBUSY after. Bad configurations
-- are rejected before the machine exists, so each case still boots.
test("bad configurations are rejected", function()
  expect_error("bad argument #1 to 'boot' (table expected, got number)", kernel.boot, 5)
  expect_error("unknown field 'memroy'", kernel.boot, {memroy = "1G"})
  expect_error("field 'memory': size expected", kernel.boot, {memory = "lots"})
  expect_error("EINVAL", kernel.boot, {memory = -1})  -- sizes are unsigned: 2^64-1
  expect_error("field 'memory': size expected", kernel.boot, {memory = 0/0})
  expect_error("EINVAL", kernel.boot, {memory = 0})
  expect_error("EINVAL", kernel.boot, {memory = "2T"})
  expect_error("EINVAL", kernel.boot, {cpus = 0})
  expect_error("EINVAL", kernel.boot, {cpus = 65})
  expect_error("field 'cpus': integer expected", kernel.boot, {cpus = "four"})
  expect_eq(expect_error("EINVAL", kernel.boot, {max_map_count = 0}).message, "max_map_count must be at least 1, got 0")
end)

-- A fresh engine per case would be needed to boot each of these; they are
-- rejected before anything boots, so one engine checks them all.
test("bad memory maps are rejected", function()
  local M = 1 << 20
  for _, case in ipairs{
    {{{start = 0x100001, size = M}}, "EINVAL"},                          -- unaligned start
    {{{start = 0x100000, size = M + 1}}, "EINVAL"},                      -- unaligned size
    {{{start = 0x100000, size = 0}}, "EINVAL"},                          -- empty
    {{{start = 0, size = 2 * M}, {start = M, size = M}}, "EINVAL"},      -- overlap
    {{{start = 1 << 40, size = M}}, "EINVAL"},                           -- past 1 TiB
    {{{start = (1 << 40) - M, size = M}}, "EINVAL"},                     -- over the zero page, the last frame
    {{{start = -4096, size = 4096}}, "EINVAL"},                          -- wraps
    {{{start = 0, size = M, type = "mmio"}}, "EINVAL"},                  -- no RAM
    {{{start = 0, size = M, type = "rom"}}, "\"ram\", \"reserved\" or \"mmio\" expected"},
    {{{start = 0, size = M, kind = "ram"}}, "unknown field 'kind'"},
    {{"ram"}, "field 'memmap[1]': table expected"},
    {"ram", "field 'memmap': list of regions expected"},
  } do
    expect_error(case[2], kernel.boot, {memmap = case[1]})
  end
  expect_error("EINVAL", kernel.boot, {memory = "2M", memmap = {{start = 0, size = M}}})
  expect_error("EINVAL", kernel.boot, {memory = "16M", highmem = "16M"})
  expect_error("EINVAL", kernel.boot, {memory = "16M", highmem = 4097})
  expect_error("field 'init_on_free': boolean expected", kernel.boot, {init_on_free = 1})
end)


test("boot configures the machine", function()
  kernel.boot{memory = "64M", cpus = 2, seed = 42}
  local m = kernel.machine()
  expect_eq(m.memory, 64 << 20)
  expect_eq(m.cpus, 2)
  expect_eq(m.seed, 42)
  expect_eq(#m.memmap, 1)
  expect_eq(m.memmap[1].start, 0x100000)
  expect_eq(m.memmap[1].size, 64 << 20)
  expect_eq(m.memmap[1].type, "ram")
end)

test("a machine in use cannot boot again", function()
  kernel.boot{memory = "64M", cpus = 2, seed = 42}
  local err = expect_error("EBUSY", kernel.boot, {memory = "1G"})
  expect_eq(err.code, 16)
  expect_eq(kernel.machine().memory, 64 << 20)
end)

test("a small machine runs out of memory with ENOMEM", function()
  kernel.boot{memory = "64M"}
  -- 64M is 16384 pages; GFP_KERNEL takes them down to the min watermark
  -- (256 pages: sqrt(65536 kB * 16) = 1024 kB), then fails.
  local pages = {}
  for i = 1, 16384 - 256 do pages[i] = kernel.page.Page.alloc_page() end
  expect_error("ENOMEM", kernel.page.Page.alloc_page)
  expect_eq(kernel.mem.stats().free_pages, 256)
  for i = 1, #pages do kernel.drop(pages[i]) end
  kernel.drop(kernel.page.Page.alloc_page())
end)

test("kernel.reboot: a fresh machine once nothing of the old one is alive", function()
  kernel.boot{cpus = 2}
  local p, site = kernel.page.Page.alloc_page(), here()
  local err = expect_error("EBUSY", kernel.reboot, {cpus = 3})
  -- GFP_KERNEL is Unmovable: it claimed the first max-order block, at pfn 0x400.
  expect_eq(err.message, "kernel.reboot with 1 native object of the old machine alive: Page{pfn=0x400, order=0} created at " .. site)
  expect_eq(kernel.sched.nr_cpu_ids(), 2, "a refused reboot changes nothing")
  kernel.drop(p)
  kernel.reboot{cpus = 3}
  expect_eq(kernel.sched.nr_cpu_ids(), 3)
  local q = kernel.page.Page.alloc_page()
  q = nil  -- unreferenced: the collector drops it before the reboot looks
  kernel.reboot{memory = "64M"}
  expect_eq(kernel.machine().memory, 64 << 20)
  expect_eq(kernel.mem.stats().free_pages, 16384, "every page of the new machine is free")
end)

test("kernel.reboot is refused while other tasks run, and inside a task", function()
  local inner
  local t = kernel.sched.spawn(function()
    local ok, e = pcall(kernel.reboot)
    inner = e
  end, {name = "worker"})
  local err = expect_error("EBUSY", kernel.reboot)
  expect_eq(err.message, "kernel.reboot with tasks still running: 'worker' (runnable)")
  kernel.sched.run()
  expect_eq(inner.message, "kernel.reboot in task 'worker': only the main chunk reboots the machine")
  t = nil
  kernel.reboot{}
end)
