-- drm_mm_fragmentation: how each insert mode fragments a GPU address space
--
-- What it shows:
--   * The same random workload (buffer objects of mixed sizes, mostly
--     small, some large, allocated and freed at random, the space kept
--     about 3/4 full) runs against drm_mm under each insert mode.
--   * Fragmentation is the share of free space outside the largest hole:
--     0% means all free space is one hole; near 100% means it is scattered
--     in pieces too small to use.
--   * "refused" counts inserts that failed with ENOSPC although the free
--     space in total was enough: the cost of fragmentation.
--   * best fits snugly; low and high pack one end and leave the other
--     open; evict reuses the most recently freed hole (what the eviction
--     scan relies on).
-- What to look at: fragmentation and refusals per mode as the run goes.
--
-- Writes: with --out DIR, drm_mm-fragmentation.svg (fragmentation of each
-- mode as the run goes) and drm_mm-MODE.svg (each mode's address space at
-- the end); the checkpoints with --results FILE.
--
-- Usage: mmlab --seed N examples/drm_mm_fragmentation.lua [operations]
local OPS = math.tointeger(tonumber(arg and arg[1])) or 20000
local SPACE = 256 << 20      -- a 256 MiB aperture
local PAGE = 4096

local function draw_size()
  local r = math.random(100)
  if r <= 60 then return PAGE * math.random(1, 4) end        -- small: a few pages
  if r <= 90 then return PAGE * math.random(16, 256) end     -- textures
  return PAGE * math.random(1024, 8192)                      -- render targets
end

-- A checkpoint: recorded, and printed when `shown`; its fragmentation.
local function checkpoint(mode, step, a, refused, shown)
  local st = a:stats()
  local frag = st.free > 0 and 100 * (1 - st.largest_hole / st.free) or 0
  kernel.results.record{mode = mode, step = step, nodes = st.nodes, used_pct = 100 * st.used / SPACE, holes = st.holes,
                        largest_hole = st.largest_hole, fragmentation = frag, refused = refused}
  if shown then
    print(("%-6s %6d  nodes %5d  used %5.1f%%  holes %5d  largest hole %7.1f MiB  fragmentation %5.1f%%  refused %4d"):format(
      mode, step, st.nodes, 100 * st.used / SPACE, st.holes, st.largest_hole / (1 << 20), frag, refused))
  end
  return frag
end

local summary, curves, steps = {}, {}, {}
for i = 1, 20 do steps[i] = i * (OPS // 20) end
for _, mode in ipairs{"best", "low", "high", "evict"} do
  math.randomseed(kernel.machine().seed)  -- every mode sees the same workload
  local a = kernel.drm_mm.Allocator(0, SPACE)
  local live, used, refused = {}, 0, 0
  local frags, frag = {}, 0
  for step = 1, OPS do
    if used < 0.75 * SPACE then
      local size = draw_size()
      local ok, node = pcall(a.insert_node, a, size, {alignment = size >= 1 << 20 and 1 << 16 or 0, mode = mode})
      if ok then
        live[#live + 1] = node
        used = used + size
      elseif SPACE - used >= size then
        refused = refused + 1
      end
    else
      local i = math.random(#live)
      used = used - live[i]:size()
      kernel.drop(live[i])
      live[i] = live[#live]
      live[#live] = nil
    end
    if step % (OPS // 20) == 0 then
      frag = checkpoint(mode, step, a, refused, step % (OPS // 4) == 0)
      frags[#frags + 1] = frag
    end
  end
  kernel.plot.drm_mm(a, {file = ("drm_mm-%s.svg"):format(mode), title = ("drm_mm after %d operations in mode %s"):format(OPS, mode)})
  curves[mode] = frags
  summary[#summary + 1] = ("%s %.1f%% / %d refused"):format(mode, frag, refused)
  for _, node in ipairs(live) do kernel.drop(node) end
  a:takedown()
  print()
end
print("fragmentation at the end: " .. table.concat(summary, ", "))
kernel.plot.line{file = "drm_mm-fragmentation.svg", title = "Fragmentation by insert mode", x = steps, series = curves,
                 xlabel = "operations", ylabel = "% of free space outside the largest hole"}
