-- Hostile input: every bound function and method, with missing, wrong-typed,
-- negative, huge and NaN arguments, on live and dead handles, under pcall.
-- Each call either works or raises a Lua error; the host never crashes and
-- nothing leaks.
local Page = kernel.page.Page

-- Handles the tests pass in: try() never drops these.
local protected = setmetatable({}, {__mode = "k"})

local function hostile_values(extra)
  local v = {
    true, false, 0, -1, 1, 7, 4095, 4096, 4097, 8192, math.maxinteger, math.mininteger,
    2^53, 2^63, 2^64, -2^63, 0/0, math.huge, -math.huge, 0.5, -0.0, "", "x", "4096", "-1",
    string.rep("z", 5000), {}, setmetatable({}, {__index = function() error("trap") end}),
    tostring, coroutine.create(tostring), io.stdout,
  }
  for _, x in ipairs(extra) do
    v[#v + 1] = x
    protected[x] = true
  end
  return v
end

local calls, failures = 0, 0
-- Calls fn(...) under pcall; drops whatever owned handles it returns (a
-- guard, a page, a task) so that hostile calls leave nothing behind.
local function try(fn, ...)
  calls = calls + 1
  local results = table.pack(pcall(fn, ...))
  if not results[1] then
    failures = failures + 1
    local err, t = results[2], type(results[2])
    assert(t == "string" or (t == "table" and getmetatable(err) == kernel.Error),
           "an error must be a message or a kernel.Error, got " .. t)
  end
  for i = 2, results.n do
    local ok, state = pcall(kernel.state, results[i])
    if ok and state == "owned" and not protected[results[i]] then pcall(kernel.drop, results[i]) end
  end
  return results[1]
end

-- Calls fn with every argument position (up to `arity`) replaced by each
-- hostile value, the others set to `defaults`; and with nothing at all.
local function exercise(fn, arity, defaults, values)
  try(fn)
  for pos = 1, arity do
    for i = 0, #values do
      local args = {table.unpack(defaults, 1, arity)}
      args[pos] = values[i]  -- values[0] is nil
      try(fn, table.unpack(args, 1, arity))
    end
  end
end

local function methods(handle)
  local names = {}
  for name in pairs(getmetatable(handle).__index) do names[#names + 1] = name end
  return names
end

local function callback_that_misbehaves(ptr)
  ptr:write(string.rep("p", 4096))
end

test("every Page method on a live page", function()
  collectgarbage()
  local live = kernel.debug.live().Page or 0
  local p <close> = Page.alloc_page()
  local dead = Page.alloc_page()
  kernel.drop(dead)
  local values = hostile_values{p, dead}
  for _, name in ipairs(methods(p)) do
    local m = p[name]
    exercise(m, 4, {p, 0, 8, function() end}, values)
    exercise(function(...) return m(p, ...) end, 3, {0, 8, callback_that_misbehaves}, values)
  end
  collectgarbage()
  expect_eq(kernel.debug.live().Page, live + 1, "only p is left")
  assert(failures > 0 and calls > failures)
end)

test("every Page method on a dropped page is a use-after-drop bug", function()
  local p = Page.alloc_page()
  kernel.drop(p)
  for _, name in ipairs(methods(p)) do
    expect_error("use after drop", p[name], p, 0, 0, function() end)
    exercise(function(...) return p[name](p, ...) end, 3, {0, 1, tostring}, hostile_values{})
  end
end)

test("every Pointer method, inside and after its callback", function()
  local p <close> = Page.alloc_page()
  local saved
  p:with_pointer_into_page(8, 16, function(ptr)
    saved = ptr
    for _, name in ipairs(methods(ptr)) do
      exercise(ptr[name], 3, {ptr, 4, 0}, hostile_values{ptr, p})
    end
  end)
  for _, name in ipairs(methods(saved)) do
    expect_error("use after scope", saved[name], saved, 1)
  end
end)

test("callbacks that misbehave", function()
  local p <close> = Page.alloc_page()
  expect_error("BUG", p.with_pointer_into_page, p, 0, 8, callback_that_misbehaves)
  expect_error("dropped while borrowed", p.with_pointer_into_page, p, 0, 8, function() kernel.drop(p) end)
  expect_eq(p:with_pointer_into_page(0, 8, kernel.sched.yield), nil, "a task yielding gives the CPU up and goes on")
  expect_eq(select(2, pcall(p.with_pointer_into_page, p, 0, 8, coroutine.yield)), "attempt to yield from outside a coroutine")
  expect_error("x", p.with_pointer_into_page, p, 0, 8, function() error("x") end)
  expect_error("trap", p.with_pointer_into_page, p, 0, 8, function() error(setmetatable({}, {__tostring = function() return "trap" end})) end)
  -- a borrower's lender survives a hand-called __gc
  p:with_pointer_into_page(0, 4, function(ptr)
    expect_error("dropped while borrowed", getmetatable(p).__gc, p)
    ptr:write("safe")
  end)
  expect_eq(p:read_raw(0, 4), "safe")
end)

test("metamethods called by hand", function()
  local mt = getmetatable(Page.alloc_page())
  local values = hostile_values{}
  for _, name in ipairs{"__gc", "__close", "__tostring"} do
    exercise(mt[name], 2, {nil, nil}, values)
  end
  local p = Page.alloc_page()
  local name = tostring(p)
  mt.__close(p)
  expect_eq(kernel.state(p), "dropped")
  mt.__gc(p)
  mt.__gc(p)
  -- The handle let go of its page when closed, and still names it.
  expect_eq(tostring(p), name .. " (dropped)")
  expect_error("use after drop: " .. name .. " dropped at", p.size, p)
  local q = Page.alloc_page()
  mt.__gc(q)
  expect_eq(kernel.state(q), "dropped")
  expect_error("double drop", kernel.drop, q)
end)

test("every kernel function", function()
  collectgarbage()
  local live = kernel.debug.live().Page or 0
  local p <close> = Page.alloc_page()
  local values = hostile_values{p}
  local fns = {
    kernel.boot, kernel.machine, kernel.state, kernel.page_align,
    Page.alloc_page, kernel.debug.live, kernel.debug.stats, kernel.debug.leaks,
    kernel.debug.assert_no_leaks, pairs, kernel.Error.__tostring,
  }
  for _, fn in ipairs(fns) do exercise(fn, 2, {nil, nil}, values) end
  collectgarbage()
  expect_eq(kernel.debug.live().Page, live + 1)
  expect_eq(kernel.state(p), "owned")
  exercise(kernel.drop, 2, {nil, nil}, values)  -- drops p among the rest
  expect_eq(kernel.state(p), "dropped")
end)

test("every method of borrowed pages and mappings, live and dead", function()
  collectgarbage()
  local live = kernel.debug.live().Page or 0
  local p <close> = Page.alloc_page()
  local b = kernel.page.borrow_phys(p:phys())
  local values = hostile_values{p, b}
  for _, name in ipairs(methods(b)) do
    exercise(function(...) return b[name](b, ...) end, 3, {0, 8, callback_that_misbehaves}, values)
  end
  local saved
  p:with_page_mapped(function(map)
    saved = map
    for _, name in ipairs(methods(map)) do
      exercise(map[name], 3, {map, 0, 8}, hostile_values{map, p})
    end
  end)
  for _, name in ipairs(methods(saved)) do expect_error("use after scope", saved[name], saved, 0, 1) end
  local q = Page.alloc_page()
  local stale = kernel.page.borrow_phys(q:phys())
  kernel.drop(q)
  for _, name in ipairs(methods(stale)) do
    if name ~= "pfn" and name ~= "phys" and name ~= "order" and name ~= "size" and name ~= "nid" and name ~= "refcount" then
      local args = name == "with_page_mapped" and {function() end} or {0, 0, function() end}
      expect_error("use after free", stale[name], stale, table.unpack(args, 1, 3))
    end
  end
  collectgarbage()
  expect_eq(kernel.debug.live().Page, live + 1)
end)

test("every Page method on a moved page is a use-after-move bug", function()
  local p = Page.alloc_page()
  local pa = kernel.page.into_phys(p)
  for _, name in ipairs(methods(p)) do
    expect_error("use after move", p[name], p, 0, 0, function() end)
  end
  expect_error("drop after move", kernel.drop, p)
  kernel.drop(kernel.page.from_phys(pa))
end)

test("every kernel.mem and kernel.page function", function()
  collectgarbage()
  local live = kernel.debug.live().Page or 0
  local p <close> = Page.alloc_page()
  local values = hostile_values{p, kernel.page.borrow_phys(p:phys())}
  local fns = {Page.alloc_pages, kernel.page.from_phys, kernel.page.borrow_phys,
               kernel.page.borrow_phys_unchecked, kernel.debug.check}
  for _, fn in pairs(kernel.mem) do
    if type(fn) == "function" then fns[#fns + 1] = fn end
  end
  for _, fn in ipairs(fns) do exercise(fn, 2, {0, 0}, values) end
  kernel.mem.fail_page_alloc(nil)
  collectgarbage()
  expect_eq(kernel.debug.live().Page, live + 1)
  kernel.debug.check()
  -- into_phys moves what it is given: a fresh page for each hostile value.
  for _, v in ipairs(hostile_values{}) do try(kernel.page.into_phys, v) end
  local q = Page.alloc_page()
  kernel.drop(kernel.page.from_phys(kernel.page.into_phys(q)))
end)

test("every kernel.sched, kernel.sync and kernel.percpu function and method", function()
  local sched, sync, percpu = kernel.sched, kernel.sync, kernel.percpu
  local m, s = sync.Mutex("m"), sync.SpinLock("s")
  local dyn, stat = percpu.alloc("u16", 1), percpu.define("hostile", "i8", 1)
  local val = percpu.alloc("value")
  local task = sched.spawn(function() return 1 end)
  local values = hostile_values{m, s, dyn, stat, task, percpu.CpuGuard()}
  local fns = {}
  for _, module in ipairs{sched, sync, percpu} do
    for _, fn in pairs(module) do fns[#fns + 1] = fn end
  end
  fns[#fns + 1] = kernel.current
  for _, fn in ipairs(fns) do exercise(fn, 3, {nil, nil, nil}, values) end
  for _, h in ipairs{m, s, dyn, stat, val, task, kernel.current()} do
    for _, name in ipairs(methods(h)) do
      exercise(function(...) return h[name](h, ...) end, 3, {0, 0, 0}, values)
    end
  end
  local guard = percpu.CpuGuard()
  local tok = dyn:get_mut(guard)
  for _, name in ipairs(methods(tok)) do
    exercise(function(...) return tok[name](tok, ...) end, 2, {0, 0}, values)
  end
  kernel.drop(tok)
  -- Undo what the hostile calls left behind: spawned tasks, held guards,
  -- preemption disabled.
  for _, v in ipairs(values) do
    local ok, state = pcall(kernel.state, v)
    if ok and state == "owned" and tostring(v):match("Guard") then kernel.drop(v) end
  end
  while sched.preempt_count() > 0 do sched.preempt_enable() end
  repeat local ok = pcall(sched.run) until ok
  collectgarbage()
  kernel.debug.check()
end)

test("every kernel.mm and kernel.uaccess function and method, live, dead and torn down", function()
  local mm, uaccess, sched = kernel.mm, kernel.uaccess, kernel.sched
  local u = mm.mm_alloc()
  local a = u:mmap{len = 4 * 4096}
  local p = Page.alloc_page()
  local new
  local d = u:mmap{len = 4096, hook = function(vma) new = vma; vma:set_mixedmap():vm_insert_page(vma:vm_start(), p) end}
  local m, u2, async = u:mmgrab(), u:mmget(), u:mmget():into_mmput_async()
  local g = u:mmap_read_lock()
  local vma, mixed = g:vma_lookup(a), g:vma_lookup(d):as_mixedmap_vma()
  local rcu = u:lock_vma_under_rcu(a)
  local slice = uaccess.UserSlice(u, a, 8192)
  local r, w = uaccess.UserSlice(u, a, 8192):reader_writer()
  local handles = {u, m, u2, async, g, vma, mixed, rcu, slice, r, w, new, p}
  local values = hostile_values(handles)
  local fns = {}
  for _, module in ipairs{mm, uaccess} do
    for _, fn in pairs(module) do if type(fn) == "function" then fns[#fns + 1] = fn end end
  end
  for _, fn in ipairs(fns) do exercise(fn, 3, {u, a, 8}, values) end
  for _, h in ipairs(handles) do
    for _, name in ipairs(methods(h)) do
      if name ~= "downgrade" and name ~= "into_mmput_async" and name ~= "reader" and name ~= "writer" and name ~= "reader_writer" then
        exercise(function(...) return h[name](h, ...) end, 2, {a, 8}, values)
      end
    end
  end
  -- Dead handles: every method raises a bug, never crashes. The guard's
  -- views keep an explicit drop off; its scope ends them (a close).
  kernel.drop(rcu)
  expect_error("dropped while borrowed", kernel.drop, g)
  getmetatable(g).__close(g)
  expect_eq(kernel.state(vma), "dropped")
  for _, h in ipairs{vma, mixed, rcu, g, new} do
    for _, name in ipairs(methods(h)) do
      local err = expect_error("BUG", h[name], h, a, 8)
      assert(err.message:find("use after") or err.message:find("no longer protected"), err.message)
    end
  end
  -- Torn down: a borrowed view of an address space whose users are gone.
  local view
  local t = sched.spawn(function() view = kernel.current():mm() end, {mm = u})
  t:join()
  kernel.drop(async)
  kernel.drop(u2)
  kernel.drop(u)
  sched.yield()
  expect_eq(m:mm_users(), 0)
  for _, name in ipairs(methods(view)) do
    if not ({mmget_not_zero = true, mm_users = true, mm_count = true, id = true, map_count = true,
             pgtables_bytes = true, clone = true})[name] then
      expect_error("after mm_users reached zero", view[name], view, a, 8)
    end
  end
  expect_error("after mm_users reached zero", r.read_raw, r, 1)
  expect_error("after mm_users reached zero", w.write_raw, w, "x")
  expect_eq(p:refcount(), 1, "exit_mmap dropped the PTE's reference")
  kernel.drop(p)
  kernel.drop(m)
  for _, v in ipairs(values) do
    local ok, state = pcall(kernel.state, v)
    if ok and state == "owned" and tostring(v):match("Guard") then kernel.drop(v) end
  end
  collectgarbage()
  kernel.debug.check()
end)

test("every kernel.drm_mm and kernel.binder function and method", function()
  local a = kernel.drm_mm.Allocator(0, 1 << 20)
  local n = a:insert_node(4096, {data = "d"})
  local r = kernel.binder.RangeAllocator(1 << 16)
  local off = r:reserve_new{size = 64}
  local u = kernel.mm.mm_alloc()
  local alloc = kernel.binder.Alloc(u, 1 << 16)
  local buf = alloc:new_buf{data_size = 100}
  local handles = {a, n, r, u, alloc, buf}
  local values = hostile_values(handles)
  local fns = {}
  for _, module in ipairs{kernel.drm_mm, kernel.binder} do
    for _, fn in pairs(module) do fns[#fns + 1] = fn end
  end
  for _, fn in ipairs(fns) do exercise(fn, 2, {0, 4096}, values) end
  for _, h in ipairs{a, n, r, alloc, buf} do
    for _, name in ipairs(methods(h)) do
      if name ~= "takedown" and name ~= "free" and name ~= "replace_node" then
        exercise(function(...) return h[name](h, ...) end, 3, {0, 64, 0}, values)
      end
    end
  end
  local s = a:scan{size = 8192}
  for _, name in ipairs(methods(s)) do exercise(function(...) return s[name](s, ...) end, 1, {n}, values) end
  -- Undo what the hostile calls left: blocks in the scan, then the scan.
  pcall(s.remove_block, s, n)
  kernel.drop(s)
  expect_eq(a:stats().nodes >= 1, true)
  kernel.drop(buf)
  kernel.drop(alloc)
  kernel.drop(u)
  collectgarbage()
  kernel.debug.check()
end)
