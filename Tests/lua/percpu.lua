-- kernel.percpu: per-CPU variables, numeric operations, guards and tokens.
local percpu, sched = kernel.percpu, kernel.sched

-- [type] = {min, max, bits}
local widths = {
  i8 = {-128, 127}, i16 = {-32768, 32767}, i32 = {-2147483648, 2147483647},
  i64 = {math.mininteger, math.maxinteger}, isize = {math.mininteger, math.maxinteger},
  u8 = {0, 255}, u16 = {0, 65535}, u32 = {0, 4294967295},
  u64 = {0, -1}, usize = {0, -1},   -- 2^64-1 reads as -1 in two's complement
}

test("every width wraps for add, sub, inc, dec, add_return, sub_return, xchg, cmpxchg", function()
  for type, range in pairs(widths) do
    local lo, hi = range[1], range[2]
    local v = percpu.alloc(type, hi)
    local g <close> = percpu.CpuGuard()
    local what = function(op) return type .. " " .. op end
    v:this_cpu_inc()
    expect_eq(v:this_cpu_read(), lo, what("max + 1"))
    v:this_cpu_dec()
    expect_eq(v:this_cpu_read(), hi, what("min - 1"))
    expect_eq(v:this_cpu_add_return(2), lo + 1, what("add_return"))
    expect_eq(v:this_cpu_sub_return(3), hi - 1, what("sub_return"))
    v:this_cpu_add(1)
    v:this_cpu_sub(1)
    v:this_cpu_add(2)
    expect_eq(v:this_cpu_read(), lo, what("add/sub"))
    expect_eq(v:this_cpu_xchg(hi), lo, what("xchg returns the old value"))
    expect_eq(v:this_cpu_read(), hi, what("xchg stores"))
    expect_eq(v:this_cpu_cmpxchg(hi, 5), hi, what("cmpxchg returns the old value"))
    expect_eq(v:this_cpu_read(), 5, what("cmpxchg swapped"))
    expect_eq(v:this_cpu_cmpxchg(6, 7), 5, what("cmpxchg that fails"))
    expect_eq(v:this_cpu_read(), 5)
    v:this_cpu_write(lo)
    expect_eq(v:this_cpu_read(), lo, what("write"))
    expect_eq(v:type(), type)
  end
end)

test("a number outside the type is an argument error: Rust's types cannot hold it", function()
  local v = percpu.alloc("u8")
  local g <close> = percpu.CpuGuard()
  expect_eq(expect_error("bad argument", v.this_cpu_write, v, 300), "bad argument #2 to 'this_cpu_write' (300 is out of range for u8 (0 to 255))")
  expect_eq(expect_error("bad argument", v.this_cpu_write, v, -1), "bad argument #2 to 'this_cpu_write' (-1 is out of range for u8 (0 to 255))")
  expect_eq(expect_error("bad argument", v.this_cpu_add, v, 256), "bad argument #2 to 'this_cpu_add' (256 is out of range for u8 (0 to 255))")
  expect_eq(expect_error("bad argument", v.this_cpu_sub, v, -1), "bad argument #2 to 'this_cpu_sub' (-1 is out of range for u8 (0 to 255))")
  expect_eq(expect_error("bad argument", v.this_cpu_xchg, v, 256), "bad argument #2 to 'this_cpu_xchg' (256 is out of range for u8 (0 to 255))")
  expect_eq(expect_error("bad argument", v.this_cpu_cmpxchg, v, 0, 999), "bad argument #3 to 'this_cpu_cmpxchg' (999 is out of range for u8 (0 to 255))")
  expect_eq(expect_error("bad argument", v.set_per_cpu, v, 0, -129), "bad argument #3 to 'set_per_cpu' (-129 is out of range for u8 (0 to 255))")
  local s = percpu.alloc("i8")
  expect_eq(expect_error("bad argument", s.this_cpu_write, s, 128), "bad argument #2 to 'this_cpu_write' (128 is out of range for i8 (-128 to 127))")
  s:this_cpu_write(-128)
  expect_eq(expect_error("bad argument", percpu.alloc, "u8", 256), "bad argument #2 to 'alloc' (initial value for CPU 0: 256 is out of range for u8 (0 to 255))")
  expect_eq(expect_error("bad argument", percpu.define, "wide16", "u16", 70000), "bad argument #3 to 'define' (70000 is out of range for u16 (0 to 65535))")
  local tok <close> = v:get_mut(percpu.CpuGuard())
  expect_eq(expect_error("bad argument", tok.set, tok, 256), "bad argument #2 to 'set' (256 is out of range for u8 (0 to 255))")
  expect_eq(expect_error("bad argument", tok.with, tok, function() return 256 end), "bad argument #2 to 'with' (256 is out of range for u8 (0 to 255))")
  expect_eq(tok:get(), 0, "nothing was stored")
  local u = percpu.alloc("u64")
  u:set_per_cpu(0, -1)  -- 2^64 - 1, in two's complement: every integer is a u64
  expect_eq(u:per_cpu(0), -1)
end)

