import Testing
@testable import MMCore

@Suite("Migratetypes and fallback (mm/page_alloc.c)")
struct MigratetypeTests {
    /// 16M without watermarks: pfns 0x100-0x1100, eight pageblocks.
    func machine() throws -> Machine {
        var config = MachineConfig(memory: 16 << 20, cpus: 1)
        config.minFreeKbytes = 0
        return try Machine(config)
    }

    @Test("gfp_migratetype and the fallbacks[] table")
    func types() {
        #expect(MigrateType(gfp: .kernel) == .unmovable)
        #expect(MigrateType(gfp: .highuserMovable) == .movable)
        #expect(MigrateType(gfp: [.kernel, .reclaimable]) == .reclaimable)
        #expect(MigrateType.unmovable.fallbacks == [.reclaimable, .movable])
        #expect(MigrateType.movable.fallbacks == [.reclaimable, .unmovable])
        #expect(MigrateType.reclaimable.fallbacks == [.unmovable, .movable])
        #expect(MigrateType.movable.canSteal(order: 3, mobilityDisabled: false) == false, "Movable claims from pageblock_order / 2 (4) up")
        #expect(MigrateType.movable.canSteal(order: 4, mobilityDisabled: false))
        #expect(MigrateType.movable.canSteal(order: 0, mobilityDisabled: true), "on a machine too small to group by mobility, always")
        #expect(MigrateType.unmovable.canSteal(order: 0, mobilityDisabled: false))
    }

