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

/// An options table read in one pass (`{mode = "low", alignment = 64}`):
/// its keys checked against the names a binding knows (a misspelt option
/// is an argument error, not silently ignored), and each known field's
/// value copied to the stack, so that reading one hashes no string.
/// Bindings with options tables on hot paths use this.
struct Options {
    let lua: Lua
    /// The argument the table is, for messages.
    let arg: Int32
    let names: [StaticString]
    /// The stack index of the first name's value; nil (absent) values too.
    let base: Int32

    /// Whose value is at `base + i`: a linear search of a few names, by
    /// address (a binding names its fields with the same literals), else by bytes.
    @inline(__always)
    func index(_ name: StaticString) -> Int32 {
        for (i, known) in names.enumerated() where known.utf8Start == name.utf8Start {
            return base + Int32(i)
        }
        for (i, known) in names.enumerated() where known.utf8CodeUnitCount == name.utf8CodeUnitCount
            && memcmp(known.utf8Start, name.utf8Start, name.utf8CodeUnitCount) == 0 {
            return base + Int32(i)
        }
        return 0  // a name the binding did not list: an empty slot reads as none
    }

    func isAbsent(_ name: StaticString) -> Bool { lua.isNoneOrNil(index(name)) }

    func error(_ name: StaticString, _ expected: String, at idx: Int32) -> LuaFailure {
        .argument(arg, "field '\(name)': \(expected) expected, got \(lua.typeName(idx))")
    }

    func integer(_ name: StaticString, default value: Int?) throws(LuaFailure) -> Int? {
        let idx = index(name)
        if lua.isNoneOrNil(idx) { return value }
        var isnum: Int32 = 0
        let v = lua_tointegerx(lua.L, idx, &isnum)
        guard isnum != 0 else { throw error(name, "integer", at: idx) }
        return Int(v)
    }

    /// An unsigned 64-bit field (two's complement in Lua).
    func unsigned(_ name: StaticString, default value: UInt64) throws(LuaFailure) -> UInt64 {
        try integer(name, default: nil).map { UInt64(bitPattern: Int64($0)) } ?? value
    }

    func boolean(_ name: StaticString, default value: Bool) throws(LuaFailure) -> Bool {
        let idx = index(name)
        if lua.isNoneOrNil(idx) { return value }
        guard lua.type(idx) == LUA_TBOOLEAN else { throw error(name, "boolean", at: idx) }
        return lua.boolean(idx)
    }

    func string(_ name: StaticString) throws(LuaFailure) -> String? {
        let idx = index(name)
        if lua.isNoneOrNil(idx) { return nil }
        guard let text = lua.string(at: idx) else { throw error(name, "string", at: idx) }
        return text
    }

    /// Which of `choices` the string field is (its position), compared by
    /// bytes; `value` when absent.
    func choice(_ name: StaticString, _ choices: [StaticString], default value: Int) throws(LuaFailure) -> Int {
        let idx = index(name)
        if lua.isNoneOrNil(idx) { return value }
        guard lua.type(idx) == LUA_TSTRING else { throw error(name, "string", at: idx) }
        var length = 0
        // SAFETY: a string on the stack is valid for `length` bytes while it stays there.
        if let p = lua_tolstring(lua.L, idx, &length),
           let i = choices.firstIndex(where: { $0.utf8CodeUnitCount == length && memcmp($0.utf8Start, p, length) == 0 }) {
            return i
        }
        let list = choices.map { "\"\($0)\"" }.joined(separator: ", ")
        throw .argument(arg, "field '\(name)': one of \(list) expected, got \"\(lua.string(at: idx) ?? "")\"")
    }
}

extension Lua {
    /// Reads the options table at `table` (argument `arg`) in one pass: see
    /// `Options`. The values stay on the stack above what was there.
    func options(_ table: Int32, arg: Int32, _ known: [StaticString]) throws(LuaFailure) -> Options {
        let t = absIndex(table)
        try checkTable(t)
        guard lua_checkstack(L, Int32(known.count) + 3) != 0 else {
            throw .argument(arg, "too many options for the stack")
        }
        let base = top + 1
        for _ in known { pushNil() }
        pushNil()
        while lua_next(L, t) != 0 {
            // Only a string key is read as one: lua_tolstring would turn a
            // number key into a string and confuse lua_next.
            var length = 0
            if lua_type(L, -2) == LUA_TSTRING, let key = lua_tolstring(L, -2, &length),
               let i = known.firstIndex(where: { $0.utf8CodeUnitCount == length && memcmp($0.utf8Start, key, length) == 0 }) {
                lua_copy(L, -1, base + Int32(i))
                pop()
                continue
            }
            pop()
            let name = describe(-1)
            pop()
            let expected = known.map { "\($0)" }.sorted().joined(separator: ", ")
            throw .argument(arg, "unknown field '\(name)' (expected one of \(expected))")
        }
        return Options(lua: self, arg: arg, names: known, base: base)
    }
}
