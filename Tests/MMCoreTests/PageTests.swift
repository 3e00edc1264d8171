import Testing
@testable import MMCore

@Suite("Page")
struct PageTests {
    let machine: Machine

    init() throws {
        machine = try Machine(MachineConfig(memory: 1 << 20))
    }

    @Test("an order-0 page at the start of RAM")
    func allocate() throws {
        let page = try Page.allocPage(machine, .kernel)
        #expect(page.size == PAGE_SIZE)
        #expect(page.order == 0)
        #expect(page.pfn == Pfn(0x100))
        #expect(page.phys == PhysAddr(0x100000))
        #expect(page.description == "Page{pfn=0x100, order=0}")
        let allocator = machine.pageAllocator
        #expect(allocator.freePages + UInt64(allocator.pcpPages) == allocator.totalPages - 1)
        try page.free()
        #expect(allocator.freePages + UInt64(allocator.pcpPages) == allocator.totalPages)
    }

    @Test("__GFP_ZERO zeroes a reused frame")
    func zero() throws {
        // Movable both times: the freed frame waits on the Movable per-CPU list.
        let dirty = try Page.allocPage(machine, [.kernel, .movable])
        try dirty.writeRaw([UInt8](repeating: 0xff, count: PAGE_SIZE), 0)
        try dirty.free()
        let page = try Page.allocPage(machine, [.kernel, .movable, .zero])
        #expect(page.pfn == dirty.pfn)
        #expect(try page.readRaw(0, PAGE_SIZE) == [UInt8](repeating: 0, count: PAGE_SIZE))
    }

