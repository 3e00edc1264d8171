/// The per-CPU page lists of a zone (`struct per_cpu_pages`, 6.12): on
/// each CPU a list per migratetype for each order up to
/// `PAGE_ALLOC_COSTLY_ORDER`, and two for `pageblock_order` (THP: Movable
/// and not), `NR_PCP_LISTS` in all. Allocations of those orders take from
/// them (`rmqueue_pcplist`), refilled from the buddy allocator in batches
/// that grow while they are used (`nr_pcp_alloc`'s `alloc_factor`); frees
/// go onto them (`free_unref_page_commit`) until the CPU holds `high`
/// pages, and then `nr_pcp_free` pages go back (`free_pcppages_bulk`).
/// `high` moves between the zone's `highMin` and `highMax` (`nr_pcp_high`):
/// up while frees come in runs, down while the zone is below its high
/// watermark or kswapd reclaims. The kernel also decays it every second
/// (`decay_pcp_high`); mmlab has no clock, so it does not.
///
/// Each list is a ring of pfns, hot at the top (the last freed is the next
/// allocated) and cold at the bottom, that grows as needed: pushing and
/// popping touch no other frame's `struct page`. One object for all CPUs,
/// so that reaching a list retains nothing.
final class PcpLists {
    /// `NR_PCP_LISTS`.
    static let lists = 3 * (PAGE_ALLOC_COSTLY_ORDER + 1) + 2
    /// `CONFIG_PCP_BATCH_SCALE_MAX` in Debian's 6.12.
    static let batchScaleMax = 5

    let cpus: Int
    private let n: Int
    /// List `l`'s ring is `rings[l]` of `capacity[l]` slots; its oldest
    /// entry is at `bottom[l]`, and it holds `counts[l]` entries.
    private let rings: UnsafeMutablePointer<UnsafeMutablePointer<UInt32>?>
    private let capacity: UnsafeMutablePointer<Int>
    private let bottom: UnsafeMutablePointer<Int>
    private let counts: UnsafeMutablePointer<Int>
    /// Per CPU: pages on its lists (`pcp->count`), `high`, `free_count`,
    /// `alloc_factor`, and whether its last free was of order 1 to 3
    /// (`PCPF_PREV_FREE_HIGH_ORDER`).
    private let pages: UnsafeMutablePointer<Int>
    private let highs: UnsafeMutablePointer<Int>
    private let freeCounts: UnsafeMutablePointer<Int>
    private let allocFactors: UnsafeMutablePointer<Int>
    private let prevFreeHighOrder: UnsafeMutablePointer<Bool>

    init(cpus: Int) {
        self.cpus = max(cpus, 1)
        n = self.cpus * PcpLists.lists
        rings = .allocate(capacity: n)
        rings.initialize(repeating: nil, count: n)
        capacity = .allocate(capacity: n)
        capacity.initialize(repeating: 0, count: n)
        bottom = .allocate(capacity: n)
        bottom.initialize(repeating: 0, count: n)
        counts = .allocate(capacity: n)
        counts.initialize(repeating: 0, count: n)
        pages = .allocate(capacity: self.cpus)
        pages.initialize(repeating: 0, count: self.cpus)
        highs = .allocate(capacity: self.cpus)
        highs.initialize(repeating: 0, count: self.cpus)
        freeCounts = .allocate(capacity: self.cpus)
        freeCounts.initialize(repeating: 0, count: self.cpus)
        allocFactors = .allocate(capacity: self.cpus)
        allocFactors.initialize(repeating: 0, count: self.cpus)
        prevFreeHighOrder = .allocate(capacity: self.cpus)
        prevFreeHighOrder.initialize(repeating: false, count: self.cpus)
    }

    deinit {
        // SAFETY: `init` and `grow` allocated these; nothing else holds them.
        for l in 0..<n { rings[l]?.deallocate() }
        rings.deallocate()
        capacity.deallocate()
        bottom.deallocate()
        counts.deallocate()
        pages.deallocate()
        highs.deallocate()
        freeCounts.deallocate()
        allocFactors.deallocate()
        prevFreeHighOrder.deallocate()
    }

    /// `pcp_allowed_order`.
    @inline(__always)
    static func allowed(_ order: Int) -> Bool { order <= PAGE_ALLOC_COSTLY_ORDER || order == PAGEBLOCK_ORDER }

