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
        lua.setConstants([("MAX_ORDER", MAX_ORDER), ("PAGE_POISON", Int(PageAllocator.poison)),
                          ("POISON", Int(PageAllocator.poison)), ("SHRINK_STOP", SHRINK_STOP),
                          ("SHRINK_EMPTY", SHRINK_EMPTY), ("DEFAULT_SEEKS", 2)])
        lua.setFunctions([
            ("stats", MemoryBindings.stats),
            ("zones", MemoryBindings.zones),
            ("extfrag_index", { L in MemoryBindings.index(L, unusable: false) }),
            ("unusable_index", { L in MemoryBindings.index(L, unusable: true) }),
            ("buddyinfo", MemoryBindings.buddyinfo),
            ("drain_pages", MemoryBindings.drainPages),
            ("pfn_valid", MemoryBindings.pfnValid),
            ("page_is_ram", MemoryBindings.pageIsRam),
            ("phys_to_pfn", MemoryBindings.physToPfn),
            ("pfn_to_phys", MemoryBindings.pfnToPhys),
            ("fail_page_alloc", MemoryBindings.failPageAlloc),
            ("register_shrinker", MemoryBindings.registerShrinker),
            ("vmstat", MemoryBindings.vmstat),
            ("zoneinfo", MemoryBindings.zoneinfo),
            ("pagetypeinfo", MemoryBindings.pagetypeinfo),
            ("pageblock_type", MemoryBindings.pageblockType),
        ])
        lua.setField(-2, "mem")

        lua.newTable()
        lua.newTable()
        // Rust's associated functions: Page::alloc_page, Page::from_phys, Page::borrow_phys.
        lua.setFunctions([("alloc_page", MemoryBindings.allocPage), ("alloc_pages", MemoryBindings.allocPages),
                          ("from_phys", MemoryBindings.fromPhys), ("borrow_phys", MemoryBindings.borrowPhys)])
        lua.setField(-2, "Page")
        lua.setFunctions([
            ("into_phys", MemoryBindings.intoPhys),
            ("from_phys", MemoryBindings.fromPhys),
            ("borrow_phys", MemoryBindings.borrowPhys),
            ("borrow_phys_unchecked", MemoryBindings.borrowPhysUnchecked),
        ])
        lua.set("ZERO_PAGE_PFN", ZERO_PAGE_PFN.rawValue)
        lua.setField(-2, "page")
    }
}

extension Lua {
    /// The page behind the live `Page` or `BorrowedPage` handle at `arg`.
    @inline(__always)
    func page(_ arg: Int32) throws -> any PageAccess {
        let h = try handle(arg, .page, or: .borrowedPage)
        if h.pointee.type == HandleType.page.rawValue { return object(h, as: Page.self) }
        return object(h, as: BorrowedPage.self)
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

    /// A size or address: an integer (unsigned), or a string with a K/M/G/T
    /// suffix. `what` names it in the error.
    func size(_ idx: Int32, arg: Int32, field: String) throws(LuaFailure) -> UInt64 {
        if lua_isinteger(L, idx) != 0 {
            return UInt64(bitPattern: lua_tointegerx(L, idx, nil))
        } else if let text = string(at: idx), let bytes = MachineConfig.parseSize(text) {
            return bytes
        }
        throw .argument(arg, "field '\(field)': size expected (bytes, or a string such as \"256M\"), got \(describe(idx))")
    }

    /// A physical address argument.
    func physAddr(_ arg: Int32) throws(LuaFailure) -> PhysAddr {
        PhysAddr(UInt64(bitPattern: Int64(try integer(arg))))
    }
}

/// The pointer `with_pointer_into_page` passes to its callback: valid for
/// `length` bytes, only during the call.
final class PagePointer: CustomStringConvertible {
    let mapping: KmapMapping
    var page: any PageAccess { mapping.page }
    let pointer: UnsafeMutableRawPointer
    let offset: Int
    let length: Int

    init(mapping: KmapMapping, pointer: UnsafeMutableRawPointer, offset: Int, length: Int) {
        self.mapping = mapping
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
        try page.checkAlive()  // the pointer's mapping holds the kmap slot
        // SAFETY: `off + len <= length`, and the pointer is valid for `length` bytes while mapped.
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
            let machine = try lua.machine()
            lua.pushHandle(try Page.allocPage(machine, gfp, site: lua.site()), .page)
            return 1
        }
    }

