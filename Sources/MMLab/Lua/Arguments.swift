#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim

/// Argument checks with the messages of `luaL_check*`, thrown rather than
/// raised: `bad argument #2 to 'write_raw' (string expected, got nil)`.
extension Lua {
    func typeError(_ arg: Int32, _ expected: String) -> LuaFailure {
        .argument(arg, "\(expected) expected, got \(lua_type(L, arg) == LUA_TNONE ? "no value" : typeName(arg))")
    }

    /// `luaL_checkinteger`: an integer, a float with an exact integer
    /// value, or a string that converts to one.
    @inline(__always)
    func integer(_ arg: Int32) throws(LuaFailure) -> Int {
        var isnum: Int32 = 0
        let value = lua_tointegerx(L, arg, &isnum)
        guard isnum != 0 else { throw integerError(arg) }
        return Int(value)
    }

    func integerError(_ arg: Int32) -> LuaFailure {
        if lua_type(L, arg) == LUA_TNUMBER || lua_isnumber(L, arg) != 0 {
            return .argument(arg, "number has no integer representation")
        }
        return typeError(arg, "number")
    }

    /// `luaL_optinteger`.
    func integer(_ arg: Int32, default value: Int) throws(LuaFailure) -> Int {
        isNoneOrNil(arg) ? value : try integer(arg)
    }

    /// `luaL_checknumber`.
    func number(_ arg: Int32) throws(LuaFailure) -> Double {
        var isnum: Int32 = 0
        let value = lua_tonumberx(L, arg, &isnum)
        guard isnum != 0 else { throw typeError(arg, "number") }
        return value
    }

    /// `luaL_checklstring`: the bytes of a string (numbers convert), valid
    /// while the value stays on the stack.
    func bytes(_ arg: Int32) throws(LuaFailure) -> UnsafeRawBufferPointer {
        let t = lua_type(L, arg)
        guard t == LUA_TSTRING || t == LUA_TNUMBER else { throw typeError(arg, "string") }
        var len = 0
        // SAFETY: a string or number converts; the result lives on the stack.
        let p = lua_tolstring(L, arg, &len)
        return UnsafeRawBufferPointer(start: p, count: len)
    }

    /// `luaL_checkstring`, as a Swift string.
    func string(_ arg: Int32) throws(LuaFailure) -> String {
        String(decoding: try bytes(arg), as: UTF8.self)
    }

    /// `luaL_optstring`.
    func string(_ arg: Int32, default value: String?) throws(LuaFailure) -> String? {
        isNoneOrNil(arg) ? value : try string(arg)
    }

    /// Any value's truth, as Lua sees it (absent is false).
    func boolean(_ arg: Int32) -> Bool { lua_toboolean(L, arg) != 0 }

    /// A table, as `luaL_checktype` with LUA_TTABLE.
    func checkTable(_ arg: Int32) throws(LuaFailure) {
        guard lua_type(L, arg) == LUA_TTABLE else { throw typeError(arg, "table") }
    }

    /// A function, as `luaL_checktype` with LUA_TFUNCTION.
    func checkFunction(_ arg: Int32) throws(LuaFailure) {
        guard lua_type(L, arg) == LUA_TFUNCTION else { throw typeError(arg, "function") }
    }

    /// `luaL_checkany`.
    func checkAny(_ arg: Int32) throws(LuaFailure) {
        guard lua_type(L, arg) != LUA_TNONE else { throw .argument(arg, "value expected") }
    }

    func fieldError(_ arg: Int32, _ name: String, _ expected: String) -> LuaFailure {
        .argument(arg, "field '\(name)': \(expected) expected, got \(typeName(-1))")
    }

    /// The integer field `name` of the options table at `table` (argument
    /// `arg`), or `value` when absent. Leaves the stack as it was.
    func integerField(_ table: Int32, _ name: String, arg: Int32, default value: Int?) throws(LuaFailure) -> Int? {
        getField(table, name)
        defer { pop() }
        if isNoneOrNil(-1) { return value }
        var isnum: Int32 = 0
        let v = lua_tointegerx(L, -1, &isnum)
        guard isnum != 0 else { throw fieldError(arg, name, "integer") }
        return Int(v)
    }

    /// The string field `name` of the options table at `table`, or nil.
    func stringField(_ table: Int32, _ name: String, arg: Int32) throws(LuaFailure) -> String? {
        getField(table, name)
        defer { pop() }
        if isNoneOrNil(-1) { return nil }
        guard let text = string(at: -1) else { throw fieldError(arg, name, "string") }
        return text
    }

    /// The boolean field `name` of the options table at `table`.
    func booleanField(_ table: Int32, _ name: String, arg: Int32, default value: Bool) throws(LuaFailure) -> Bool {
        getField(table, name)
        defer { pop() }
        if isNoneOrNil(-1) { return value }
        guard type(-1) == LUA_TBOOLEAN else { throw fieldError(arg, name, "boolean") }
        return boolean(-1)
    }

    /// Fails when the options table at `table` has a key not in `known`:
    /// a misspelt option should not be silently ignored.
    /// Compares bytes, not Swift strings: options tables are passed on
    /// hot paths (`new_buf{...}`), and hashing a Set per call cost more
    /// than the rest of the binding.
    func checkFields(_ table: Int32, arg: Int32, known: [StaticString]) throws(LuaFailure) {
        let t = absIndex(table)
        pushNil()
        while lua_next(L, t) != 0 {
            pop()
            // Only a string key is read as one: lua_tolstring would turn a
            // number key into a string and confuse lua_next.
            if lua_type(L, -1) == LUA_TSTRING {
                var length = 0
                if let key = lua_tolstring(L, -1, &length),
                   known.contains(where: { $0.utf8CodeUnitCount == length && memcmp($0.utf8Start, key, length) == 0 }) {
                    continue
                }
            }
            let name = describe(-1)
            pop()
            let expected = known.map { "\($0)" }.sorted().joined(separator: ", ")
            throw .argument(arg, "unknown field '\(name)' (expected one of \(expected))")
        }
    }
}