test("lib/percpu_test.c: unsigned 32-bit quantities added to 64-bit counters", function()
  local long = percpu.alloc("i64")
  local ulong = percpu.alloc("u64")
  local ui_one = 1
  local neg_ui_one = -ui_one & 0xffffffff  -- -ui_one in unsigned int arithmetic
  local g <close> = percpu.CpuGuard()
  long:this_cpu_add(-1)                      expect_eq(long:this_cpu_read(), -1)
  long:this_cpu_add(1)                       expect_eq(long:this_cpu_read(), 0)
  ulong:this_cpu_add(1)                      expect_eq(ulong:this_cpu_read(), 1)
  ulong:this_cpu_add(-1)                     expect_eq(ulong:this_cpu_read(), 0)
  ulong:this_cpu_add(-1)                     expect_eq(ulong:this_cpu_read(), -1)  -- ULONG_MAX
  ulong:this_cpu_write(0) ulong:this_cpu_dec() expect_eq(ulong:this_cpu_read(), -1)
  long:this_cpu_write(0)
  long:this_cpu_add(neg_ui_one)              expect_eq(long:this_cpu_read(), 0xffffffff)
  long:this_cpu_add(ui_one)                  expect_eq(long:this_cpu_read(), 0x100000000)
  long:this_cpu_write(0) long:this_cpu_sub(ui_one) expect_eq(long:this_cpu_read(), -1)
  long:this_cpu_write(0) long:this_cpu_add(ui_one) long:this_cpu_add(neg_ui_one)
  expect_eq(long:this_cpu_read(), 0x100000000)
  ulong:this_cpu_write(0) ulong:this_cpu_sub(ui_one) expect_eq(ulong:this_cpu_read(), -1)
  ulong:this_cpu_write(3)
  expect_eq(ulong:this_cpu_sub_return(ui_one), 2)
  expect_eq(ulong:this_cpu_sub_return(ui_one), 1)
end)

test("on_each_cpu increments every CPU's slot", function()
  local v = percpu.alloc("u32")
  for _ = 1, 3 do sched.on_each_cpu(function(cpu) v:this_cpu_inc() end, true) end
  for cpu = 0, 3 do expect_eq(v:per_cpu(cpu), 3, "cpu " .. cpu) end
  expect_eq(v:sum(), 12)
  local seen = {}
  sched.on_each_cpu(function(cpu)
    seen[cpu] = sched.smp_processor_id()   -- preemption is off: allowed
    expect_eq(sched.preempt_count(), 1)
  end, true)
  for cpu = 0, 3 do expect_eq(seen[cpu], cpu) end
  local err = expect_error("sleeping function called from invalid context",
    sched.on_each_cpu, function() kernel.sync.Mutex():lock() end, true)
  expect_eq(err.task, "ipi/0")
end)