    /// `Page.alloc_pages(gfp, order)`.
    static let allocPages: Binding = { L in
        bind(L) { lua in
            let gfp = try lua.gfp(1)
            let order = try lua.integer(2)
            let machine = try lua.machine()
            lua.pushHandle(try Page.allocPages(machine, gfp, order: order, site: lua.site()), .page)
            return 1
        }
    }

    /// `kernel.page.into_phys(p)` → physical address; `p` is moved.
    static let intoPhys: Binding = { L in
        bind(L) { lua in
            let h = try lua.handle(1, .page)
            guard h.pointee.borrows == 0 else {
                throw KernelError.bug("into_phys of \(lua.describe(h)) while it is borrowed")
            }
            let page = lua.object(h, as: Page.self)
            let pa = try Page.intoPhys(page)
            lua.end(1, h, as: .moved)
            lua.push(pa.rawValue)
            return 1
        }
    }

    /// `kernel.page.from_phys(pa)` → the owned Page given away at `pa`.
    static let fromPhys: Binding = { L in
        bind(L) { lua in
            let pa = try lua.physAddr(1)
            lua.pushHandle(try Page.fromPhys(try lua.machine(), pa), .page)
            return 1
        }
    }

    /// `kernel.page.borrow_phys(pa)` → BorrowedPage or nil.
    static let borrowPhys: Binding = { L in
        bind(L) { lua in
            let pa = try lua.physAddr(1)
            guard let page = Page.borrowPhys(try lua.machine(), pa) else { return 0 }
            lua.pushHandle(page, .borrowedPage, state: .borrowed)
            return 1
        }
    }

    /// `kernel.page.borrow_phys_unchecked(pa)` → BorrowedPage; a bug when invalid.
    static let borrowPhysUnchecked: Binding = { L in
        bind(L) { lua in
            let pa = try lua.physAddr(1)
            lua.pushHandle(try Page.borrowPhysUnchecked(try lua.machine(), pa), .borrowedPage, state: .borrowed)
            return 1
        }
    }

    /// `kernel.mem.register_shrinker{count=fn, scan=fn, name=, seeks=2}` →
    /// Shrinker; dropping it unregisters it. `count()` returns how many
    /// objects could be freed, `scan(n)` frees up to `n` and returns how
    /// many it freed, or `SHRINK_STOP`.
    static let registerShrinker: Binding = { L in
        bind(L) { lua in
            try lua.checkTable(1)
            try lua.checkFields(1, arg: 1, known: ["count", "scan", "name", "seeks"])
            let seeks = try lua.integerField(1, "seeks", arg: 1, default: 2) ?? 2
            guard seeks >= 0 else { throw KernelError(.EINVAL, "register_shrinker: seeks \(seeks) is negative") }
            var refs: [Int32] = []
            for field in ["count", "scan"] {
                guard lua.getField(1, field) == LUA_TFUNCTION else {
                    throw lua.fieldError(1, field, "function")
                }
                refs.append(luaL_ref(L, mmlab_registryindex()))
            }
            lua.getField(1, "name")
            let name = lua.string(at: -1) ?? "lua"
            let machine = try lua.machine()
            let shrinker = LuaShrinker(runtime: lua.runtime, count: refs[0], scan: refs[1], name: name, seeks: seeks)
            try machine.pageAllocator.register(shrinker)
            lua.pushHandle(shrinker, .shrinker)
            return 1
        }
    }