    @Test("page_poison: a freed page written behind the allocator's back is a bug on its next allocation (check_poison_mem)")
    func poisonCorruption() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20))
        let freed = machine.sites.intern("t.lua:9")
        let page = try Page.allocPage(machine, .kernel)
        let pfn = page.pfn
        try page.free(site: freed)
        let memory = try #require(machine.memory.address(of: pfn))
        #expect(memory.load(fromByteOffset: 100, as: UInt8.self) == 0xaa, "poisoned with PAGE_POISON")
        memory.storeBytes(of: 0x41, toByteOffset: 100, as: UInt8.self)  // a stale pointer writes
        memory.storeBytes(of: 0x42, toByteOffset: 200, as: UInt8.self)
        #expect(throws: KernelError.bug("pagealloc: memory corruption: pfn \(pfn) was written after it was freed at t.lua:9: bytes 0x64-0xc8 are not the poison 0xaa (byte 0x64 is 0x41)")) {
            try Page.allocPage(machine, .kernel)
        }
        try machine.pageAllocator.checkConsistency()
        let again = try Page.allocPage(machine, .kernel)
        #expect(again.pfn == pfn, "the block went back poisoned again, and is clean now")
        #expect(try again.read(UInt8.self, at: 100) == 0xaa)
        // init_on_free zeroes instead, and checks nothing.
        let zeroing = try Machine(MachineConfig(memory: 16 << 20, initOnFree: true))
        let z = try Page.allocPage(zeroing, .kernel)
        let zpfn = z.pfn
        try z.free()
        try #require(zeroing.memory.address(of: zpfn)).storeBytes(of: 1, toByteOffset: 0, as: UInt8.self)
        #expect(try Page.allocPage(zeroing, .kernel).pfn == zpfn)
    }

    @Test("page_poison: a frame nobody reached keeps its poison on free, and its next allocation checks it all the same")
    func poisonIntact() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20))
        let first = try Page.allocPage(machine, .kernel)
        let pfn = first.pfn
        try first.free()
        let frame = try #require(machine.memory.existingPage(pfn))
        #expect(frame.pointee.intact, "poisoned, and nobody has its memory")
        let page = try Page.allocPage(machine, .kernel)
        #expect(page.pfn == pfn && frame.pointee.intact, "the check passed and the poison is still all there")
        // Written behind the model's back (no address(of:), no accessor):
        // the free believes the poison intact and leaves it, and the next
        // allocation's check finds the write.
        try #require(machine.memory.rawAddress(of: pfn)).storeBytes(of: 0x41, toByteOffset: 9, as: UInt8.self)
        try page.free()
        #expect(throws: KernelError.bug("pagealloc: memory corruption: pfn \(pfn) was written: bytes 0x9-0x9 are not the poison 0xaa (byte 0x9 is 0x41)")) {
            try Page.allocPage(machine, .kernel)
        }
        // Any accessor says it reached the memory; so does address(of:).
        let again = try Page.allocPage(machine, .kernel)
        #expect(again.pfn == pfn && frame.pointee.intact)
        _ = try again.read(UInt8.self, at: 0)
        #expect(!frame.pointee.intact)
        try again.free()
        #expect(frame.pointee.intact)
        _ = machine.memory.address(of: pfn)
        #expect(!frame.pointee.intact)
    }

    @Test("bounds: allowed only if off <= size, len <= size and off + len <= size",
          arguments: [
            (PAGE_SIZE, 0, true), (0, PAGE_SIZE, true), (PAGE_SIZE - 1, 1, true),
            (1, PAGE_SIZE, false), (PAGE_SIZE + 1, 0, false), (PAGE_SIZE - 1, 2, false),
            (-1, 1, false), (0, -1, false), (Int.max, 1, false), (1, Int.max, false), (Int.min, Int.min, false),
          ])
    func bounds(off: Int, len: Int, allowed: Bool) throws {
        let page = try Page.allocPage(machine, [.kernel, .zero])
        if allowed {
            #expect(throws: Never.self) { _ = try page.pointerIntoPage(off, len) }
        } else {
            #expect(throws: KernelError(.EINVAL, "offset \(off) + length \(len) exceeds the page (4096)")) {
                try page.fillZeroRaw(off, len)
            }
            if (0...2 * PAGE_SIZE).contains(len) {
                #expect(throws: KernelError.self) { try page.writeRaw([UInt8](repeating: 1, count: len), off) }
            }
        }
        #expect(try page.readRaw(0, PAGE_SIZE) == [UInt8](repeating: 0, count: PAGE_SIZE))
    }

    @Test("integers are little-endian")
    func integers() throws {
        let page = try Page.allocPage(machine, .kernel)
        try page.write(UInt64(0x0807_0605_0403_0201), at: 8)
        #expect(try page.readRaw(8, 8) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(try page.read(UInt16.self, at: 8) == 0x0201)
        #expect(try page.read(UInt32.self, at: 9) == 0x0504_0302)
        #expect(throws: KernelError.self) { try page.read(UInt64.self, at: PAGE_SIZE - 7) }
        #expect(try page.read(UInt64.self, at: PAGE_SIZE - 8) == 0)
    }

    @Test("double free and use after free are bugs naming the site")
    func useAfterFree() throws {
        let page = try Page.allocPage(machine, .kernel)
        let site = machine.sites.intern("exp.lua:12")
        try page.free(site: site)
        #expect(page.isFreed)
        #expect(throws: KernelError.bug("double free: Page{pfn=0x100, order=0} freed at exp.lua:12")) {
            try page.free()
        }
        #expect(throws: KernelError.bug("use after free: Page{pfn=0x100, order=0} freed at exp.lua:12")) {
            try page.read(UInt8.self, at: 0)
        }
        let allocator = machine.pageAllocator
        #expect(allocator.freePages + UInt64(allocator.pcpPages) == allocator.totalPages, "freed once")
    }
}

@Suite("Page allocator")
struct PageAllocatorTests {
    /// A machine of `pages` pages with no watermark (min_free_kbytes 0):
    /// every page can be allocated.
    static func unreserved(pages: UInt64) throws -> Machine {
        var config = MachineConfig(memory: pages << 12)
        config.minFreeKbytes = 0
        return try Machine(config)
    }

    @Test("every RAM page, then ENOMEM, then reuse")
    func exhaust() throws {
        let machine = try Self.unreserved(pages: 64)
        var pages: [Page] = []
        for _ in 0..<64 { pages.append(try Page.allocPage(machine, .kernel)) }
        #expect(Set(pages.map(\.pfn)).count == 64)
        // Unwrapped first: an optional UInt64 in #expect trips ASan in swift-testing (a 9-byte read of an 8-byte slot).
        #expect((pages.map(\.pfn.rawValue).max() ?? 0) == 0x100 + 63)
        #expect(throws: KernelError.self) { try Page.allocPage(machine, .kernel) }
        #expect(machine.pageAllocator.freePages == 0)
        try pages[10].free()
        #expect(try Page.allocPage(machine, .kernel).pfn == pages[10].pfn)
    }

