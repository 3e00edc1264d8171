import CLua
import LuaShim
import MMCore

/// `kernel.PAGE_*`, `kernel.page_align`, `kernel.gfp`, `kernel.mem` and
/// `kernel.page` (MMCore/Memory).
extension Runtime {
    func openMemory(_ lua: Lua) {
        lua.setConstants([("PAGE_SIZE", PAGE_SIZE), ("PAGE_SHIFT", PAGE_SHIFT), ("PAGE_MASK", PAGE_MASK)])
        lua.setFunctions([("page_align", MemoryBindings.pageAlign)])

        lua.newTable(hash: Int32(Gfp.named.count))
        lua.setConstants(Gfp.named.map { ($0.0, Int($0.1.rawValue)) })
        lua.setField(-2, "gfp")

        lua.newTable()
        lua.setConstants([("MAX_ORDER", 10)])
        lua.setField(-2, "mem")

        lua.newTable()
        lua.newTable()
        lua.setFunctions([("alloc_page", MemoryBindings.allocPage)])
        lua.setField(-2, "Page")
        lua.setField(-2, "page")
    }
}

extension Lua {
    /// The page behind the live `Page` handle at `arg`.
    @inline(__always)
    func page(_ arg: Int32) throws -> Page {
        try object(arg, .page, as: Page.self)
    }

    /// `gfp` flags at `arg`, GFP_KERNEL when absent. Bits the kernel does
    /// not define are EINVAL.
    func gfp(_ arg: Int32) throws -> Gfp {
        let value = try integer(arg, default: Int(Gfp.kernel.rawValue))
        guard value >= 0, value < 1 << 26 else {
            throw KernelError(.EINVAL, "invalid gfp flags 0x\(String(UInt(bitPattern: value), radix: 16))")
        }
        return Gfp(rawValue: UInt32(value))
    }

    /// A size: bytes as an integer, or a string with a K/M/G suffix.
    func size(_ idx: Int32, arg: Int32, field: String) throws(LuaFailure) -> UInt64 {
        if lua_isinteger(L, idx) != 0 {
            let value = lua_tointegerx(L, idx, nil)
            if value >= 0 { return UInt64(value) }
        } else if let text = string(at: idx), let bytes = MachineConfig.parseSize(text) {
            return bytes
        }
        throw .argument(arg, "field '\(field)': size expected (bytes, or a string such as \"256M\"), got \(describe(idx))")
    }
}

/// The pointer `with_pointer_into_page` passes to its callback: valid for
/// `length` bytes, only during the call.
final class PagePointer: CustomStringConvertible {
    let page: Page
    let pointer: UnsafeMutableRawPointer
    let offset: Int
    let length: Int

    init(page: Page, pointer: UnsafeMutableRawPointer, offset: Int, length: Int) {
        self.page = page
        self.pointer = pointer
        self.offset = offset
        self.length = length
    }

    var description: String { "Pointer{pfn=\(page.pfn), offset=\(offset), len=\(length)}" }

    /// The pointer plus `off`, valid for `len` bytes. Going past `length`
    /// is undefined behaviour in the kernel: a bug here.
    func bounded(_ off: Int, _ len: Int, _ what: String) throws -> UnsafeMutableRawPointer {
        let uoff = UInt(bitPattern: off), ulen = UInt(bitPattern: len), size = UInt(length)
        guard uoff <= size, ulen <= size, uoff + ulen <= size else {
            throw KernelError.bug("out of bounds: \(what) of \(len) bytes at offset \(off) through \(self), valid for \(length) bytes")
        }
        // SAFETY: `off + len <= length`, and the pointer is valid for `length` bytes while the handle lives.
        return pointer + off
    }
}

enum MemoryBindings {
    static let pageAlign: Binding = { L in
        bind(L) { lua in
            let addr = UInt64(bitPattern: Int64(try lua.integer(1)))
            if let aligned = MMCore.page_align(addr) { lua.push(aligned) } else { lua.pushNil() }
            return 1
        }
    }

    /// `Page.alloc_page(gfp)`.
    static let allocPage: Binding = { L in
        bind(L) { lua in
            let gfp = try lua.gfp(1)
            let runtime = lua.runtime
            let page = try Page.allocPage(runtime.machine(), gfp, site: runtime.currentSite(lua))
            lua.pushHandle(page, .page)
            return 1
        }
    }
}