    /// `kernel.mem.stats()` → `{total_pages=, free_pages=, pcp_pages=, nr_free={[0]=...}}`.
    /// `zones()` → per zone: name, managed, free, pcp, min, low, high, promo.
    static let zones: Binding = { L in
        bind(L) { lua in
            let allocator = try lua.machine().pageAllocator
            let zones = allocator.zones
            lua.newTable(array: Int32(zones.count))
            for (i, zone) in zones.enumerated() {
                lua.newTable(hash: 12)
                lua.push(zone.name)
                lua.setField(-2, "name")
                lua.set("managed", zone.managedPages)
                lua.set("free", zone.freePages)
                lua.newTable(hash: 3)
                lua.set("count", zone.pcpPages)
                lua.set("high", zone.pcpHigh(allocator.currentCpu))
                lua.set("high_min", zone.highMin)
                lua.set("high_max", zone.highMax)
                lua.set("batch", zone.batch)
                lua.setField(-2, "pcp")
                lua.set("min", zone.watermark.min)
                lua.set("low", zone.watermark.low)
                lua.set("high", zone.watermark.high)
                lua.set("promo", zone.watermark.promo)
                lua.newTable(array: Int32(zone.lowmemReserve.count))
                for (j, pages) in zone.lowmemReserve.enumerated() {
                    lua.push(pages)
                    lua_rawseti(L, -2, lua_Integer(j + 1))
                }
                lua.setField(-2, "lowmem_reserve")
                lua.newTable(array: Int32(MAX_ORDER), hash: 1)
                for order in 0...MAX_ORDER {
                    lua.newTable(hash: 3)
                    for type in MigrateType.allCases { lua.set(type.name, zone.nrFree(order, type)) }
                    lua_rawseti(L, -2, lua_Integer(order))
                }
                lua.setField(-2, "free_area")
                let blocks = allocator.pageblockCounts(zone)
                lua.newTable(hash: 3)
                for type in MigrateType.allCases { lua.set(type.name, blocks[type.rawValue]) }
                lua.setField(-2, "pageblocks")
                lua_rawseti(L, -2, lua_Integer(i + 1))
            }
            return 1
        }
    }

    /// `extfrag_index(order)`, `unusable_index(order)` → each zone's index
    /// (Normal first) as debugfs prints it: thousandths, as a number.
    static func index(_ L: OpaquePointer?, unusable: Bool) -> Int32 {
        bind(L) { lua in
            let order = try lua.integer(1)
            guard (0...MAX_ORDER).contains(order) else {
                throw KernelError(.EINVAL, "order \(order) is out of range (0 to \(MAX_ORDER))")
            }
            let zones = try lua.machine().pageAllocator.zones
            for zone in zones {
                let info = ContigPageInfo(zone, suitableOrder: order)
                let index = unusable ? info.unusableFreeIndex(order) : info.fragmentationIndex(order)
                lua_pushnumber(L, Double(index) / 1000)
            }
            return Int32(zones.count)
        }
    }

    static let stats: Binding = { L in
        bind(L) { lua in
            let allocator = try lua.machine().pageAllocator
            lua.newTable(hash: 4)
            lua.set("total_pages", allocator.totalPages)
            lua.set("free_pages", allocator.freePages)
            lua.set("pcp_pages", allocator.pcpPages)
            let nrFree = allocator.nrFree
            lua.newTable(array: Int32(nrFree.count))
            for (order, n) in nrFree.enumerated() {
                lua.push(n)
                lua_rawseti(L, -2, lua_Integer(order))
            }
            lua.setField(-2, "nr_free")
            return 1
        }
    }

    /// `kernel.mem.buddyinfo()` → the lines of /proc/buddyinfo.
    /// kswapd0's body (`kswapd()`): a turn of its loop each time it runs,
    /// then a nap (its CPU given up) or sleep on its wait queue.
    static let kswapd: Binding = { L in
        bind(L) { lua in
            let machine = try lua.machine()
            return try lua.blocking { _ in
                switch machine.pageAllocator.kswapdTurn() {
                case .nap: machine.scheduler.yieldCurrent()
                case .sleep: _ = machine.scheduler.sleep(on: machine.pageAllocator.kswapd.queue)
                }
                return nil
            }
        }
    }

    /// `vmstat()` → the `/proc/vmstat` counters mmlab keeps, by name.
    static let vmstat: Binding = { L in
        bind(L) { lua in
            let counters = try lua.machine().pageAllocator.vmstat
            lua.newTable(hash: Int32(counters.count))
            for (name, value) in counters { lua.set(name, value) }
            return 1
        }
    }

    /// `zoneinfo()` → the `/proc/zoneinfo` text.
    static let zoneinfo: Binding = { L in
        bind(L) { lua in
            lua.push(try lua.machine().pageAllocator.zoneinfo)
            return 1
        }
    }