    @Test("a random workload keeps every invariant and merges back to boot", arguments: [UInt64(1), 2, 3])
    func randomWorkload(seed: UInt64) throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20, cpus: 2, seed: seed))
        let allocator = machine.pageAllocator
        let boot = (allocator.freePages, allocator.nrFree)
        var random = Random(seed: seed)
        var held: [Page] = []
        for step in 0..<3000 {
            allocator.currentCpu = Int(random.below(2))
            if random.below(3) != 0 || held.isEmpty {
                let order = Int(random.below(random.below(4) == 0 ? 11 : 3))
                if let page = try? Page.allocPages(machine, random.below(5) == 0 ? [.kernel, .comp] : .kernel, order: order) {
                    #expect(page.pfn.rawValue % (1 << UInt64(order)) == 0)
                    held.append(page)
                }
            } else {
                try held.remove(at: Int(random.below(UInt64(held.count)))).free()
            }
            if step % 100 == 0 { try allocator.checkConsistency() }
        }
        for page in held { try page.free() }
        allocator.drainPages()
        try allocator.checkConsistency()
        #expect(allocator.freePages == boot.0)
        #expect(allocator.nrFree == boot.1)
    }

    @Test("an extra reference keeps a block; a block that is not compound keeps only its first page")
    func references() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20))
        let allocator = machine.pageAllocator
        let compound = try Page.allocPages(machine, [.kernel, .comp], order: 2)
        try allocator.getPage(compound.pfn)
        #expect(compound.refcount == 2)
        let free = allocator.freePages + UInt64(allocator.pcpPages)
        try compound.free()
        #expect(allocator.freePages + UInt64(allocator.pcpPages) == free, "still referenced: nothing freed")
        try allocator.putPage(compound.pfn)
        #expect(allocator.freePages + UInt64(allocator.pcpPages) == free + 4)

        let plain = try Page.allocPages(machine, .kernel, order: 2)
        try allocator.getPage(plain.pfn)
        let before = allocator.freePages + UInt64(allocator.pcpPages)
        try plain.free()
        #expect(allocator.freePages + UInt64(allocator.pcpPages) == before + 3, "__free_pages frees the tail pages")
        #expect(allocator.refcount(plain.pfn) == 1)
        try allocator.putPage(plain.pfn)
        #expect(allocator.refcount(plain.pfn) == 0)
        #expect(throws: KernelError.self) { try allocator.putPage(plain.pfn) }
        try allocator.checkConsistency()
    }

    @Test("freeing with the wrong order is a bug")
    func wrongOrder() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20))
        let pfn = try machine.pageAllocator.allocPages(.kernel, order: 2)
        #expect(throws: KernelError.self) { try machine.pageAllocator.freePages(pfn, order: 1) }
        try machine.pageAllocator.freePages(pfn, order: 2)
    }

    final class CountingShrinker: Shrinker {
        var held: [Page]
        var log: [String]
        init(_ pages: [Page], log: [String]) { held = pages; self.log = log }
        var seeks: Int { 2 }
        func countObjects() -> Int { held.count }
        func scanObjects(_ n: Int) -> Int {
            log.append("shrink \(n)")
            let freed = held.prefix(n)
            for page in freed { try? page.free() }
            held.removeFirst(freed.count)
            return freed.count
        }
    }

    @Test("reclaim: shrinkers from DEF_PRIORITY down, then the collector short of SWAP_CLUSTER_MAX, then ENOMEM")
    func reclaim() throws {
        let machine = try Self.unreserved(pages: 64)
        let allocator = machine.pageAllocator
        var pages: [Page] = []
        for _ in 0..<64 { pages.append(try Page.allocPage(machine, .kernel)) }
        let shrinker = CountingShrinker(Array(pages.prefix(2)), log: [])
        try allocator.register(shrinker)
        #expect(throws: KernelError.bug("shrinker_register of \(shrinker), which is registered already: list_add corruption")) {
            try allocator.register(shrinker)
        }
        var collected = 0
        allocator.collector = { collected += 1 }
        _ = try Page.allocPage(machine, .kernel)
        #expect(shrinker.log == ["shrink 2"], "2 objects: nothing to scan until priority 1 ((2 >> 1) * 4 / 2 = 2)")
        #expect(collected == 1, "2 pages are short of the 32 direct reclaim wants")
        #expect(allocator.events.allocstall[0] == 1)
        _ = try Page.allocPage(machine, .kernel)  // the other page the shrinker freed
        #expect(throws: KernelError.self) { try Page.allocPage(machine, .kernel) }
        #expect(collected == 2)
        #expect(throws: KernelError.self) { try Page.allocPage(machine, .atomic) }
        #expect(collected == 2, "atomic allocations do not reclaim")
        try allocator.unregister(shrinker)
        #expect(allocator.registeredShrinkers.isEmpty)
    }

    @Test("pressure is reported in batches of net pages: what is freed counts back")
    func pressure() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20))
        var reports: [Int] = []
        machine.pageAllocator.pressure = { reports.append($0) }
        // Freed as they go: nothing for the collector to find.
        for _ in 0..<600 { try Page.allocPage(machine, .kernel).free() }
        #expect(reports == [])
        // Held: a report every 256 pages.
        var held: [Page] = []
        for _ in 0..<600 { held.append(try Page.allocPage(machine, .kernel)) }
        #expect(reports == [256, 256])
        // Frees count back, but not below zero.
        for page in held { try page.free() }
        _ = try Page.allocPages(machine, .kernel, order: 8)
        #expect(reports == [256, 256, 256])
    }

    @Test("fault injection follows should_fail_ex")
    func faultInjection() throws {
        var random = Random(seed: 1)
        var attr = FaultAttr(interval: 2, times: 2)
        let pattern = (0..<8).map { _ in attr.shouldFailAllocPage(.kernel, order: 0, random: &random) }
        #expect(pattern == [false, true, false, true, false, false, false, false])
        #expect(attr.failures == 2)
        var nofail = FaultAttr()
        #expect(!nofail.shouldFailAllocPage([.kernel, .nofail], order: 0, random: &random))
        var ignoreReclaim = FaultAttr(ignoreGfpReclaim: true)
        #expect(!ignoreReclaim.shouldFailAllocPage(.kernel, order: 0, random: &random))
        #expect(ignoreReclaim.shouldFailAllocPage(.atomic, order: 0, random: &random))
        var minOrder = FaultAttr(minOrder: 3)
        #expect(!minOrder.shouldFailAllocPage(.kernel, order: 2, random: &random))
        #expect(minOrder.shouldFailAllocPage(.kernel, order: 3, random: &random))
    }
}

