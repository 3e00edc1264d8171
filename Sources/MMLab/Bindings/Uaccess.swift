#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim
import MMCore

/// `kernel.uaccess`: user slices, their readers and writers (MMCore/Mm/Uaccess).
extension Runtime {
    func openUaccess(_ lua: Lua) {
        lua.newTable()
        lua.setFunctions([("UserSlice", UaccessBindings.userSlice)])
        lua.setField(-2, "uaccess")
    }
}

enum UaccessBindings {
    /// The most one `read_raw` copies: its bytes become a Lua string.
    static let maxCopy = 1 << 28

    /// `UserSlice(mm, addr, len)`: `len` bytes at `addr` of `mm`'s address
    /// space. Nothing is checked until a copy.
    static let userSlice: Binding = { L in
        bind(L) { lua in
            let mm = try lua.mmReference(1, users: true).mm
            let addr = try lua.address(2), len = try lua.integer(3)
            guard len >= 0 else { throw KernelError(.EINVAL, "UserSlice of length \(len)") }
            lua.pushHandle(UserSlice(mm: mm, address: addr, length: len), .userSlice, keepAlive: 1)
            return 1
        }
    }

}

extension HandleClass {
    static let userSlice = HandleClass(.userSlice, methods: [
        ("reader", { L in UaccessMethods.split(L, reader: true, writer: false) }),
        ("writer", { L in UaccessMethods.split(L, reader: false, writer: true) }),
        ("reader_writer", { L in UaccessMethods.split(L, reader: true, writer: true) }),
        ("len", { L in bind(L) { lua in lua.push(try lua.object(1, .userSlice, as: UserSlice.self).length); return 1 } }),
    ])

    private static let cursorMethods: [(String, Binding)] = [
        ("len", { L in bind(L) { lua in lua.push(try UaccessMethods.cursor(lua).length); return 1 } }),
        ("is_empty", { L in bind(L) { lua in lua.push(try UaccessMethods.cursor(lua).isEmpty); return 1 } }),
    ]

    static let userSliceReader = HandleClass(.userSliceReader, methods: cursorMethods + [
        ("read_raw", UaccessMethods.readRaw),
        ("read_slice", UaccessMethods.readRaw),  // Rust's name: exactly n bytes, as read_raw
        ("read_all", UaccessMethods.readAll),
        ("clone_reader", { L in
            bind(L) { lua in
                let reader = try lua.object(1, .userSliceReader, as: UserSliceReader.self)
                lua_settop(L, 1)
                lua_getiuservalue(L, 1, 1)  // the mm handle it keeps, kept by the clone too
                lua.pushHandle(reader.cloneReader(), .userSliceReader, keepAlive: 2)
                return 1
            }
        }),
        ("skip", { L in
            bind(L) { lua in
                try lua.object(1, .userSliceReader, as: UserSliceReader.self).skip(try lua.integer(2))
                return 0
            }
        }),
    ])

    static let userSliceWriter = HandleClass(.userSliceWriter, methods: cursorMethods + [
        ("write_raw", UaccessMethods.writeRaw),
        ("write_slice", UaccessMethods.writeRaw),  // Rust's name for the same copy
    ])
}

enum UaccessMethods {
    static func cursor(_ lua: Lua) throws -> UserSliceCursor {
        let (h, _) = try lua.handle(1, oneOf: [.userSliceReader, .userSliceWriter], expected: "UserSliceReader")
        return lua.object(h, as: UserSliceCursor.self)
    }

    /// `s:reader()`, `s:writer()`, `s:reader_writer()`: `s` is moved.
    static func split(_ L: OpaquePointer?, reader: Bool, writer: Bool) -> Int32 {
        bind(L) { lua in
            let h = try lua.handle(1, .userSlice)
            let slice = lua.object(h, as: UserSlice.self)
            lua_settop(L, 1)
            lua_getiuservalue(L, 1, 1)  // 2: the mm handle it keeps
            if reader { lua.pushHandle(slice.reader(), .userSliceReader, keepAlive: 2) }
            if writer { lua.pushHandle(slice.writer(), .userSliceWriter, keepAlive: 2) }
            lua.end(1, h, as: .moved)
            return reader && writer ? 2 : 1
        }
    }

    /// `r:read_all()` → every byte left; the reader is moved (Rust's
    /// `read_all(self, ...)` consumes it).
    static let readAll: Binding = { L in
        bind(L) { lua in
            let h = try lua.handle(1, .userSliceReader)
            let reader = lua.object(h, as: UserSliceReader.self)
            return try read(lua, reader, reader.length, "read_all") { lua.end(1, h, as: .moved) }
        }
    }

    /// `r:read_raw(n)` (and Rust's `read_slice`) → `n` bytes; EFAULT (the
    /// reader does not move) when fewer are left or one is not readable.
    static let readRaw: Binding = { L in
        bind(L) { lua in
            try read(lua, try lua.object(1, .userSliceReader, as: UserSliceReader.self), try lua.integer(2), "read_raw")
        }
    }

    /// Reads `n` bytes as a string, waiting for a fault if it must; `done` runs once they are read.
    private static func read(_ lua: Lua, _ reader: UserSliceReader, _ n: Int, _ what: String,
                             done: (() -> Void)? = nil) throws -> Int32 {
        guard n >= 0, n <= reader.length else {
            throw KernelError(.EFAULT, "\(what) of \(n) bytes, \(reader.length) left in the user slice")
        }
        guard n <= UaccessBindings.maxCopy else {
            throw KernelError(.ENOMEM, "\(what) of \(n) bytes: one call copies at most \(UaccessBindings.maxCopy)")
        }
        let site = lua.site(), canBlock = lua.runtime.canBlock(lua)
        return try lua.blocking { lua in
            // Each run of the step has its own buffer: none outlives it.
            guard let buffer = malloc(max(n, 1)) else { throw KernelError(.ENOMEM, "\(what) of \(n) bytes") }
            defer { free(buffer) }
            guard try reader.read(into: buffer, n, site: site, mayWait: canBlock) else {
                try lua.checkCanWait(true, what)
                return nil
            }
            lua.push(bytes: buffer, count: n)
            done?()
            return 1
        }
    }

    /// `w:write_raw(data)`: EFAULT (the writer does not move) when the
    /// data does not fit or a byte is not writable.
    static let writeRaw: Binding = { L in
        bind(L) { lua in
            let writer = try lua.object(1, .userSliceWriter, as: UserSliceWriter.self)
            let site = lua.site(), canBlock = lua.runtime.canBlock(lua)
            return try lua.blocking { lua in
                // The data stays on the stack (argument 2) while the task waits.
                guard try writer.write(try lua.bytes(2), site: site, mayWait: canBlock) else {
                    try lua.checkCanWait(true, "write_raw")
                    return nil
                }
                return 0
            }
        }
    }
}