    /// `pageblock_type(pfn)` → the migratetype of the pageblock holding a
    /// RAM frame (`get_pageblock_migratetype`).
    static let pageblockType: Binding = { L in
        bind(L) { lua in
            let pfn = try lua.integer(1)
            let allocator = try lua.machine().pageAllocator
            guard pfn >= 0, allocator.zone(of: Pfn(UInt64(pfn))) != nil else {
                throw KernelError(.EINVAL, "pageblock_type: pfn 0x\(String(pfn, radix: 16)) is not RAM the page allocator manages")
            }
            lua.push(allocator.blockType(UInt64(pfn)).name)
            return 1
        }
    }

    /// `pagetypeinfo()` → the `/proc/pagetypeinfo` text.
    static let pagetypeinfo: Binding = { L in
        bind(L) { lua in
            lua.push(try lua.machine().pageAllocator.pagetypeinfo)
            return 1
        }
    }

    static let buddyinfo: Binding = { L in
        bind(L) { lua in
            lua.push(try lua.machine().pageAllocator.buddyinfo)
            return 1
        }
    }

    /// `kernel.mem.drain_pages()`: every per-CPU list back to the buddy allocator.
    static let drainPages: Binding = { L in
        bind(L) { lua in
            try lua.machine().pageAllocator.drainPages()
            return 0
        }
    }

    static let pfnValid: Binding = { L in pfnQuery(L) { $0.pfnValid($1) } }
    static let pageIsRam: Binding = { L in pfnQuery(L) { $0.pageIsRam($1) } }

    /// A yes-or-no question about the pfn at argument 1; negative pfns are no.
    private static func pfnQuery(_ L: OpaquePointer?, _ query: (PhysicalMemory, Pfn) -> Bool) -> Int32 {
        bind(L) { lua in
            let pfn = try lua.integer(1)
            let memory = try lua.machine().memory
            lua.push(pfn >= 0 && query(memory, Pfn(UInt64(pfn))))
            return 1
        }
    }

    static let physToPfn: Binding = { L in
        bind(L) { lua in
            lua.push(try lua.physAddr(1).pfn.rawValue)
            return 1
        }
    }

    static let pfnToPhys: Binding = { L in
        bind(L) { lua in
            lua.push(UInt64(bitPattern: Int64(try lua.integer(1))) << UInt64(PAGE_SHIFT))
            return 1
        }
    }

    /// `kernel.mem.fail_page_alloc{probability=100, interval=1, times=-1,
    /// space=0, min_order=0, ignore_gfp_highmem=false, ignore_gfp_reclaim=false}`;
    /// `fail_page_alloc(nil)` turns it off. Returns the failures injected
    /// by the settings it replaces.
    static let failPageAlloc: Binding = { L in
        bind(L) { lua in
            let allocator = try lua.machine().pageAllocator
            var attr: FaultAttr?
            if !lua.isNoneOrNil(1) {
                try lua.checkTable(1)
                try lua.checkFields(1, arg: 1, known: [
                    "probability", "interval", "times", "space", "min_order", "ignore_gfp_highmem", "ignore_gfp_reclaim",
                ])
                let probability = try lua.integerField(1, "probability", arg: 1, default: 100) ?? 100
                let interval = try lua.integerField(1, "interval", arg: 1, default: 1) ?? 1
                let times = try lua.integerField(1, "times", arg: 1, default: -1) ?? -1
                let space = try lua.integerField(1, "space", arg: 1, default: 0) ?? 0
                let minOrder = try lua.integerField(1, "min_order", arg: 1, default: 0) ?? 0
                guard (0...100).contains(probability), interval >= 1, times >= -1, space >= 0,
                      (0...MAX_ORDER + 1).contains(minOrder) else {
                    throw KernelError(.EINVAL, "fail_page_alloc: probability is 0 to 100, interval at least 1, times -1 or more, space 0 or more, min_order 0 to \(MAX_ORDER + 1)")
                }
                attr = FaultAttr(
                    probability: UInt64(probability), interval: UInt64(interval), times: times, space: space,
                    minOrder: minOrder,
                    ignoreGfpHighmem: try lua.booleanField(1, "ignore_gfp_highmem", arg: 1, default: false),
                    ignoreGfpReclaim: try lua.booleanField(1, "ignore_gfp_reclaim", arg: 1, default: false))
            }
            lua.push(Int(allocator.faultInjection?.failures ?? 0))
            allocator.faultInjection = attr
            return 1
        }
    }
}