@Suite("Physical memory")
struct PhysicalMemoryTests {
    @Test("a 64 GiB machine touches two sections of page structs to boot and allocate a page")
    func large() throws {
        let machine = try Machine(MachineConfig(memory: 64 << 30))
        #expect(machine.pageAllocator.totalPages == 16 << 20)
        // RAM starts at 1 MiB: its unaligned head and tail are the only
        // blocks on free lists; the 16383 whole blocks between stay pristine.
        #expect(machine.memory.allocatedSections == 2)
        let page = try Page.allocPage(machine, .kernel)
        try page.write(UInt8(1), at: 0)
        #expect(machine.memory.allocatedSections == 2)
        try page.free()
        try machine.pageAllocator.checkConsistency()
    }

    @Test("a memory map: RAM, reserved and MMIO regions and holes")
    func memmap() throws {
        let M: UInt64 = 1 << 20
        let machine = try Machine(MachineConfig(memmap: [
            MemoryRegion(start: PhysAddr(0), size: 4 * M, kind: .ram),
            MemoryRegion(start: PhysAddr(8 * M), size: M, kind: .reserved),
            MemoryRegion(start: PhysAddr(16 * M), size: M, kind: .mmio),
        ]))
        #expect(machine.config.memory == 4 * M)
        #expect(machine.pageAllocator.totalPages == 1024)
        #expect(machine.pageAllocator.nrFree[10] == 1)
        let memory = machine.memory
        #expect(memory.pfnValid(Pfn(0)) && memory.pageIsRam(Pfn(0)))
        #expect(memory.pfnValid(PhysAddr(8 * M).pfn) && memory.pageIsRam(PhysAddr(8 * M).pfn))
        #expect(!memory.pfnValid(PhysAddr(16 * M).pfn) && !memory.pageIsRam(PhysAddr(16 * M).pfn))
        #expect(!memory.pfnValid(PhysAddr(5 * M).pfn), "a hole")
        #expect(Page.borrowPhys(machine, PhysAddr(16 * M)) == nil)
        #expect(throws: KernelError.self) { try Page.borrowPhysUnchecked(machine, PhysAddr(5 * M)) }
        let firmware = try Page.borrowPhysUnchecked(machine, PhysAddr(8 * M))
        try firmware.write(UInt32(7), at: 0)
        #expect(try firmware.read(UInt32.self, at: 0) == 7)
    }

