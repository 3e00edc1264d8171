import Testing
@testable import MMCore

/// The high-atomic reserve of mm/page_alloc.c: `reserve_highatomic_pageblock`,
/// `unreserve_highatomic_pageblock`, `rmqueue_buddy`'s use of it and
/// `__zone_watermark_unusable_free`.
@Suite("The high-atomic reserve (mm/page_alloc.c)")
struct HighatomicTests {
    /// 256M (65536 pages, 128 pageblocks): 1% of it is 655 pages, which
    /// ALIGN rounds up to two pageblocks. With min_free_kbytes 240000 the
    /// low watermark (75000) is above what is free, so every allocation
    /// takes the slow path, where GFP_ATOMIC has ALLOC_HIGHATOMIC above
    /// order 0 and its min (22500) is met.
    func machine(minFreeKbytes: UInt64 = 240_000, memory: UInt64 = 256 << 20) throws -> Machine {
        var config = MachineConfig(memory: memory, cpus: 1)
        config.minFreeKbytes = minFreeKbytes
        return try Machine(config)
    }

    @Test("a high-order atomic allocation under pressure reserves its pageblock, up to 1% of the zone rounded up to pageblocks")
    func reserve() throws {
        let machine = try machine()
        let allocator = machine.pageAllocator
        let zone = allocator.zones[0]
        #expect(zone.managedPages == 65536 && zone.watermark.low == 75000)
        let first = try Page.allocPages(machine, .atomic, order: 2)
        #expect(allocator.blockType(first.pfn.rawValue) == .highatomic)
        #expect(zone.nrReservedHighatomic == 512)
        #expect(zone.nrFreeHighatomic > 0, "the pageblock's free blocks moved to the reserve's lists")
        try allocator.checkConsistency()
        var held = [first]
        for _ in 0..<300 { held.append(try Page.allocPages(machine, .atomic, order: 2)) }
        #expect(zone.nrReservedHighatomic == 1024, "ALIGN(65536 / 100, 512): two pageblocks, no more")
        #expect(allocator.pageblockCounts(zone)[MigrateType.highatomic.rawValue] == 2)
        let order0 = try Page.allocPage(machine, .atomic)
        #expect(allocator.blockType(order0.pfn.rawValue) != .highatomic, "order 0 has no ALLOC_HIGHATOMIC")
        held.append(order0)
        for page in held { try page.free() }
        allocator.drainPages()
        try allocator.checkConsistency()
        #expect(zone.nrReservedHighatomic == 1024, "freed, the pages go back to the reserve's lists")
        #expect(zone.nrFreeHighatomic == 1024)
        #expect(allocator.pagetypeinfo.contains("\nNumber of blocks type     Unmovable      Movable  Reclaimable   HighAtomic \n"))
    }

    @Test("a zone whose 1% is less than a pageblock reserves nothing")
    func smallZone() throws {
        let machine = try machine(minFreeKbytes: 15_000, memory: 16 << 20)  // 4096 pages: low 4687 > free
        let page = try Page.allocPages(machine, .atomic, order: 2)
        #expect(machine.pageAllocator.blockType(page.pfn.rawValue) == .unmovable)
        #expect(machine.pageAllocator.zones[0].nrReservedHighatomic == 0)
        try page.free()
    }

    @Test("allocations without a right to reserves do not count the free reserve as free")
    func unusableFree() throws {
        let machine = try machine()
        let zone = machine.pageAllocator.zones[0]
        let page = try Page.allocPages(machine, .atomic, order: 2)
        let usable = Int64(zone.freePages) - Int64(zone.nrFreeHighatomic)
        #expect(zone.nrFreeHighatomic > 0)
        #expect(zone.unusableFree(order: 0, flags: .wmarkLow) == Int64(zone.nrFreeHighatomic))
        #expect(zone.unusableFree(order: 2, flags: .minReserve) == 3, "a right to reserves counts the reserve")
        #expect(zone.watermarkOk(order: 0, mark: UInt64(usable - 1), highestZone: 0, flags: .wmarkLow, free: Int64(zone.freePages)))
        #expect(!zone.watermarkOk(order: 0, mark: UInt64(usable), highestZone: 0, flags: .wmarkLow, free: Int64(zone.freePages)))
        #expect(!zone.watermarkFast(order: 0, mark: UInt64(usable), highestZone: 0, flags: .wmarkLow))
        #expect(zone.watermarkOk(order: 0, mark: UInt64(usable), highestZone: 0, flags: .oom, free: Int64(zone.freePages)))
        try page.free()
    }

