-- kernel.Error values.
test("fields and tostring", function()
  local p <close> = kernel.page.Page.alloc_page()
  local ok, err = pcall(p.read_raw, p, 4095, 2) local line = debug.getinfo(1, "l").currentline
  assert(not ok)
  expect_eq(getmetatable(err), kernel.Error)
  expect_eq(err.errno, "EINVAL")
  expect_eq(err.code, 22)
  expect_eq(err.bug, false)
  expect_eq(err.message, "offset 4095 + length 2 exceeds the page (4096)")
  expect_eq(tostring(err), "EINVAL: offset 4095 + length 2 exceeds the page (4096)")
  expect_eq(err.where, ("Tests/lua/errors.lua:%d:"):format(line))
end)

test("kernel.errno maps names to numbers", function()
  local want = {EPERM = 1, ENOENT = 2, ESRCH = 3, EAGAIN = 11, ENOMEM = 12, EFAULT = 14,
                EBUSY = 16, EEXIST = 17, EINVAL = 22, ENOSPC = 28, EDEADLK = 35}
  for name, code in pairs(want) do expect_eq(kernel.errno[name], code, name) end
end)

test("argument errors are Lua's standard messages", function()
  local p <close> = kernel.page.Page.alloc_page()
  expect_error("bad argument #2 to 'write_raw' (string expected, got nil)", p.write_raw, p, nil, 0)
  expect_error("bad argument #1 to 'write_raw' (string expected, got nil)", function() p:write_raw(nil, 0) end)
  expect_error("bad argument #1 to 'read_u8' (number expected, got no value)", function() p:read_u8() end)
  expect_error("bad argument #1 to 'read_u8' (number has no integer representation)", function() p:read_u8(0.5) end)
  expect_error("bad argument #1 to 'read_u8' (number has no integer representation)", function() p:read_u8(0/0) end)
  expect_error("bad argument #1 to 'read_u8' (number has no integer representation)", function() p:read_u8(2^63) end)
  expect_error("bad argument #1 to 'read_u8' (number expected, got table)", function() p:read_u8({}) end)
  expect_eq(p:read_u8("7") ~= nil, true, "numeric strings convert")
end)

test("a binding error carries the caller's line", function()
  local ok, err = pcall(function() kernel.page.Page.alloc_page(-1) end)
  assert(not ok)
  expect_eq(err.errno, "EINVAL")
  assert(err.where:match("^Tests/lua/errors.lua:%d+:$"), err.where)
end)
