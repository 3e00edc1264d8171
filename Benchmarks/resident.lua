-- Resident memory of an engine, then of a large machine booted with one
-- page allocated and written: "before after" in KiB, for scripts/bench.
local function rss()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmRSS:%s+(%d+)")
    if kb then return tonumber(kb) end
  end
end
collectgarbage()
local before = rss()
kernel.boot{memory = arg[1] or "64G"}
local p = kernel.page.Page.alloc_page()
p:write_u64(0, 1)
print(before, rss())
