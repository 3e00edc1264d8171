-- iommu_pagetable: an IOMMU page table built from pages, the way the Asahi GPU driver builds its UAT
--
-- What it shows:
--   * A 3-level table (4 KiB pages, 512 eight-byte entries per level, a
--     39-bit IO address space) whose tables are pages. A child table is
--     stored in its parent's entry by physical address: Page.into_phys
--     hands the page's ownership to the entry, as the driver does.
--   * Entries are read and written through with_pointer_into_page, on pages
--     borrowed back from their physical address with borrow_phys_unchecked,
--     exactly as UATPageTable::with_pages does.
--   * The whole address space is walked and dumped with borrow_phys, and a
--     device read is translated through it.
--   * Teardown takes every page back with from_phys and drops it: the run is
--     leak-free under --strict, and memory returns to its boot state.
--   * A borrowed page kept past the teardown is caught on use, naming where
--     the page was freed, as KASAN would report it.
-- What to look at: the dump of mappings, the table and page counts, and the
-- free-page figures before and after.
-- Writes: iommu-memory.svg (physical memory holding the tables and data
-- pages) with --out DIR; the mappings with --results FILE.
local Page, kp, gfp = kernel.page.Page, kernel.page, kernel.gfp

local LEVELS, ENTRIES, PTE_SIZE = 3, 512, 8
local PGBIT, LVBIT = 12, 9
local PTE_VALID, PTE_TABLE = 1 << 0, 1 << 1     -- a table entry, or a page at the last level
local PTE_READ, PTE_WRITE = 1 << 6, 1 << 7
local PTE_ADDR = ((1 << 48) - 1) & ~0xfff

-- The entry index of `iova` in a table at `level` (0 is the root).
local function index(iova, level)
  return (iova >> (PGBIT + (LEVELS - 1 - level) * LVBIT)) & (ENTRIES - 1)
end

local function load(table, i)
  return table:with_pointer_into_page(i * PTE_SIZE, PTE_SIZE, function(ptr)
    return (string.unpack("<I8", ptr:read(PTE_SIZE)))
  end)
end

local function store(table, i, pte)
  table:with_pointer_into_page(i * PTE_SIZE, PTE_SIZE, function(ptr)
    ptr:write(string.pack("<I8", pte))
  end)
end

local boot = kernel.mem.stats()
local root = Page.alloc_page(gfp.GFP_KERNEL | gfp.__GFP_ZERO)
local tables, pages = 1, 0

-- The last-level table for `iova`, allocating tables on the way.
local function leaf_table(iova)
  local table = root
  for level = 0, LEVELS - 2 do
    local i = index(iova, level)
    local pte = load(table, i)
    if pte & PTE_VALID == 0 then
      local pt = Page.alloc_page(gfp.GFP_KERNEL | gfp.__GFP_ZERO)
      pte = kp.into_phys(pt) | PTE_TABLE | PTE_VALID   -- the entry owns the table now
      store(table, i, pte)
      tables = tables + 1
    end
    -- SAFETY (as in the driver): tables are ours and live while mapped.
    table = kp.borrow_phys_unchecked(pte & PTE_ADDR)
  end
  return table
end

local function map(iova, pa, prot)
  local table, i = leaf_table(iova), index(iova, LEVELS - 1)
  assert(load(table, i) == 0, "already mapped")
  store(table, i, pa | prot | PTE_TABLE | PTE_VALID)
end

-- Buffers a GPU would see: command buffers, firmware, a framebuffer.
local buffers = {
  {name = "cmdbuf", iova = 0x0010000000, pages = 4, prot = PTE_READ | PTE_WRITE},
  {name = "firmware", iova = 0x07f0000000, pages = 2, prot = PTE_READ},
  {name = "framebuffer", iova = 0x4000000000, pages = 3, prot = PTE_READ | PTE_WRITE},
}
for _, b in ipairs(buffers) do
  for n = 0, b.pages - 1 do
    local data = Page.alloc_page(gfp.GFP_KERNEL | gfp.__GFP_ZERO)
    data:write_raw(("%s page %d"):format(b.name, n), 0)
    map(b.iova + n * 4096, kp.into_phys(data), b.prot)
    pages = pages + 1
  end
end
print(("built: %d tables and %d mapped pages; root table at phys 0x%x"):format(tables, pages, root:phys()))

-- Walk the address space, borrowing each table back from its address.
local function walk(table, level, base, visit)
  for i = 0, ENTRIES - 1 do
    local pte = table:read_u64(i * PTE_SIZE)
    if pte & PTE_VALID ~= 0 then
      local iova = base | (i << (PGBIT + (LEVELS - 1 - level) * LVBIT))
      local child = assert(kp.borrow_phys(pte & PTE_ADDR), "an entry points at RAM")
      if level < LEVELS - 1 then walk(child, level + 1, iova, visit) else visit(iova, child, pte) end
    end
  end
end

print("\nIO address        physical        prot  contents")
walk(root, 0, 0, function(iova, page, pte)
  local prot = (pte & PTE_READ ~= 0 and "r" or "-") .. (pte & PTE_WRITE ~= 0 and "w" or "-")
  local text = page:read_raw(0, 24):gsub("%z.*", "")
  print(("0x%010x  ->  0x%08x    %s    %s"):format(iova, page:phys(), prot, text))
  kernel.results.record{iova = iova, phys = page:phys(), prot = prot, contents = text}
end)

-- A device reads through the table: translate, then borrow the page.
local function translate(iova)
  local table = root
  for level = 0, LEVELS - 1 do
    local pte = table:read_u64(index(iova, level) * PTE_SIZE)
    if pte & PTE_VALID == 0 then return nil, ("fault at level %d"):format(level) end
    table = kp.borrow_phys(pte & PTE_ADDR)
  end
  return table:phys() | (iova & 0xfff), table
end
local pa, page = translate(0x4000001005)
print(("\ndevice read at IO address 0x4000001005: phys 0x%x, %q"):format(pa, page:read_raw(5, 6)))
print(("device read at IO address 0x2000000000: %s"):format(select(2, translate(0x2000000000))))

local kept = kp.borrow_phys(translate(0x0010000000) & ~0xfff)
kernel.plot.memory{file = "iommu-memory.svg", title = "The first 256 KiB of RAM: the IOMMU's tables and data pages",
                   start = 0x100000, size = 256 << 10}

-- Teardown: take every page back from its entry and drop it.
local function free_table(table, level)
  for i = 0, ENTRIES - 1 do
    local pte = table:read_u64(i * PTE_SIZE)
    if pte & PTE_VALID ~= 0 then
      local child <close> = kp.from_phys(pte & PTE_ADDR)
      if level < LEVELS - 1 then free_table(child, level + 1) end
      table:write_u64(i * PTE_SIZE, 0)
    end
  end
end
local used = kernel.debug.live().Page
free_table(root, 0)
kernel.drop(root)
kernel.mem.drain_pages()
local after = kernel.mem.stats()
print(("\ntorn down: %d pages were in use (tables and data); free pages %d of %d, as at boot: %s"):format(
  used, after.free_pages, after.total_pages, tostring(after.free_pages == boot.free_pages)))
print(("a borrow kept past the teardown: %s"):format(select(2, pcall(kept.read_u64, kept, 0))))