/// A shrinker written in Lua: `count()` and `scan(n)` run under a
/// protected call when reclaim runs. An error, or a result that is not a
/// count (or `SHRINK_STOP` from `scan`), becomes a warning and frees
/// nothing, as a shrinker cannot fail an allocation. They run inside
/// reclaim: what they allocate ignores the watermarks and never
/// reclaims, and they cannot wait (the allocation that called them cannot).
final class LuaShrinker: Shrinker, CustomStringConvertible {
    let link: RuntimeLink
    var runtime: Runtime? { link.runtime }
    let count: Int32, scan: Int32
    let name: String
    let seeks: Int
    var isRegistered = true

    init(runtime: Runtime, count: Int32, scan: Int32, name: String, seeks: Int) {
        link = runtime.link
        self.count = count
        self.scan = scan
        self.name = name
        self.seeks = seeks
    }

    var description: String { "Shrinker{\(name)}" }

    func countObjects() -> Int { call(count, nil) ?? 0 }
    func scanObjects(_ n: Int) -> Int { call(scan, n) ?? SHRINK_STOP }

    /// What the function returned, or nil (after a warning) when it raised
    /// or returned something else than a count.
    private func call(_ ref: Int32, _ argument: Int?) -> Int? {
        guard let runtime else { return nil }
        let lua = Lua(runtime.activeL)
        let top = lua.top
        defer { lua_settop(lua.L, top) }
        lua_rawgeti(lua.L, mmlab_registryindex(), lua_Integer(ref))
        if let argument { lua.push(argument) }
        let what = argument == nil ? "count" : "scan"
        guard lua_pcallk(lua.L, argument == nil ? 0 : 1, 1, 0, 0, nil) == LUA_OK else {
            runtime.warn("\(self): \(what): \(runtime.errorMessage(lua, at: -1))")
            return nil
        }
        var isInteger: Int32 = 0
        let n = Int(lua_tointegerx(lua.L, -1, &isInteger))
        guard isInteger != 0, n >= 0 || (argument != nil && n == SHRINK_STOP) || (argument == nil && n == SHRINK_EMPTY) else {
            runtime.warn("\(self): \(what) returned \(lua.describe(-1)), not \(argument == nil ? "a count" : "a count or SHRINK_STOP")")
            return nil
        }
        return n
    }

    /// Unregisters it and lets go of its functions.
    func release(from machine: Machine) throws(KernelError) {
        guard isRegistered, let runtime else { return }
        try machine.pageAllocator.unregister(self)
        isRegistered = false
        luaL_unref(runtime.L, mmlab_registryindex(), count)
        luaL_unref(runtime.L, mmlab_registryindex(), scan)
    }
}

extension HandleClass {
    static let shrinker = HandleClass(.shrinker, methods: [], drop: { lua, object, _ in
        // SAFETY: `.shrinker` handles hold a LuaShrinker (registerShrinker).
        if let machine = lua.runtime.booted { try unsafeDowncast(object, to: LuaShrinker.self).release(from: machine) }
    })

    /// What `Page` and `BorrowedPage` handles share.
    static let pageMethods: [(String, Binding)] = [
        ("size", { L in bind(L) { lua in lua.push(try lua.page(1).size); return 1 } }),
        ("order", { L in bind(L) { lua in lua.push(try lua.page(1).order); return 1 } }),
        ("pfn", { L in bind(L) { lua in lua.push(try lua.page(1).pfn.rawValue); return 1 } }),
        ("phys", { L in bind(L) { lua in lua.push(try lua.page(1).phys.rawValue); return 1 } }),
        ("nid", { L in bind(L) { lua in lua.push(try lua.page(1).nid); return 1 } }),
        ("refcount", { L in bind(L) { lua in lua.push(try lua.page(1).refcount); return 1 } }),
        ("copy_from_user_slice_raw", copyFromUserSliceRaw),
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
        ("read_u8", { L in readInteger(L, UInt8.self) }),
        ("read_u16", { L in readInteger(L, UInt16.self) }),
        ("read_u32", { L in readInteger(L, UInt32.self) }),
        ("read_u64", { L in readInteger(L, UInt64.self) }),
        ("write_u8", { L in writeInteger(L, UInt8.self) }),
        ("write_u16", { L in writeInteger(L, UInt16.self) }),
        ("write_u32", { L in writeInteger(L, UInt32.self) }),
        ("write_u64", { L in writeInteger(L, UInt64.self) }),
        ("with_pointer_into_page", withPointerIntoPage),
        ("with_page_mapped", withPageMapped),
    ]