    /// `order_to_pindex`: the list of `order` and `type`.
    @inline(__always)
    static func index(order: Int, type: Int) -> Int {
        order <= PAGE_ALLOC_COSTLY_ORDER ? 3 * order + type : 3 * (PAGE_ALLOC_COSTLY_ORDER + 1) + (type == 1 ? 1 : 0)
    }

    /// `pindex_to_order`.
    static func order(ofList index: Int) -> Int { index < 3 * (PAGE_ALLOC_COSTLY_ORDER + 1) ? index / 3 : PAGEBLOCK_ORDER }

    /// A valid CPU (an out-of-range one uses the first).
    @inline(__always)
    func valid(_ cpu: Int) -> Int { cpu >= 0 && cpu < cpus ? cpu : 0 }

    @inline(__always)
    private func slot(_ l: Int, _ i: Int) -> Int {
        // SAFETY: `l` is below `n`, so its bottom and capacity are initialized.
        let j = bottom[l] + i
        return j >= capacity[l] ? j - capacity[l] : j
    }

    /// Pages on `cpu`'s lists (`pcp->count`).
    func count(_ cpu: Int) -> Int {
        // SAFETY: `valid` keeps the index inside `pages`.
        pages[valid(cpu)]
    }

    /// Entries on `cpu`'s list `index`.
    func entries(_ cpu: Int, _ index: Int) -> Int {
        // SAFETY: a valid CPU's list is below `n`.
        counts[valid(cpu) * PcpLists.lists + index]
    }

    var total: Int { (0..<cpus).reduce(0) { $0 + count($1) } }

    /// Doubles list `l`'s ring, its entries in order from the bottom.
    private func grow(_ l: Int) {
        // SAFETY: `l` is below `n`; the new ring holds every entry of the old one.
        let old = rings[l], oldCapacity = capacity[l]
        let new = UnsafeMutablePointer<UInt32>.allocate(capacity: max(16, oldCapacity * 2))
        if let old {
            for i in 0..<counts[l] { new[i] = old[slot(l, i)] }
            old.deallocate()
        }
        rings[l] = new
        capacity[l] = max(16, oldCapacity * 2)
        bottom[l] = 0
    }

    /// `list_add`: a block of `order` onto the top of its list.
    @inline(__always)
    func push(_ cpu: Int, _ index: Int, _ pfn: UInt32, order: Int) {
        let cpu = valid(cpu), l = cpu * PcpLists.lists + index
        // SAFETY: `l` is below `n`; after `grow` the ring has room for one more.
        if counts[l] == capacity[l] { grow(l) }
        rings[l]?[slot(l, counts[l])] = pfn
        counts[l] += 1
        pages[cpu] += 1 << order
    }

    /// `list_add_tail`: a block onto the bottom (a refill keeps its order).
    func pushCold(_ cpu: Int, _ index: Int, _ pfn: UInt32, order: Int) {
        let cpu = valid(cpu), l = cpu * PcpLists.lists + index
        // SAFETY: `l` is below `n`; after `grow` the ring has room for one more.
        if counts[l] == capacity[l] { grow(l) }
        bottom[l] = bottom[l] == 0 ? capacity[l] - 1 : bottom[l] - 1
        rings[l]?[bottom[l]] = pfn
        counts[l] += 1
        pages[cpu] += 1 << order
    }

    /// The hottest block of a list.
    @inline(__always)
    func pop(_ cpu: Int, _ index: Int) -> UInt32? {
        let cpu = valid(cpu), l = cpu * PcpLists.lists + index
        // SAFETY: `l` is below `n`; `slot` of an index below count is inside its ring.
        guard counts[l] > 0, let ring = rings[l] else { return nil }
        counts[l] -= 1
        pages[cpu] -= 1 << PcpLists.order(ofList: index)
        return ring[slot(l, counts[l])]
    }

    /// The coldest block of a list (`list_last_entry`).
    func popCold(_ cpu: Int, _ index: Int) -> UInt32? {
        let cpu = valid(cpu), l = cpu * PcpLists.lists + index
        // SAFETY: `l` is below `n`; the bottom slot of a list with entries is inside its ring.
        guard counts[l] > 0, let ring = rings[l] else { return nil }
        let pfn = ring[bottom[l]]
        bottom[l] = bottom[l] + 1 == capacity[l] ? 0 : bottom[l] + 1
        counts[l] -= 1
        pages[cpu] -= 1 << PcpLists.order(ofList: index)
        return pfn
    }