    @Test("bad memory maps are EINVAL", arguments: [
        [MemoryRegion(start: PhysAddr(1), size: 1 << 20, kind: .ram)],
        [MemoryRegion(start: PhysAddr(0), size: 0, kind: .ram)],
        [MemoryRegion(start: PhysAddr(0), size: 2 << 20, kind: .ram), MemoryRegion(start: PhysAddr(1 << 20), size: 1 << 20, kind: .ram)],
        [MemoryRegion(start: PhysAddr(1 << 40), size: 1 << 20, kind: .ram)],
        [MemoryRegion(start: PhysAddr(UInt64.max - 4095), size: 4096, kind: .ram)],
        [MemoryRegion(start: PhysAddr(0), size: 1 << 20, kind: .mmio)],
    ])
    func badMemmap(regions: [MemoryRegion]) {
        #expect(throws: KernelError.self) { try Machine(MachineConfig(memmap: regions)) }
    }

    @Test("into_phys, from_phys and borrows")
    func ownership() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20))
        let page = try Page.allocPages(machine, .kernel, order: 1)
        try page.write(UInt64(42), at: 4096)
        let pa = try Page.intoPhys(page)
        #expect(page.isGivenAway)
        #expect(throws: KernelError.self) { try page.free() }
        #expect(throws: KernelError.self) { try Page.intoPhys(page) }
        let borrowed = try #require(Page.borrowPhys(machine, PhysAddr(pa.rawValue + 4096 + 8)))
        #expect(try borrowed.read(UInt64.self, at: 0) == 42)
        #expect(throws: KernelError.self) { try Page.fromPhys(machine, PhysAddr(pa.rawValue + 8)) }
        let back = try Page.fromPhys(machine, pa)
        #expect(back === page)
        #expect(throws: KernelError.self) { try Page.fromPhys(machine, pa) }
        try back.free(site: machine.sites.intern("t.lua:3"))
        // The first Unmovable allocation claimed the first max-order block (0x400).
        #expect(throws: KernelError.bug("use after free: BorrowedPage{pfn=0x401} freed at t.lua:3")) {
            try borrowed.read(UInt8.self, at: 0)
        }
    }

    @Test("kmap_local of highmem nests 16 deep and unmaps in reverse order; lowmem takes no slot (__kmap_local_page_prot)")
    func kmap() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20, highmem: 4 << 20))
        let page = try Page.allocPage(machine, [.kernel, .highmem])
        #expect(page.isHighmem)
        var maps: [KmapMapping] = []
        for _ in 0..<KmapLocal.maxDepth { maps.append(try page.map()) }
        #expect(maps[0].address == KmapLocal.fixaddrTop)
        #expect(maps[1].address == KmapLocal.fixaddrTop - UInt64(PAGE_SIZE))
        #expect(throws: KernelError.bug("kmap_local_page: more than 16 nested mappings")) { try page.map() }
        #expect(throws: KernelError.self) { try page.read(UInt8.self, at: 0) }
        // Lowmem is in the direct map: no slot, so it maps and reads still.
        let low = try Page.allocPage(machine, .kernel)
        #expect(!low.isHighmem)
        let direct = try low.map()
        #expect(direct.address == KmapLocal.pageOffset + low.phys.rawValue)
        #expect(!direct.slotted)
        #expect(try low.read(UInt8.self, at: 0) == low.read(UInt8.self, at: 0))
        try machine.kmap.unmap(direct)
        #expect(throws: KernelError.self) { try machine.kmap.unmap(maps[0]) }
        #expect(machine.kmap.depth == 15, "an out-of-order unmap still unmaps")
        for map in maps.dropFirst().reversed() { try machine.kmap.unmap(map) }
        #expect(machine.kmap.depth == 0)
        #expect(throws: KernelError.self) { try maps[1].pointer(0, 1) }
        #expect(try page.read(UInt8.self, at: 0) == page.read(UInt8.self, at: 0))
    }
}

