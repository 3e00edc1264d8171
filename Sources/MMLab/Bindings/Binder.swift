#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim
import MMCore

/// `kernel.binder`: Rust Binder's range allocator, binder_alloc, and the
/// shrinker's LRU (MMCore/Binder).
extension Runtime {
    func openBinder(_ lua: Lua) {
        lua.newTable()
        lua.setFunctions([
            ("RangeAllocator", BinderBindings.rangeAllocator),
            ("Alloc", BinderBindings.alloc),
            ("lru_count", { L in bind(L) { lua in lua.push(try lua.machine().binderLru.count); return 1 } }),
            ("shrink", BinderBindings.shrink),
            ("stats", BinderBindings.stats),
        ])
        lua.setField(-2, "binder")
    }
}

/// A RangeAllocator whose data are Lua values (registry references).
typealias LuaRangeAllocator = RangeAllocator<Int32>

enum BinderBindings {
    /// `RangeAllocator(size)`.
    static let rangeAllocator: Binding = { L in
        bind(L) { lua in
            lua.pushHandle(try LuaRangeAllocator(size: try lua.integer(1)), .rangeAllocator)
            return 1
        }
    }

    /// `Alloc(mm, size)`: maps the buffer space into `mm` (taking its mmap
    /// write lock, waiting for it if another task holds it).
    static let alloc: Binding = { L in
        bind(L) { lua in
            let mm = try lua.mmReference(1, users: true).mm
            let size = try lua.integer(2)
            guard size > 0 else { throw KernelError(.EINVAL, "binder mmap of \(size) bytes") }
            let site = lua.site()
            try lua.checkCanWait(mm.machine.scheduler.wouldWait(for: mm.mmapLock, write: true), "binder Alloc")
            return try lua.blocking { lua in
                guard let guard_ = try mm.mmapLock(write: true, site: site) else { return nil }
                let alloc: BinderAlloc
                do { alloc = try BinderAlloc(machine: mm.machine, mm: mm, size: size, under: guard_, site: site) } catch {
                    try mm.unlock(guard_)
                    throw error
                }
                try mm.unlock(guard_)
                lua.pushHandle(alloc, .binderAlloc)
                return 1
            }
        }
    }

    /// `shrink(n)` → pages freed: the shrinker's scan of `n` LRU entries.
    static let shrink: Binding = { L in
        bind(L) { lua in
            let n = try lua.integer(1)
            guard n >= 0 else { throw KernelError(.EINVAL, "shrink of \(n) pages") }
            lua.push(try lua.machine().binderLru.scanObjects(n))
            return 1
        }
    }

    /// `stats()` → `{lru=, reclaimed=, skipped=}`.
    static let stats: Binding = { L in
        bind(L) { lua in
            let lru = try lua.machine().binderLru
            lua.newTable(hash: 3)
            lua.set("lru", lru.count)
            lua.set("reclaimed", lru.reclaimed)
            lua.set("skipped", lru.skipped)
            return 1
        }
    }
}

extension HandleClass {
    /// Dropping a RangeAllocator lets go of the data it holds.
    static let rangeAllocator = HandleClass(.rangeAllocator, methods: [
        ("reserve_new", RangeMethods.reserveNew),
        ("reservation_commit", RangeMethods.reservationCommit),
        ("reserve_existing", RangeMethods.reserveExisting),
        ("reservation_abort", RangeMethods.reservationAbort),
        ("free_oneway_space", { L in
            bind(L) { lua in lua.push(try lua.object(1, .rangeAllocator, as: LuaRangeAllocator.self).freeOnewaySpace); return 1 }
        }),
        ("count_buffers", { L in
            bind(L) { lua in lua.push(try lua.object(1, .rangeAllocator, as: LuaRangeAllocator.self).buffers); return 1 }
        }),
        ("mode", { L in
            bind(L) { lua in lua.push(try lua.object(1, .rangeAllocator, as: LuaRangeAllocator.self).mode.rawValue); return 1 }
        }),
        ("ranges", RangeMethods.ranges),
    ], drop: { lua, object, _ in
        for ref in unsafeDowncast(object, to: LuaRangeAllocator.self).allData() {
            luaL_unref(lua.L, mmlab_registryindex(), ref)
        }
    })