extension HandleClass {
    static let page = HandleClass(.page, methods: [
        ("size", { L in bind(L) { lua in lua.push(try lua.page(1).size); return 1 } }),
        ("order", { L in bind(L) { lua in lua.push(try lua.page(1).order); return 1 } }),
        ("pfn", { L in bind(L) { lua in lua.push(try lua.page(1).pfn.rawValue); return 1 } }),
        ("phys", { L in bind(L) { lua in lua.push(try lua.page(1).phys.rawValue); return 1 } }),
        ("nid", { L in bind(L) { lua in lua.push(try lua.page(1).nid); return 1 } }),
        ("read_raw", { L in
            bind(L) { lua in
                let page = try lua.page(1)
                let off = try lua.integer(2), len = try lua.integer(3)
                lua.push(bytes: try page.pointerIntoPage(off, len), count: len)
                return 1
            }
        }),
        ("write_raw", { L in
            bind(L) { lua in
                let page = try lua.page(1)
                let data = try lua.bytes(2)
                try page.writeRaw(data, try lua.integer(3))
                return 0
            }
        }),
        ("fill_zero_raw", { L in
            bind(L) { lua in
                try lua.page(1).fillZeroRaw(try lua.integer(2), try lua.integer(3))
                return 0
            }
        }),
        ("read_u8", { L in bind(L) { lua in lua.push(Int(try lua.page(1).read(UInt8.self, at: lua.integer(2)))); return 1 } }),
        ("read_u16", { L in bind(L) { lua in lua.push(Int(try lua.page(1).read(UInt16.self, at: lua.integer(2)))); return 1 } }),
        ("read_u32", { L in bind(L) { lua in lua.push(Int(try lua.page(1).read(UInt32.self, at: lua.integer(2)))); return 1 } }),
        ("read_u64", { L in bind(L) { lua in lua.push(try lua.page(1).read(UInt64.self, at: lua.integer(2))); return 1 } }),
        ("write_u8", { L in bind(L) { lua in try lua.page(1).write(UInt8(truncatingIfNeeded: lua.integer(3)), at: lua.integer(2)); return 0 } }),
        ("write_u16", { L in bind(L) { lua in try lua.page(1).write(UInt16(truncatingIfNeeded: lua.integer(3)), at: lua.integer(2)); return 0 } }),
        ("write_u32", { L in bind(L) { lua in try lua.page(1).write(UInt32(truncatingIfNeeded: lua.integer(3)), at: lua.integer(2)); return 0 } }),
        ("write_u64", { L in bind(L) { lua in try lua.page(1).write(UInt64(truncatingIfNeeded: lua.integer(3)), at: lua.integer(2)); return 0 } }),
        ("with_pointer_into_page", withPointerIntoPage),
    ], drop: { lua, object, site in
        // SAFETY: `.page` handles hold a Page (allocPage).
        try unsafeDowncast(object, to: Page.self).free(site: site)
    })

    /// `p:with_pointer_into_page(off, len, fn)`: EINVAL without calling
    /// `fn`, or `fn(ptr)`'s results; `ptr` expires when `fn` returns or raises.
    private static let withPointerIntoPage: Binding = { L in
        bind(L) { lua in
            let page = try lua.page(1)
            let off = try lua.integer(2), len = try lua.integer(3)
            try lua.checkFunction(4)
            let pointer = try page.pointerIntoPage(off, len)
            lua_settop(L, 4)
            lua.pushHandle(PagePointer(page: page, pointer: pointer, offset: off, length: len),
                           .pagePointer, state: .borrowed, lender: 1)  // 5
            mmlab_pushfinisher(L, expirePointer)
            lua_pushvalue(L, 4)
            lua_pushvalue(L, 5)
            return MMLAB_PCALL_BASE - 1
        }
    }

    private static let expirePointer: Finisher = { L, status, first in
        let lua = Lua(L)
        if let h = mmlab_tohandle(L, 5), Handles.state(h) == .borrowed {
            lua.end(5, h, as: .dropped, flags: HandleFlag.expired)
        }
        return status == LUA_OK ? lua.top - first + 1 : MMLAB_RAISE
    }

    static let pagePointer = HandleClass(.pagePointer, methods: [
        ("read", { L in
            bind(L) { lua in
                let ptr = try lua.object(1, .pagePointer, as: PagePointer.self)
                let len = try lua.integer(2), off = try lua.integer(3, default: 0)
                lua.push(bytes: try ptr.bounded(off, len, "read"), count: len)
                return 1
            }
        }),
        ("write", { L in
            bind(L) { lua in
                let ptr = try lua.object(1, .pagePointer, as: PagePointer.self)
                let data = try lua.bytes(2)
                let off = try lua.integer(3, default: 0)
                let p = try ptr.bounded(off, data.count, "write")
                // SAFETY: `p` is valid for `data.count` bytes (bounded).
                UnsafeMutableRawBufferPointer(start: p, count: data.count).copyMemory(from: data)
                return 0
            }
        }),
        ("len", { L in bind(L) { lua in lua.push(try lua.object(1, .pagePointer, as: PagePointer.self).length); return 1 } }),
    ])
}