    /// `p:read_u8(off)` ... `p:read_u64(off)`: little-endian; u64 in two's
    /// complement. Specialized per width here: only the bounds check goes
    /// through the page's protocol.
    @inline(__always)
    private static func readInteger<T: FixedWidthInteger & UnsignedInteger>(_ L: OpaquePointer?, _: T.Type) -> Int32 {
        bind(L) { lua in
            let page = try lua.page(1)
            let off = try lua.integer(2)
            let p = try page.pointerIntoPage(off, MemoryLayout<T>.size)
            // SAFETY: `pointerIntoPage` checked that `p` is valid for `MemoryLayout<T>.size` bytes.
            let v = Int64(truncatingIfNeeded: T(littleEndian: p.loadUnaligned(as: T.self)))
            lua.accessed("page read", [.init("pfn", Int(page.pfn.rawValue)), .init("offset", off), .init("bytes", MemoryLayout<T>.size)])
            lua.push(v)
            return 1
        }
    }

    /// `p:write_u8(off, v)` ... `p:write_u64(off, v)`: `v` truncated to the width.
    @inline(__always)
    private static func writeInteger<T: FixedWidthInteger & UnsignedInteger>(_ L: OpaquePointer?, _: T.Type) -> Int32 {
        bind(L) { lua in
            let value = T(truncatingIfNeeded: try lua.integer(3))
            let page = try lua.page(1)
            try page.checkWritable()
            let off = try lua.integer(2)
            let p = try page.pointerIntoPage(off, MemoryLayout<T>.size)
            // SAFETY: `pointerIntoPage` checked that `p` is valid for `MemoryLayout<T>.size` bytes.
            p.storeBytes(of: value.littleEndian, toByteOffset: 0, as: T.self)
            lua.accessed("page write", [.init("pfn", Int(page.pfn.rawValue)), .init("offset", off), .init("bytes", MemoryLayout<T>.size)])
            return 0
        }
    }

    /// `p:copy_from_user_slice_raw(reader, off, len)`: `len` bytes from the
    /// reader into the page at `off` (EINVAL out of bounds, EFAULT from the
    /// reader, which then does not move).
    private static let copyFromUserSliceRaw: Binding = { L in
        bind(L) { lua in
            let page = try lua.page(1)
            try page.checkAccess()
            try page.checkWritable()
            let reader = try lua.object(2, .userSliceReader, as: UserSliceReader.self)
            let off = try lua.integer(3), len = try lua.integer(4)
            _ = try page.pointerIntoPage(off, len)
            let site = lua.site(), canBlock = lua.runtime.canBlock(lua)
            return try lua.blocking { lua in
                // Checked on each run: the page may have gone while the task waited.
                let p = try page.pointerIntoPage(off, len)
                guard try reader.read(into: p, len, site: site, mayWait: canBlock) else {
                    try lua.checkCanWait(true, "copy_from_user_slice_raw")
                    return nil
                }
                return 0
            }
        }
    }

    static let page = HandleClass(.page, methods: pageMethods, drop: { lua, object, context in
        // SAFETY: `.page` handles hold a Page (allocPage, allocPages, fromPhys).
        try unsafeDowncast(object, to: Page.self).free(site: context.site)
    }, tombstone: (make: { object in
        // SAFETY: as above. A pfn fits in 32 bits, an order in 8.
        let page = unsafeDowncast(object, to: Page.self)
        return page.pfn.rawValue << 8 | UInt64(page.order)
    }, describe: { Page.describe(pfn: Pfn($0 >> 8), order: Int($0 & 0xff)) }))

