import Testing
@testable import MMCore

@Suite("Per-CPU page lists (struct per_cpu_pages)")
struct PerCpuPagesTests {
    @Test("zone_batchsize and zone_highsize", arguments: [
        // memory, cpus -> batch, high_min, high_max
        (UInt64(256) << 20, 4, 15, 160, 2048),
        (UInt64(16) << 20, 1, 1, 160, 512),
        (UInt64(4) << 30, 2, 63, 1548, 65536),  // low 3096
    ])
    func sizes(memory: UInt64, cpus: Int, batch: Int, highMin: Int, highMax: Int) throws {
        let zone = try Machine(MachineConfig(memory: memory, cpus: cpus)).pageAllocator.zones[0]
        #expect(zone.batch == batch)
        #expect(zone.highMin == highMin, "max(low / cpus, batch * 4), low \(zone.watermark.low)")
        #expect(zone.highMax == highMax, "max(managed / 8 / cpus, batch * 4)")
    }

    @Test("nr_pcp_alloc: refills double while they fit below high, which grows by each batch")
    func refills() throws {
        let machine = try Machine(MachineConfig(memory: 256 << 20, cpus: 4))
        let allocator = machine.pageAllocator
        let zone = allocator.zones[0]
        var held: [Page] = []
        var counts: [Int] = []
        for _ in 0..<(15 + 30 + 60 + 120) {
            held.append(try Page.allocPage(machine, .kernel))
            if zone.pcp.count(0) == 0 || counts.isEmpty || zone.pcp.count(0) > counts.last ?? 0 { counts.append(zone.pcp.count(0)) }
        }
        #expect(counts == [14, 0, 29, 0, 59, 0, 119, 0], "batches of 15, 30, 60, 120")
        #expect(zone.pcpHigh(0) == 160 + 15 + 30 + 60 + 120)
        for page in held { try page.free() }
        allocator.drainPages()
        try allocator.checkConsistency()
    }

    @Test("free_unref_page_commit: at high, nr_pcp_free gives back free_count clamped to high - batch, and high rises for the run")
    func frees() throws {
        let machine = try Machine(MachineConfig(memory: 256 << 20, cpus: 4))
        let zone = machine.pageAllocator.zones[0]
        let pcp = zone.pcp
        #expect(pcp.high(0, zone) == 160)
        var returned: [Int] = []
        for i in 0..<160 {
            pcp.push(0, 0, UInt32(0x10000 + i), order: 0)  // the counts only: nothing is freed here
            returned.append(pcp.freeCount(0, zone, order: 0))
        }
        #expect(returned.dropLast().allSatisfy { $0 == 0 }, "below high nothing goes back")
        #expect(returned.last == 145, "free_count 160, clamped to high 160 - batch 15")
        #expect(pcp.high(0, zone) == 175, "need_high: free_count + batch")
        while pcp.popCold(0, 0) != nil {}
    }

    @Test("orders 1 to 3 and pageblock_order use their own lists; other orders go straight to the buddy allocator")
    func orders() throws {
        let machine = try Machine(MachineConfig(memory: 256 << 20, cpus: 1))
        let allocator = machine.pageAllocator
        let zone = allocator.zones[0]
        for order in [1, 2, 3, 9] {
            let page = try Page.allocPages(machine, .kernel, order: order)
            #expect(zone.pcp.entries(0, PcpLists.index(order: order, type: allocator.blockType(page.pfn.rawValue).rawValue)) >= 1,
                    "order \(order): the refill left blocks on its list")
            try page.free()
        }
        let pages = zone.pcp.count(0)
        let big = try Page.allocPages(machine, .kernel, order: 4)
        try big.free()
        #expect(zone.pcp.count(0) == pages, "order 4 is not pcp_allowed_order")
        #expect(PcpLists.index(order: 9, type: MigrateType.movable.rawValue) == 13 && PcpLists.index(order: 9, type: 0) == 12)
        allocator.drainPages()
        #expect(allocator.pcpPages == 0)
        try allocator.checkConsistency()
    }
}