    @Test("every pageblock starts Movable; the first Unmovable allocation claims the largest Movable block whole")
    func claimWhole() throws {
        let machine = try machine()
        let allocator = machine.pageAllocator
        let zone = allocator.zones[0]
        #expect(allocator.pageblockCounts(zone) == [0, 8, 0, 0])
        let page = try Page.allocPage(machine, .kernel)
        #expect(page.pfn.rawValue == 0x400, "claimed from MAX_ORDER down: the first pristine block")
        #expect(allocator.blockType(0x400) == .unmovable && allocator.blockType(0x600) == .unmovable)
        #expect((0...9).map { zone.nrFree($0, .unmovable) } == [Int](repeating: 1, count: 10), "its halves, Unmovable")
        #expect(allocator.pageblockCounts(zone) == [2, 6, 0, 0])
        let movable = try Page.allocPage(machine, .highuserMovable)
        #expect(movable.pfn.rawValue == 0x100, "Movable takes its own smallest block")
        try page.free()
        try movable.free()
        allocator.drainPages()
        try allocator.checkConsistency()
        #expect(allocator.pagetypeinfo == """
            Page block order: 9
            Pages per block:  512

            Free pages count per migrate type at order       0      1      2      3      4      5      6      7      8      9     10 
            Node    0, zone   Normal, type    Unmovable      0      0      0      0      0      0      0      0      0      0      1 
            Node    0, zone   Normal, type      Movable      0      0      0      0      0      0      0      0      2      1      2 
            Node    0, zone   Normal, type  Reclaimable      0      0      0      0      0      0      0      0      0      0      0 
            Node    0, zone   Normal, type   HighAtomic      0      0      0      0      0      0      0      0      0      0      0 

            Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic 
            Node 0, zone   Normal            2            6            0            0 

            """, "freed, the block merges back whole, still Unmovable")
    }

    /// Fills memory with Movable pages, marks them anonymous (movable, as
    /// LRU pages), and returns them.
    func fillMovable(_ machine: Machine) -> [Page] {
        var held: [Page] = []
        while let page = try? Page.allocPage(machine, .movable) {  // gfp without reclaim: the failure ends the fill
            machine.pageAllocator.markAnonymous(page.pfn)
            held.append(page)
        }
        machine.pageAllocator.drainPages()
        return held
    }

    @Test("a pageblock mostly of movable pages is not claimed: the block is stolen and its pageblock stays Movable")
    func steal() throws {
        let machine = try machine()
        let allocator = machine.pageAllocator
        var held = fillMovable(machine)
        let victim = held.removeLast()
        let pfn = victim.pfn.rawValue
        try victim.free()
        allocator.drainPages()
        let page = try Page.allocPage(machine, [])
        #expect(page.pfn.rawValue == pfn)
        #expect(allocator.blockType(pfn) == .movable, "1 free + 0 alike of 512: __rmqueue_steal")
        try page.free()
        for p in held { try p.free() }
        allocator.drainPages()
        try allocator.checkConsistency()
    }

    @Test("a pageblock at least half free, or half free and unmovable, is claimed: its free blocks move to Unmovable")
    func claimPageblock() throws {
        let machine = try machine()
        let allocator = machine.pageAllocator
        var held = fillMovable(machine)
        // Free the upper half of the pageblock at 0x800: one order-8 block.
        let half = held.filter { (0x900..<0xa00).contains($0.pfn.rawValue) }
        held.removeAll { (0x900..<0xa00).contains($0.pfn.rawValue) }
        for p in half { try p.free() }
        allocator.drainPages()
        #expect(allocator.zones[0].nrFree(8, .movable) == 1)
        let page = try Page.allocPage(machine, [])
        #expect(allocator.blockType(0x800) == .unmovable, "256 free of 512: claimed")
        #expect((0x900..<0xa00).contains(page.pfn.rawValue))
        #expect(allocator.zones[0].nrFree(7, .unmovable) == 1 && allocator.zones[0].nrFree(8, .movable) == 0)
        // In the pageblock at 0xa00, 100 free and 200 allocated pages that
        // are not movable: 300 alike pages claim it for Unmovable.
        let block = held.filter { (0xa00..<0xc00).contains($0.pfn.rawValue) }
        for p in block[0..<200] { machine.memory.existingPage(p.pfn)?.pointee.flags &= ~StructPage.Flag.anonymous }
        for p in block[412...] { try p.free() }
        held.removeAll { p in block[412...].contains { $0 === p } }
        allocator.drainPages()
        for _ in 0..<255 { held.append(try Page.allocPage(machine, [])) }  // the rest of 0x900's block
        let next = try Page.allocPage(machine, [])
        #expect(allocator.blockType(0xa00) == .unmovable, "100 free + 200 unmovable >= 256")
        #expect((0xa00..<0xc00).contains(next.pfn.rawValue))
        for p in held + [page, next] { try p.free() }
        allocator.drainPages()
        try allocator.checkConsistency()
    }

    @Test("a page goes to the per-CPU list of its pageblock's type, whatever type allocated it")
    func pcpByBlock() throws {
        let machine = try machine()
        let allocator = machine.pageAllocator
        let zone = allocator.zones[0]
        var held = fillMovable(machine)
        let page = held.removeLast()
        try page.free()
        allocator.drainPages()
        let stolen = try Page.allocPage(machine, [])  // Unmovable, from a Movable pageblock
        try stolen.free()
        #expect(zone.pcp.entries(0, PcpLists.index(order: 0, type: MigrateType.movable.rawValue)) == 1 && zone.pcp.entries(0, PcpLists.index(order: 0, type: MigrateType.unmovable.rawValue)) == 0)
        for p in held { try p.free() }
        allocator.drainPages()
        try allocator.checkConsistency()
    }

    @Test("the frame map tells each cell's pageblock migratetype, which plot.memory draws under it")
    func frameMap() throws {
        let machine = try machine()
        let page = try Page.allocPage(machine, .kernel)  // 0x400-0x7ff becomes Unmovable
        let map = machine.pageAllocator.frameMap(cells: 8, range: 0x200..<0xa00)
        #expect(map.framesPerCell == 256)
        #expect(map.cells.map(\.pageblockType) == [.movable, .movable, .unmovable, .unmovable, .unmovable, .unmovable, .movable, .movable])
        try page.free()
    }
}