    static let binderAlloc = HandleClass(.binderAlloc, methods: [
        ("new_buf", AllocMethods.newBuf),
        ("page_state", { L in
            bind(L) { lua in lua.push(try AllocMethods.alloc(lua).pageState(try lua.integer(2))); return 1 }
        }),
        ("page_counts", { L in
            bind(L) { lua in
                let counts = try AllocMethods.alloc(lua).pageCounts
                lua.newTable(hash: 3)
                lua.set("active", counts.active)
                lua.set("lru", counts.lru)
                lua.set("free", counts.free)
                return 1
            }
        }),
        ("buffer_size", { L in bind(L) { lua in lua.push(try AllocMethods.alloc(lua).bufferSize); return 1 } }),
        ("free_async_space", { L in bind(L) { lua in lua.push(try AllocMethods.alloc(lua).freeAsyncSpace); return 1 } }),
        ("user_address", { L in bind(L) { lua in lua.push(try AllocMethods.alloc(lua).userAddress); return 1 } }),
        ("buffers", { L in bind(L) { lua in lua.push(try AllocMethods.alloc(lua).bufferCount); return 1 } }),
    ], drop: { _, object, _ in
        unsafeDowncast(object, to: BinderAlloc.self).release()
    })

    static let binderBuffer = HandleClass(.binderBuffer, methods: [
        ("user_data", { L in bind(L) { lua in lua.push(try BufferMethods.buffer(lua).userData); return 1 } }),
        ("offset", { L in bind(L) { lua in lua.push(try BufferMethods.buffer(lua).offset); return 1 } }),
        ("size", { L in bind(L) { lua in lua.push(try BufferMethods.buffer(lua).size); return 1 } }),
        ("is_async", { L in bind(L) { lua in lua.push(try BufferMethods.buffer(lua).isAsync); return 1 } }),
        ("spam_detected", { L in bind(L) { lua in lua.push(try BufferMethods.buffer(lua).spamDetected); return 1 } }),
        ("write", BufferMethods.write),
        ("read", BufferMethods.read),
        ("copy_into", BufferMethods.copyInto),
        ("free", { L in
            bind(L) { lua in
                try lua.drop(1, try lua.handle(1, .binderBuffer), .drop)
                return 0
            }
        }),
    ], drop: { _, object, _ in
        unsafeDowncast(object, to: BinderBuffer.self).free()
    })
}

enum RangeMethods {
    static func allocator(_ lua: Lua) throws -> LuaRangeAllocator {
        try lua.object(1, .rangeAllocator, as: LuaRangeAllocator.self)
    }

    /// `r:reserve_new{size=, is_oneway=false, pid=0}` → offset, spam_detected.
    static let reserveNew: Binding = { L in
        bind(L) { lua in
            let r = try allocator(lua)
            let o = try lua.options(2, arg: 2, ["size", "is_oneway", "pid"])
            guard let size = try o.integer("size", default: nil) else {
                throw o.error("size", "integer", at: o.index("size"))
            }
            let oneway = try o.boolean("is_oneway", default: false)
            let pid = try o.integer("pid", default: 0) ?? 0
            let (offset, spam) = try r.reserveNew(size: size, isOneway: oneway, pid: pid)
            lua.push(offset)
            lua.push(spam)
            return 2
        }
    }

    /// `r:reservation_commit(offset, data)`.
    static let reservationCommit: Binding = { L in
        bind(L) { lua in
            let r = try allocator(lua)
            let offset = try lua.integer(2)
            var ref: Int32?
            if !lua.isNoneOrNil(3) {
                lua_pushvalue(L, 3)
                ref = luaL_ref(L, mmlab_registryindex())
            }
            do {
                try r.reservationCommit(offset: offset, data: ref)
            } catch {
                if let ref { luaL_unref(L, mmlab_registryindex(), ref) }
                throw error
            }
            return 0
        }
    }

    /// `r:reserve_existing(offset)` → size, data.
    static let reserveExisting: Binding = { L in
        bind(L) { lua in
            let (size, ref) = try allocator(lua).reserveExisting(offset: try lua.integer(2))
            lua.push(size)
            if let ref {
                lua_rawgeti(L, mmlab_registryindex(), lua_Integer(ref))
                luaL_unref(L, mmlab_registryindex(), ref)
            } else {
                lua.pushNil()
            }
            return 2
        }
    }

    /// `r:reservation_abort(offset)` → first_page, end_page of the pages freed.
    static let reservationAbort: Binding = { L in
        bind(L) { lua in
            let freed = try allocator(lua).reservationAbort(offset: try lua.integer(2))
            lua.push(freed.start)
            lua.push(freed.end)
            return 2
        }
    }