    /// Borrowed handles: dropping one releases nothing.
    static let borrowedPage = HandleClass(.borrowedPage, methods: pageMethods, tombstone: (make: { object in
        // SAFETY: `.borrowedPage` handles hold a BorrowedPage (borrowPhys).
        unsafeDowncast(object, to: BorrowedPage.self).pfn.rawValue
    }, describe: { BorrowedPage.describe(pfn: Pfn($0)) }))

    /// `p:with_pointer_into_page(off, len, fn)`: EINVAL without calling
    /// `fn`, or `fn(ptr)`'s results. The page is mapped (a kmap_local slot)
    /// for the call; `ptr` expires when `fn` returns or raises.
    private static let withPointerIntoPage: Binding = { L in
        bind(L) { lua in
            let page = try lua.page(1)
            let off = try lua.integer(2), len = try lua.integer(3)
            try lua.checkFunction(4)
            let pointer = try page.pointerIntoPage(off, len)
            let mapping = try page.map()
            lua_settop(L, 4)
            lua.pushHandle(PagePointer(mapping: mapping, pointer: pointer, offset: off, length: len),
                           .pagePointer, state: .borrowed, lender: 1)  // 5
            lua_pushvalue(L, 4)
            lua_pushvalue(L, 5)
            return lua.pcall(arguments: 1, then: unmapAfterCall)
        }
    }

    /// `p:with_page_mapped(fn)`: `fn(map)`'s results; `map` (a kmap_local
    /// mapping of the first page) expires when `fn` returns or raises.
    private static let withPageMapped: Binding = { L in
        bind(L) { lua in
            let page = try lua.page(1)
            try lua.checkFunction(2)
            let mapping = try page.map()
            lua_settop(L, 4)
            lua.pushHandle(mapping, .mapping, state: .borrowed, lender: 1)  // 5, where unmapAfterCall looks
            lua_pushvalue(L, 2)
            lua_pushvalue(L, 5)
            return lua.pcall(arguments: 1, then: unmapAfterCall)
        }
    }

    /// After the callback of `with_pointer_into_page` or `with_page_mapped`:
    /// the handle at 5 expires and its kmap_local slot is unmapped; the
    /// callback's results or error pass through.
    private static func unmapAfterCall(_ lua: Lua, _ status: Int32, _ first: Int32) -> Int32 {
        let L = lua.L
        guard let h = mmlab_tohandle(L, 5) else { return status == LUA_OK ? lua.top - first + 1 : MMLAB_RAISE }
        let object = Handles.object(h)
        let mapping = (object as? PagePointer)?.mapping ?? (object as? KmapMapping)
        if Handles.state(h) == .borrowed { lua.end(5, h, as: .dropped, flags: HandleFlag.expired) }
        if let mapping, let machine = lua.runtime.booted {
            do { try machine.kmap.unmap(mapping) } catch {
                if status != LUA_OK { lua.pop() }
                return lua.fail(error)
            }
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
                try ptr.page.checkWritable()
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

    static let mapping = HandleClass(.mapping, methods: [
        ("addr", { L in bind(L) { lua in lua.push(try lua.object(1, .mapping, as: KmapMapping.self).address); return 1 } }),
        ("read", { L in
            bind(L) { lua in
                let map = try lua.object(1, .mapping, as: KmapMapping.self)
                let off = try lua.integer(2), len = try lua.integer(3)
                lua.push(bytes: try map.pointer(off, len), count: len)
                return 1
            }
        }),
        ("write", { L in
            bind(L) { lua in
                let map = try lua.object(1, .mapping, as: KmapMapping.self)
                if map.pfn == ZERO_PAGE_PFN { throw KernelError.bug("write to the shared zero page (pfn \(map.pfn)): it is mapped read-only wherever it is mapped") }
                let data = try lua.bytes(2)
                let p = try map.pointer(try lua.integer(3), data.count)
                // SAFETY: `p` is valid for `data.count` bytes (bounds checked by the mapping).
                UnsafeMutableRawBufferPointer(start: p, count: data.count).copyMemory(from: data)
                return 0
            }
        }),
    ])
}