    /// `cpu`'s blocks with their orders, list by list, coldest first.
    func blocks(_ cpu: Int) -> [(pfn: UInt32, order: Int)] {
        let cpu = valid(cpu)
        return (0..<PcpLists.lists).flatMap { index -> [(pfn: UInt32, order: Int)] in
            let l = cpu * PcpLists.lists + index
            // SAFETY: `l` is below `n`; `slot` of an index below count is inside its ring.
            guard let ring = rings[l] else { return [] }
            return (0..<counts[l]).map { (ring[slot(l, $0)], PcpLists.order(ofList: index)) }
        }
    }

    /// `cpu`'s `high`, clamped into the zone's bounds as `nr_pcp_high` and
    /// `nr_pcp_alloc` do first.
    func high(_ cpu: Int, _ zone: Zone) -> Int {
        let cpu = valid(cpu)
        // SAFETY: a valid CPU's index.
        highs[cpu] = min(max(highs[cpu], zone.highMin), zone.highMax)
        return highs[cpu]
    }

    // MARK: The kernel's sizing (mm/page_alloc.c)

    /// `nr_pcp_alloc`: how many blocks a refill of `order` takes. Order-0
    /// refills grow by `alloc_factor`, which each refill that fits below
    /// `high` raises, up to `batch << CONFIG_PCP_BATCH_SCALE_MAX`; and
    /// `high` grows by the batch while the zone is not below its high watermark.
    func allocCount(_ cpu: Int, _ zone: Zone, order: Int) -> Int {
        let cpu = valid(cpu), base = zone.batch
        var high = self.high(cpu, zone)
        // SAFETY: a valid CPU's index.
        guard high >= base else { return 1 }
        var batch = order > 0 ? base : base << allocFactors[cpu]
        if zone.highMin != zone.highMax, !zone.belowHigh {
            high = min(high + batch, zone.highMax)
            highs[cpu] = high
        }
        if order == 0 {
            let maxAlloc = max(high - pages[cpu] - base, base)
            if batch <= maxAlloc, allocFactors[cpu] < PcpLists.batchScaleMax { allocFactors[cpu] += 1 }
            batch = min(batch, maxAlloc)
        }
        if batch > 1 { batch = max(batch >> order, 2) }
        return batch
    }

    /// `rmqueue_pcplist`'s bookkeeping: an allocation halves `free_count`.
    @inline(__always)
    func allocated(_ cpu: Int) {
        // SAFETY: a valid CPU's index.
        freeCounts[valid(cpu)] >>= 1
    }

    /// `free_unref_page_commit` after the block went on its list: how many
    /// pages go back to the buddy allocator now (0: none).
    func freeCount(_ cpu: Int, _ zone: Zone, order: Int) -> Int {
        let cpu = valid(cpu), batch = zone.batch
        // SAFETY: a valid CPU's index.
        allocFactors[cpu] >>= 1
        var freeHigh = false
        if order > 0 && order <= PAGE_ALLOC_COSTLY_ORDER {
            // PCPF_FREE_HIGH_BATCH is set only for a zone that is its node's last (not here).
            freeHigh = freeCounts[cpu] >= batch && prevFreeHighOrder[cpu]
            prevFreeHighOrder[cpu] = true
        } else {
            prevFreeHighOrder[cpu] = false
        }
        if freeCounts[cpu] < batch << PcpLists.batchScaleMax { freeCounts[cpu] += 1 << order }
        let high = nrPcpHigh(cpu, zone, freeHigh: freeHigh)
        guard pages[cpu] >= high else { return 0 }
        return nrPcpFree(cpu, zone, high: high, freeHigh: freeHigh)
    }