    /// `r:ranges()` → `{{offset=, size=, state=, oneway=, pid=}, ...}` in offset order.
    static let ranges: Binding = { L in
        bind(L) { lua in
            let ranges = try allocator(lua).allRanges()
            lua.newTable(array: Int32(ranges.count))
            for (i, range) in ranges.enumerated() {
                lua.newTable(hash: 5)
                lua.set("offset", range.offset)
                lua.set("size", range.size)
                lua.set("state", range.state.rawValue)
                lua.set("oneway", range.isOneway)
                lua.set("pid", range.pid)
                lua_rawseti(L, -2, lua_Integer(i + 1))
            }
            return 1
        }
    }
}

enum AllocMethods {
    static func alloc(_ lua: Lua) throws -> BinderAlloc {
        let alloc = try lua.object(1, .binderAlloc, as: BinderAlloc.self)
        lua.runtime.activeL = lua.L  // page allocations may run the collector
        return alloc
    }

    /// `alloc:new_buf{data_size=, offsets_size=0, extra_buffers_size=0, is_async=false, pid=0}` → Buffer.
    /// Inserting its pages may wait for the mmap lock: the binding then
    /// yields and, woken, finishes the same buffer.
    static let newBuf: Binding = { L in
        bind(L) { lua in
            let alloc = try alloc(lua)
            let o = try lua.options(2, arg: 2, ["data_size", "offsets_size", "extra_buffers_size", "is_async", "pid"])
            guard let data = try o.integer("data_size", default: nil) else {
                throw o.error("data_size", "integer", at: o.index("data_size"))
            }
            let offsets = try o.unsigned("offsets_size", default: 0)
            let extra = try o.unsigned("extra_buffers_size", default: 0)
            let async = try o.boolean("is_async", default: false)
            let pid = try o.integer("pid", default: 0) ?? 0
            let site = lua.site()
            let buffer = try alloc.newBuf(dataSize: UInt64(bitPattern: Int64(data)), offsetsSize: offsets,
                                          extraBuffersSize: extra, isAsync: async, pid: pid, site: site)
            let canBlock = lua.runtime.canBlock(lua)
            return try lua.blocking { lua in
                guard try alloc.populate(buffer, site: site, mayWait: canBlock) else {
                    guard canBlock else {
                        buffer.free()
                        throw lua.runtime.cannotBlock("new_buf")
                    }
                    return nil
                }
                lua.pushHandle(buffer, .binderBuffer)
                return 1
            }
        }
    }
}

enum BufferMethods {
    static func buffer(_ lua: Lua) throws -> BinderBuffer {
        try lua.object(1, .binderBuffer, as: BinderBuffer.self)
    }

    /// `b:write(off, data)`.
    static let write: Binding = { L in
        bind(L) { lua in
            let buffer = try buffer(lua)
            let off = try lua.integer(2)
            try buffer.write(try lua.bytes(3), at: off)
            return 0
        }
    }

    /// `b:read(off, len)` → bytes.
    static let read: Binding = { L in
        bind(L) { lua in
            let buffer = try buffer(lua)
            let bytes = try buffer.read(try lua.integer(2), try lua.integer(3))
            bytes.withUnsafeBytes { lua.push(bytes: $0) }
            return 1
        }
    }

    /// `b:copy_into(reader, off, len)`: `len` bytes of the reader's user
    /// memory into the buffer at `off` (the one copy of a transaction).
    static let copyInto: Binding = { L in
        bind(L) { lua in
            let buffer = try buffer(lua)
            let reader = try lua.object(2, .userSliceReader, as: UserSliceReader.self)
            let off = try lua.integer(3), len = try lua.integer(4)
            try checkPageBounds(off, len, size: buffer.size)
            let site = lua.site(), canBlock = lua.runtime.canBlock(lua)
            return try lua.blocking { lua in
                // Each run of the step has its own buffer: none outlives it.
                guard let temp = malloc(max(len, 1)) else { throw KernelError(.ENOMEM, "copy_into of \(len) bytes") }
                defer { free(temp) }
                guard try reader.read(into: temp, len, site: site, mayWait: canBlock) else {
                    try lua.checkCanWait(true, "copy_into")
                    return nil
                }
                try buffer.write(UnsafeRawBufferPointer(start: temp, count: len), at: off)
                return 0
            }
        }
    }
}