    /// A 256M machine without watermarks whose one reserved pageblock is
    /// all that is free.
    func onlyTheReserveFree() throws -> (Machine, [Page]) {
        let machine = try machine(minFreeKbytes: 0)
        let allocator = machine.pageAllocator
        let zone = allocator.zones[0]
        let first = try Page.allocPage(machine, .kernel)
        allocator.reserveHighatomic(zone, first.pfn.rawValue, order: 0)
        #expect(zone.nrReservedHighatomic == 512)
        // __GFP_NORETRY gives up after one reclaim, which leaves a zone its last reserved pageblock.
        let held = try [first] + (0...MAX_ORDER).reversed().flatMap { try allocateAll(machine, order: $0) }
        #expect(zone.freePages > 0 && zone.freePages == zone.nrFreeHighatomic)
        return (machine, held)
    }

    /// Pages of `order` until there is none (ENOMEM).
    func allocateAll(_ machine: Machine, order: Int) throws -> [Page] {
        var pages: [Page] = []
        while let page = try allocateOrNil(machine, order: order) { pages.append(page) }
        return pages
    }

    func allocateOrNil(_ machine: Machine, order: Int) throws -> Page? {
        do {
            return try Page.allocPages(machine, [.kernel, .noretry], order: order)
        } catch {
            guard error.errno == .ENOMEM else { throw error }
            return nil
        }
    }

    @Test("with only the reserve free, an allocation that cannot block takes from it; one that may reclaim gives it back before the OOM killer")
    func lastResort() throws {
        let (machine, held) = try onlyTheReserveFree()
        let allocator = machine.pageAllocator
        let zone = allocator.zones[0]
        let atomic = try Page.allocPage(machine, .atomic)
        #expect(allocator.blockType(atomic.pfn.rawValue) == .highatomic, "rmqueue_buddy: ALLOC_NON_BLOCK takes the reserve last")
        #expect(try allocateOrNil(machine, order: 0) == nil)
        #expect(zone.nrReservedHighatomic == 512, "not forced, a zone keeps its last reserved pageblock")
        let kernel = try Page.allocPage(machine, .kernel)
        #expect(zone.nrReservedHighatomic == 0, "should_reclaim_retry gave it back, forced, before the OOM killer")
        #expect(allocator.blockType(kernel.pfn.rawValue) == .unmovable)
        #expect(allocator.blockType(atomic.pfn.rawValue) == .unmovable, "the whole pageblock went back to the allocation's type")
        #expect(zone.nrFreeHighatomic == 0)
        try allocator.checkConsistency()
        for page in held + [atomic, kernel] { try page.free() }
        allocator.drainPages()
        try allocator.checkConsistency()
    }

    /// Order-2 GFP_ATOMIC pages until the reserve is full (two pageblocks).
    func reserveTwoPageblocks(_ machine: Machine) throws -> [Page] {
        var held: [Page] = []
        while machine.pageAllocator.zones[0].nrReservedHighatomic < 1024 { held.append(try Page.allocPages(machine, .atomic, order: 2)) }
        return held
    }

    @Test("unreserve_highatomic_pageblock keeps a zone's last pageblock unless forced")
    func unreserve() throws {
        let machine = try machine()
        let allocator = machine.pageAllocator
        let zone = allocator.zones[0]
        let held = try reserveTwoPageblocks(machine)
        // One page kept in each reserved pageblock: two free pageblocks side
        // by side would merge into one block, which gives back both at once.
        var kept: [UInt64: Page] = [:]
        for page in held {
            let block = page.pfn.rawValue >> UInt64(PAGEBLOCK_ORDER)
            if allocator.blockType(page.pfn.rawValue) == .highatomic, kept[block] == nil { kept[block] = page } else { try page.free() }
        }
        #expect(kept.count == 2)
        allocator.drainPages()
        let results = try [(Gfp.kernel, false), (.kernel, false), (.highuserMovable, true), (.kernel, true)].map { gfp, force in
            let given = try allocator.unreserveHighatomic(gfp, force: force)
            return (given, zone.nrReservedHighatomic)
        }
        #expect(results.map(\.0) == [true, false, true, false], "a zone keeps its last pageblock unless forced; then nothing is left")
        #expect(results.map(\.1) == [512, 512, 0, 0])
        #expect(zone.nrFreeHighatomic == 0)
        #expect(allocator.pageblockCounts(zone)[MigrateType.highatomic.rawValue] == 0)
        try allocator.checkConsistency()
        for page in kept.values { try page.free() }
    }

    @Test("two free reserved pageblocks side by side merge, and go back together")
    func unreserveMerged() throws {
        let machine = try machine()
        let allocator = machine.pageAllocator
        let zone = allocator.zones[0]
        for page in try reserveTwoPageblocks(machine) { try page.free() }
        allocator.drainPages()
        #expect(zone.nrFree(MAX_ORDER, .highatomic) == 1)
        #expect(try allocator.unreserveHighatomic(.kernel, force: false))
        #expect(zone.nrReservedHighatomic == 0, "max(pageblock_nr_pages, 1 << order) of an order-10 block: both")
        #expect(zone.nrFree(MAX_ORDER, .unmovable) >= 1)
        try allocator.checkConsistency()
    }
}