test("initial values: one for all, a function of the CPU, or zero", function()
  local a = percpu.alloc("i32", -5)
  local b = percpu.alloc("i32", function(cpu) return cpu * 10 end)
  local c = percpu.alloc("u16")
  local va, vb, vc = a:values(), b:values(), c:values()
  for cpu = 0, 3 do
    expect_eq(va[cpu], -5) expect_eq(vb[cpu], cpu * 10) expect_eq(vc[cpu], 0)
  end
  expect_eq(#b:values(), 3, "indexed by CPU from 0")
  b:set_per_cpu(2, 70000)
  expect_eq(b:per_cpu(2), 70000)
  expect_error("EINVAL", b.per_cpu, b, 4)
  expect_error("EINVAL", b.set_per_cpu, b, -1, 0)
  expect_error("initial value for CPU 0: integer expected", percpu.alloc, "u8", function() return "x" end)
  expect_error("init failed", percpu.alloc, "u8", function() error("init failed") end)
  expect_error("unknown per-CPU type 'f32'", percpu.alloc, "f32")
end)

test("value variables hold any Lua value", function()
  local v = percpu.alloc("value", function(cpu) return {cpu = cpu} end)
  expect_eq(v:per_cpu(3).cpu, 3)
  v:set_per_cpu(1, "one")
  expect_eq(v:values()[1], "one")
  expect_error("EINVAL", v.this_cpu_add, v, 1)
  expect_error("EINVAL", v.sum, v)
  local tok <close> = v:get_mut(percpu.CpuGuard())
  tok:set({n = 1})
  expect_eq(tok:with(function(t) t.n = t.n + 1 return t end).n, 2)
  -- A CheckedPerCpu is interior mutable: its tokens are shared, and coexist.
  local tok2 <close> = v:get_mut(percpu.CpuGuard())
  expect_eq(tok2:cpu(), tok:cpu())
  expect_eq(tok2:get().n, 2)
  tok2:set("shared")
  expect_eq(tok:get(), "shared")
end)

test("static variables: define, get, and names are unique", function()
  local s = percpu.define("hits", "u64", 7)
  expect_eq(s:name(), "hits")
  expect_eq(s:per_cpu(0), 7)
  expect_eq(kernel.state(s), "borrowed")
  percpu.get("hits"):this_cpu_inc()
  expect_eq(s:sum(), 29)
  expect_error("EEXIST", percpu.define, "hits", "u8", 0)
  expect_eq(percpu.get("nothing"), nil)
  expect_error("unknown per-CPU type 'u128'", percpu.define, "wide", "u128", 0)
  kernel.drop(s)  -- a borrowed handle: the variable lives on
  expect_eq(percpu.get("hits"):sum(), 29)
end)

test("a dynamic variable lives while a handle does; clone shares it", function()
  collectgarbage()
  local v = percpu.alloc("u8", 1)
  local w = v:clone()
  w:set_per_cpu(0, 9)
  expect_eq(v:per_cpu(0), 9)
  expect_eq(kernel.debug.live().DynamicPerCpu, 1)
  kernel.drop(v)
  expect_eq(kernel.debug.live().DynamicPerCpu, 1, "the clone keeps it")
  kernel.drop(w)
  expect_eq(kernel.debug.live().DynamicPerCpu, nil)
end)

test("tokens own their guard; a second on the same CPU is aliasing", function()
  local v = percpu.alloc("i64")
  local g = percpu.CpuGuard()
  local tok = v:get_mut(g)
  expect_eq(kernel.state(g), "moved")
  expect_eq(sched.preempt_count(), 1)
  tok:set(41)
  expect_eq(tok:with(function(x) return x + 1 end), 42)
  expect_eq(tok:with(function() end), 42, "returning nothing leaves it")
  expect_eq(tok:cpu(), sched.smp_processor_id())
  local g2 = percpu.CpuGuard()
  expect_eq(sched.preempt_count(), 2)
  local err = expect_error("BUG", v.get_mut, v, g2)
  expect_eq(err.message, ("aliasing: a second PerCpuToken for DynamicPerCpu{i64} on CPU %d while the first is live"):format(tok:cpu()))
  expect_eq(kernel.state(g2), "moved", "the guard was moved into the call: consumed even though it failed")
  expect_eq(sched.preempt_count(), 1, "and dropped: preemption is back to the first token's")
  kernel.drop(tok)
  expect_eq(sched.preempt_count(), 0)
  local tok2 <close> = v:get_mut(percpu.CpuGuard())
  expect_eq(tok2:get(), 42)
end)

test("smp_processor_id is a bug in preemptible code of an unbound task", function()
  local err = expect_error("BUG", sched.smp_processor_id)
  expect_eq(err.message, "using smp_processor_id() in preemptible [00000000] code: main/1")
  do local g <close> = percpu.CpuGuard() expect_eq(sched.smp_processor_id(), g:cpu()) end
  sched.preempt_disable()
  sched.smp_processor_id()
  sched.preempt_enable()
  expect_error("preempt_enable with preempt_count 0", sched.preempt_enable)
  expect_eq(sched.spawn(function() return sched.smp_processor_id() end, {cpu = 3}):join(), 3, "a bound task may")
end)

test("an unguarded read-modify-write loses updates; the guarded one never does", function()
  local lost_any = false
  for round = 1, 5 do
    local unguarded, guarded = percpu.alloc("u64"), percpu.alloc("u64")
    for i = 1, 8 do
      sched.spawn(function()
        for j = 1, 50 do
          local cpu = sched.raw_smp_processor_id()
          local v = unguarded:per_cpu(cpu)         -- may be preempted or migrated here
          unguarded:set_per_cpu(cpu, v + 1)
          local tok <close> = guarded:get_mut(percpu.CpuGuard())
          tok:with(function(x) return x + 1 end)
        end
      end)
    end
    sched.run()
    expect_eq(guarded:sum(), 400, "round " .. round)
    if unguarded:sum() < 400 then lost_any = true end
  end
  assert(lost_any, "in five rounds some update was lost")
end)

test("nothing else runs on a CPU inside a CpuGuard or a spinlock", function()
  local log = {}
  local lock = kernel.sync.SpinLock("section")
  local loglock = kernel.sync.SpinLock("log")  -- another line: another lockdep class
  -- Appending to a shared table is a read-modify-write other CPUs can race
  -- with (the instruction hook switches CPUs anywhere): the log has a lock.
  local function append(entry)
    local g <close> = loglock:lock()
    log[#log + 1] = entry
  end
  for i = 1, 6 do
    sched.spawn(function()
      for round = 1, 10 do
        local g <close> = (i % 2 == 0) and percpu.CpuGuard() or lock:lock()
        local cpu = sched.smp_processor_id()
        for k = 1, 5 do
          append{cpu = cpu, task = i, inside = true}
          kernel.page_align(k)  -- switch points: other CPUs may run
        end
        append{cpu = cpu, task = i, inside = false}
      end
    end)
  end
  sched.run()
  local holder = {}
  for _, e in ipairs(log) do
    if holder[e.cpu] and holder[e.cpu] ~= e.task then
      error(("task %d ran on CPU %d inside task %d's section"):format(e.task, e.cpu, holder[e.cpu]))
    end
    holder[e.cpu] = e.inside and e.task or nil
  end
end)