    /// `nr_pcp_high`: the `high` this free is measured against, adjusting
    /// `pcp->high` on the way.
    private func nrPcpHigh(_ cpu: Int, _ zone: Zone, freeHigh: Bool) -> Int {
        let batch = zone.batch
        var high = self.high(cpu, zone)
        // SAFETY: `cpu` is valid (the caller's).
        guard high > 0 else { return 0 }
        if freeHigh {
            highs[cpu] = max(high - (batch << PcpLists.batchScaleMax), zone.highMin)
            return 0
        }
        if zone.reclaimActive {
            highs[cpu] = max(high - max(freeCounts[cpu], batch), zone.highMin)
            return min(batch << 2, highs[cpu])
        }
        if zone.highMin == zone.highMax { return high }
        if zone.belowHigh {
            highs[cpu] = max(high - max(freeCounts[cpu], batch), zone.highMin)
            high = max(pages[cpu], zone.highMin)
        } else if pages[cpu] >= high {
            let need = freeCounts[cpu] + batch
            if highs[cpu] < need { highs[cpu] = min(max(need, zone.highMin), zone.highMax) }
        }
        return high
    }

    /// `nr_pcp_free`: all a batch-scaled run of high-order frees, else
    /// `free_count` clamped to leave a batch (`batch` ... `high - batch`).
    private func nrPcpFree(_ cpu: Int, _ zone: Zone, high: Int, freeHigh: Bool) -> Int {
        let batch = zone.batch
        // SAFETY: `cpu` is valid (the caller's).
        if freeHigh { return min(pages[cpu], batch << PcpLists.batchScaleMax) }
        if high < batch { return 1 }
        return min(max(freeCounts[cpu], batch), max(high - batch, batch))
    }
}

extension PageAllocator {
    /// `rmqueue_pcplist`: the head of this CPU's list of `order` and
    /// `type`, refilled when empty by `rmqueue_bulk` (the blocks in the
    /// order taken, the first taken handed out first).
    func allocatePcp(_ zone: Zone, order: Int = 0, _ type: MigrateType) throws(KernelError) -> UInt64? {
        let cpu = currentCpu, index = PcpLists.index(order: order, type: type.rawValue)
        let pcp = zone.pcp
        pcp.allocated(cpu)
        if pcp.entries(cpu, index) == 0 {
            for _ in 0..<pcp.allocCount(cpu, zone, order: order) {
                guard let pfn = try rmqueue(zone, order: order, type: type) else { break }
                if let page = memory.existingPage(Pfn(pfn)) {
                    page.pointee.flags = StructPage.Flag.pcp
                    page.pointee.order = UInt8(order)
                }
                pcp.pushCold(cpu, index, UInt32(pfn), order: order)
            }
        }
        return pcp.pop(cpu, index).map { UInt64($0) }
    }

    /// `free_unref_page`: onto this CPU's list of the block's pageblock
    /// type; past `high`, `nr_pcp_free` pages go back, coldest first, list
    /// after list from this one (`free_pcppages_bulk`).
    func freePcp(_ pfn: UInt64, _ page: UnsafeMutablePointer<StructPage>, order: Int, zone: Zone) {
        page.pointee.flags = StructPage.Flag.pcp
        page.pointee.order = UInt8(order)
        let cpu = currentCpu, pcp = zone.pcp
        let index = PcpLists.index(order: order, type: blockType(pfn).rawValue)
        pcp.push(cpu, index, UInt32(pfn), order: order)
        let count = pcp.freeCount(cpu, zone, order: order)
        guard count > 0 else { return }
        freeBulk(zone, cpu: cpu, count: count, from: index)
        if zone.belowHigh, zone.watermarkOk(order: 0, mark: zone.watermark.high, highestZone: zones.count - 1, flags: [],
                                            free: Int64(zone.freePages)) {
            zone.belowHigh = false
        }
    }

    /// `free_pcppages_bulk`: `count` pages (at most all), each list emptied
    /// before the next, from list `first` on.
    func freeBulk(_ zone: Zone, cpu: Int, count: Int, from first: Int) {
        let pcp = zone.pcp
        var left = min(count, pcp.count(cpu)), index = first - 1
        while left > 0 {
            repeat { index = index + 1 == PcpLists.lists ? 0 : index + 1 } while pcp.entries(cpu, index) == 0
            let order = PcpLists.order(ofList: index)
            while left > 0, let pfn = pcp.popCold(cpu, index) {
                freeOne(UInt64(pfn), order: order, zone: zone)
                left -= 1 << order
            }
        }
    }
}
