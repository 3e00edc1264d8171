-- busted specs for the simulated machine: run with
--   mmlab /usr/bin/busted Tests/busted          (Debian's lua-busted)
-- kernel.reboot in before_each gives every spec a machine of its own.
describe("a page", function()
  before_each(function() kernel.reboot{} end)

  it("reads back what was written", function()
    local p <close> = kernel.page.Page.alloc_page()
    p:write_u8(0, 7)
    assert.are.equal(7, p:read_u8(0))
  end)

  it("refuses a read past its end with EINVAL", function()
    local p <close> = kernel.page.Page.alloc_page()
    local ok, err = pcall(p.read_u64, p, 4089)
    assert.is_false(ok)
    assert.are.equal("EINVAL", err.errno)
  end)

  it("is free again on a fresh machine", function()
    assert.are.equal(kernel.mem.stats().total_pages, kernel.mem.stats().free_pages)
  end)
end)

describe("a mutex", function()
  before_each(function() kernel.reboot{cpus = 2} end)

  it("serializes the tasks that take it", function()
    local lock, inside, most = kernel.sync.Mutex("m"), 0, 0
    for i = 1, 3 do
      kernel.sched.spawn(function()
        local g <close> = lock:lock()
        inside = inside + 1
        most = math.max(most, inside)
        kernel.sched.yield()
        inside = inside - 1
      end, {name = "t" .. i})
    end
    kernel.sched.run()
    assert.are.equal(1, most)
  end)
end)