/// Watermarks as mm/page_alloc.c (6.12) sets them at boot: calculate_min_free_kbytes,
/// then __setup_per_zone_wmarks. Each expected value is worked from those functions by hand.
@Suite("Zone watermarks")
struct WatermarkTests {
    @Test("min_free_kbytes is sqrt(lowmem_kbytes * 16), clamped to 128 ... 262144")
    func minFreeKbytes() {
        #expect(Watermark.minFreeKbytes(lowmemPages: 65536) == 2048)        // 256M: sqrt(262144 * 16)
        #expect(Watermark.minFreeKbytes(lowmemPages: 1_048_576) == 8192)    // 4G: sqrt(4194304 * 16)
        #expect(Watermark.minFreeKbytes(lowmemPages: 786_432) == 7094)      // 3G: sqrt(50331648) = 7094.6
        #expect(Watermark.minFreeKbytes(lowmemPages: 256) == 128, "1M: sqrt(16384) = 128, the floor")
        #expect(Watermark.minFreeKbytes(lowmemPages: 64) == 128, "below the floor")
        #expect(Watermark.minFreeKbytes(lowmemPages: 1 << 30) == 262_144, "4T: the ceiling")
    }

    @Test("a lowmem zone's min is its share; low and high step by max(share / 4, managed * scale / 10000)")
    func lowmem() throws {
        for (memory, managed, min, low, high): (UInt64, UInt64, UInt64, UInt64, UInt64) in [
            (256 << 20, 65536, 512, 640, 768),         // step max(128, 65)
            (4 << 30, 1_048_576, 2048, 3096, 4144),    // step max(512, 1048)
            (64 << 20, 16384, 256, 320, 384),          // step max(64, 16)
            (16 << 20, 4096, 128, 160, 192),           // step max(32, 4)
        ] {
            let machine = try Machine(MachineConfig(memory: memory))
            let zone = machine.pageAllocator.zones[0]
            #expect(zone.managedPages == managed)
            #expect(zone.watermark == Watermark(min: min, low: low, high: high, promo: high + (high - low)), "\(memory >> 20)M")
        }
    }

    @Test("a highmem zone's min is managed / 1024 clamped to 32 ... 128; its steps still follow the share")
    func highmem() throws {
        var config = MachineConfig(memory: 4 << 30)
        config.highmem = 1 << 30
        let zones = try Machine(config).pageAllocator.zones
        // lowmem 786432 pages: min_free_kbytes 7094, pages_min 1773; HighMem's share 1773 * 262144 / 786432 = 591.
        #expect(zones[0].watermark == Watermark(min: 1773, low: 2559, high: 3345, promo: 4131))
        #expect(zones[1].watermark == Watermark(min: 128, low: 390, high: 652, promo: 914))
        let small = Watermark.setup([(40_000, false), (8_000, true)], minFreeKbytes: 1024, scaleFactor: 10)
        #expect(small[1].min == 32, "8000 / 1024 = 7, raised to SWAP_CLUSTER_MAX")
    }

