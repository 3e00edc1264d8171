import CLua
import LuaShim
import MMCore

/// A binding: called by the C trampoline with the Lua state; returns a
/// result count or a sentinel (`MMLAB_RAISE`, ...). It never raises.
typealias Binding = @convention(c) (OpaquePointer?) -> Int32

/// A view of a Lua state for Swift code: stack helpers that never raise.
///
/// Only functions that cannot longjmp are called here: no `lua_error`,
/// no `luaL_check*`, no unprotected calls. Allocation can still run
/// finalizers, which are bindings themselves and never raise through us;
/// under `--max-memory` it never fails while Swift runs (mmlab_alloc
/// defers the error to the next hook or binding return).
struct Lua {
    let L: OpaquePointer

    @inline(__always) init(_ L: OpaquePointer?) {
        // SAFETY: Lua never calls a C function with a null state.
        self.L = L.unsafelyUnwrapped
    }

    /// The runtime that owns this state (every coroutine shares it).
    var runtime: Runtime {
        // SAFETY: the extra space holds the Runtime, which outlives its state (Runtime.close).
        Unmanaged<Runtime>.fromOpaque(mmlab_getextra(L).unsafelyUnwrapped).takeUnretainedValue()
    }

    /// Runs `body` with the runtime and no retain of it: the hot paths
    /// (creating and dropping handles) use this, as each atomic retain and
    /// release costs about what the rest of a binding call does.
    @inline(__always)
    func withRuntime<T, E: Error>(_ body: (Runtime) throws(E) -> T) throws(E) -> T {
        // SAFETY: the extra space holds the Runtime, which outlives its state (Runtime.close).
        let unmanaged = Unmanaged<Runtime>.fromOpaque(mmlab_getextra(L).unsafelyUnwrapped)
        var result: Result<T, E>?
        unmanaged._withUnsafeGuaranteedRef { runtime in
            do throws(E) { result = .success(try body(runtime)) } catch { result = .failure(error) }
        }
        return try result.unsafelyUnwrapped.get()
    }

    /// Where the running script is, as a `Site` (`exp.lua:12`): every
    /// handle records where it was created and dropped, so a call site
    /// already named is looked up in C (sites.c), without the runtime.
    @inline(__always)
    func site() -> Site {
        var pc: UnsafeRawPointer?, level: Int32 = 0
        let id = mmlab_cachedsite(L, &pc, &level)
        if id != 0 { return Site(id: id) }
        return withRuntime { $0.nameSite(self, pc: pc, level: level) }
    }

    var top: Int32 { lua_gettop(L) }
    func pop(_ n: Int32 = 1) { lua_settop(L, -n - 1) }
    func type(_ idx: Int32) -> Int32 { lua_type(L, idx) }
    func isNoneOrNil(_ idx: Int32) -> Bool { lua_type(L, idx) <= LUA_TNIL }
    func absIndex(_ idx: Int32) -> Int32 { lua_absindex(L, idx) }

    func push(_ value: Int) { lua_pushinteger(L, lua_Integer(value)) }
    func push(_ value: Int64) { lua_pushinteger(L, value) }
    func push(_ value: UInt64) { lua_pushinteger(L, lua_Integer(bitPattern: value)) }
    func push(_ value: Double) { lua_pushnumber(L, value) }
    func push(_ value: Bool) { lua_pushboolean(L, value ? 1 : 0) }
    func push(_ value: String) {
        var value = value
        value.withUTF8 { _ = lua_pushlstring(L, UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count) }
    }
    func push(bytes: UnsafeRawPointer, count: Int) {
        _ = lua_pushlstring(L, bytes.assumingMemoryBound(to: CChar.self), count)
    }
    /// Pushes the bytes as a string (an empty buffer may have no address).
    func push(bytes: UnsafeRawBufferPointer) {
        _ = lua_pushlstring(L, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
    }
    func pushNil() { lua_pushnil(L) }
    func push(_ value: String?) {
        if let value { push(value) } else { pushNil() }
    }
    /// Pushes a binding as a Lua function named `name` (for messages); the
    /// `upvalues` values on top become its upvalues, read with `upvalue(i)`.
    func pushBinding(_ fn: Binding, name: String, upvalues: Int32 = 0) { mmlab_pushbinding(L, fn, name, upvalues) }

    /// The pseudo-index of a binding's own upvalue `i` (from 1).
    static func upvalue(_ i: Int32) -> Int32 { mmlab_upvalueindex(MMLAB_FIRST_UPVALUE - 1 + i) }

    /// Creates a table and leaves it on top.
    func newTable(array: Int32 = 0, hash: Int32 = 0) { lua_createtable(L, array, hash) }

    /// `t[name] = value on top` for the table at `table`, raw (no metamethods).
    func setField(_ table: Int32, _ name: String) {
        let t = absIndex(table)
        push(name)
        lua_rotate(L, -2, 1)
        lua_rawset(L, t)
    }

    /// Pushes `t[name]` for the table at `table`, raw; returns its type.
    @discardableResult
    func getField(_ table: Int32, _ name: String) -> Int32 {
        let t = absIndex(table)
        push(name)
        return lua_rawget(L, t)
    }

    /// The string at `idx` (strings only: numbers are not converted here).
    func string(at idx: Int32) -> String? {
        guard lua_type(L, idx) == LUA_TSTRING else { return nil }
        var len = 0
        guard let p = lua_tolstring(L, idx, &len) else { return nil }
        // SAFETY: Lua strings are valid for `len` bytes while on the stack.
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }

    /// A value's type name as error messages show it: the `__name` of its
    /// metatable if it has one (`Page`), else Lua's (`luaL_typeerror`).
    func typeName(_ idx: Int32) -> String {
        let idx = absIndex(idx)
        if lua_getmetatable(L, idx) != 0 {
            defer { pop() }
            if getField(-1, "__name") == LUA_TSTRING, let name = string(at: -1) {
                pop()
                return name
            }
            pop()
        }
        if lua_type(L, idx) == LUA_TLIGHTUSERDATA { return "light userdata" }
        return String(cString: lua_typename(L, lua_type(L, idx)))
    }

    /// A short rendering of any value for messages, without metamethods.
    func describe(_ idx: Int32) -> String {
        switch lua_type(L, idx) {
        case LUA_TNIL, LUA_TNONE: return "nil"
        case LUA_TBOOLEAN: return lua_toboolean(L, idx) != 0 ? "true" : "false"
        case LUA_TNUMBER:
            var isInt: Int32 = 0
            let i = lua_tointegerx(L, idx, &isInt)
            return isInt != 0 && lua_isinteger(L, idx) != 0 ? String(i) : String(lua_tonumberx(L, idx, nil))
        case LUA_TSTRING: return string(at: idx) ?? ""
        default:
            if let h = mmlab_tohandle(L, idx) { return describe(h) }
            return typeName(idx)
        }
    }
}