    @Test("lowmem_reserve: the managed pages above a zone over its ratio (setup_per_zone_lowmem_reserve)")
    func lowmemReserve() throws {
        #expect(Watermark.lowmemReserve(managed: [786_432, 262_144], ratios: [32, 0]) == [[0, 8192], [0, 0]])
        #expect(Watermark.lowmemReserve(managed: [100, 50, 30], ratios: [10, 5, 0]) == [[0, 5, 8], [0, 0, 6], [0, 0, 0]],
                "the sum of every zone above, up to each one")
        #expect(Watermark.lowmemReserve(managed: [0, 50], ratios: [32, 0]) == [[0, 0], [0, 0]], "an empty zone keeps nothing")
        var config = MachineConfig(memory: 4 << 30)
        config.highmem = 1 << 30
        #expect(try Machine(config).pageAllocator.zones.map(\.lowmemReserve) == [[0, 8192], [0, 0]])
        #expect(try Machine(MachineConfig(memory: 256 << 20)).pageAllocator.zones.map(\.lowmemReserve) == [[0]])
    }

    @Test("min_free_kbytes and watermark_scale_factor as given; nonsense is EINVAL")
    func tunables() throws {
        var config = MachineConfig(memory: 256 << 20)
        config.minFreeKbytes = 65536
        config.watermarkScaleFactor = 100
        let zone = try Machine(config).pageAllocator.zones[0]
        // pages_min 16384; step max(4096, 65536 * 100 / 10000 = 655)
        #expect(zone.watermark == Watermark(min: 16384, low: 20480, high: 24576, promo: 28672))
        config.minFreeKbytes = 1 << 30
        #expect(throws: KernelError(.EINVAL, "min_free_kbytes 1073741824 puts the Normal zone's min watermark (268435456 pages) above its 65536 managed pages")) {
            try Machine(config)
        }
        config.minFreeKbytes = nil
        config.watermarkScaleFactor = 0
        #expect(throws: KernelError(.EINVAL, "watermark_scale_factor must be between 1 and 3000, got 0")) { try Machine(config) }
    }
}

/// mm/vmstat.c's fragmentation indexes, worked by hand from fill_contig_page_info,
/// __fragmentation_index and unusable_free_index.
@Suite("Fragmentation indexes")
struct ContigPageInfoTests {
    @Test("counts free pages, blocks and the blocks an order could be served from")
    func counts() {
        let info = ContigPageInfo(nrFree: [3, 2, 0, 1], suitableOrder: 1)
        #expect(info == ContigPageInfo(nrFree: [3, 2, 0, 1], suitableOrder: 1))
        #expect(info.freePages == 3 + 4 + 8)
        #expect(info.freeBlocksTotal == 6)
        #expect(info.freeBlocksSuitable == 2 + 4, "two order-1 blocks, and the order-3 block split in four")
    }

    @Test("extfrag_index: -1000 when a block is free; else 1000 - (1000 + free * 1000 / requested) / blocks")
    func fragmentation() {
        #expect(ContigPageInfo(nrFree: [3, 2, 0, 1], suitableOrder: 1).fragmentationIndex(1) == -1000)
        // 2048 free single pages, order 1: 1000 - (1000 + 2048000 / 2) / 2048 = 1000 - 500
        #expect(ContigPageInfo(nrFree: [2048], suitableOrder: 1).fragmentationIndex(1) == 500)
        // 10 single pages, order 4: 1000 - (1000 + 10000 / 16) / 10 = 1000 - 162
        #expect(ContigPageInfo(nrFree: [10], suitableOrder: 4).fragmentationIndex(4) == 838)
        #expect(ContigPageInfo(nrFree: [], suitableOrder: 0).fragmentationIndex(0) == 0, "nothing free: 0")
        #expect(ContigPageInfo(nrFree: [1], suitableOrder: 11).fragmentationIndex(11) == 0, "past MAX_ORDER: 0")
    }

    @Test("unusable_index: (free - suitable << order) * 1000 / free; 1000 with nothing free")
    func unusable() {
        #expect(ContigPageInfo(nrFree: [3, 2, 0, 1], suitableOrder: 1).unusableFreeIndex(1) == (15 - 12) * 1000 / 15)
        #expect(ContigPageInfo(nrFree: [2048], suitableOrder: 1).unusableFreeIndex(1) == 1000)
        #expect(ContigPageInfo(nrFree: [2048], suitableOrder: 0).unusableFreeIndex(0) == 0)
        #expect(ContigPageInfo(nrFree: [], suitableOrder: 3).unusableFreeIndex(3) == 1000)
    }
}
