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
    /// One list: its ring of `capacity` slots, its oldest entry at
    /// `bottom`, `count` entries.
    private struct List {
        var ring: UnsafeMutablePointer<UInt32>?
        var capacity = 0
        var bottom = 0
        var count = 0

        @inline(__always)
        func slot(_ i: Int) -> Int {
            let j = bottom + i
            return j >= capacity ? j - capacity : j
        }
    }
    /// One CPU's: pages on its lists (`pcp->count`), `high`, `free_count`,
    /// `alloc_factor`, and whether its last free was of order 1 to 3
    /// (`PCPF_PREV_FREE_HIGH_ORDER`).
    private struct Cpu {
        var pages = 0
        var high = 0
        var freeCount = 0
        var allocFactor = 0
        var prevFreeHighOrder = false
    }
    /// CPU `c`'s list `i` is `lists[c * PcpLists.lists + i]`.
    private let lists: UnsafeMutablePointer<List>
    private let perCpu: UnsafeMutablePointer<Cpu>

    init(cpus: Int) {
        self.cpus = max(cpus, 1)
        n = self.cpus * PcpLists.lists
        lists = .allocate(capacity: n)
        lists.initialize(repeating: List(), count: n)
        perCpu = .allocate(capacity: self.cpus)
        perCpu.initialize(repeating: Cpu(), count: self.cpus)
    }

    deinit {
        // SAFETY: `init` and `grow` allocated these; nothing else holds them.
        for l in 0..<n { lists[l].ring?.deallocate() }
        lists.deallocate()
        perCpu.deallocate()
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
    @inline(__always)
    static func order(ofList index: Int) -> Int { index < 3 * (PAGE_ALLOC_COSTLY_ORDER + 1) ? index / 3 : PAGEBLOCK_ORDER }

    /// A valid CPU (an out-of-range one uses the first).
    @inline(__always)
    func valid(_ cpu: Int) -> Int { UInt(bitPattern: cpu) < UInt(cpus) ? cpu : 0 }

    /// `cpu`'s state, for a CPU `valid` returned.
    @inline(__always)
    private func state(_ cpu: Int) -> UnsafeMutablePointer<Cpu> {
        // SAFETY: `cpu` is below `cpus`, the count `perCpu` holds.
        perCpu + cpu
    }

    /// `cpu`'s list `index`, for a CPU `valid` returned and an index below `lists`.
    @inline(__always)
    private func list(_ cpu: Int, _ index: Int) -> UnsafeMutablePointer<List> {
        // SAFETY: `cpu * lists + index` is below `n`, the count `lists` holds.
        lists + (cpu * PcpLists.lists + index)
    }

    /// Pages on `cpu`'s lists (`pcp->count`).
    func count(_ cpu: Int) -> Int { state(valid(cpu)).pointee.pages }

    /// Entries on `cpu`'s list `index`.
    @inline(__always)
    func entries(_ cpu: Int, _ index: Int) -> Int { list(valid(cpu), index).pointee.count }

    var total: Int { (0..<cpus).reduce(0) { $0 + count($1) } }

    /// Doubles a list's ring, its entries in order from the bottom.
    private func grow(_ list: UnsafeMutablePointer<List>) {
        let old = list.pointee, capacity = max(16, old.capacity * 2)
        let new = UnsafeMutablePointer<UInt32>.allocate(capacity: capacity)
        if let ring = old.ring {
            // SAFETY: the new ring holds every entry of the old one; `slot` of an index below count is inside the old.
            for i in 0..<old.count { new[i] = ring[old.slot(i)] }
            ring.deallocate()
        }
        list.pointee = List(ring: new, capacity: capacity, bottom: 0, count: old.count)
    }

    /// `list_add`: a block of `order` onto the top of its list.
    @inline(__always)
    func push(_ cpu: Int, _ index: Int, _ pfn: UInt32, order: Int) {
        let cpu = valid(cpu), list = self.list(cpu, index)
        if list.pointee.count == list.pointee.capacity { grow(list) }
        // SAFETY: after `grow` the ring has room for one more.
        list.pointee.ring?[list.pointee.slot(list.pointee.count)] = pfn
        list.pointee.count += 1
        state(cpu).pointee.pages += 1 << order
    }

    /// `list_add_tail`: a block onto the bottom (a refill keeps its order).
    func pushCold(_ cpu: Int, _ index: Int, _ pfn: UInt32, order: Int) {
        let cpu = valid(cpu), list = self.list(cpu, index)
        if list.pointee.count == list.pointee.capacity { grow(list) }
        list.pointee.bottom = list.pointee.bottom == 0 ? list.pointee.capacity - 1 : list.pointee.bottom - 1
        // SAFETY: after `grow` the ring has room for one more, and `bottom` is below its capacity.
        list.pointee.ring?[list.pointee.bottom] = pfn
        list.pointee.count += 1
        state(cpu).pointee.pages += 1 << order
    }

    /// The hottest block of list `index`, of blocks of `order`.
    @inline(__always)
    func pop(_ cpu: Int, _ index: Int, order: Int) -> UInt32? {
        let cpu = valid(cpu), list = self.list(cpu, index)
        guard list.pointee.count > 0, let ring = list.pointee.ring else { return nil }
        list.pointee.count -= 1
        state(cpu).pointee.pages -= 1 << order
        // SAFETY: `slot` of an index below count is inside the ring.
        return ring[list.pointee.slot(list.pointee.count)]
    }

    /// The coldest block of a list (`list_last_entry`).
    func popCold(_ cpu: Int, _ index: Int) -> UInt32? {
        let cpu = valid(cpu), list = self.list(cpu, index)
        guard list.pointee.count > 0, let ring = list.pointee.ring else { return nil }
        // SAFETY: the bottom slot of a list with entries is inside its ring.
        let pfn = ring[list.pointee.bottom]
        list.pointee.bottom = list.pointee.bottom + 1 == list.pointee.capacity ? 0 : list.pointee.bottom + 1
        list.pointee.count -= 1
        state(cpu).pointee.pages -= 1 << PcpLists.order(ofList: index)
        return pfn
    }

    /// `cpu`'s blocks with their orders, list by list, coldest first.
    func blocks(_ cpu: Int) -> [(pfn: UInt32, order: Int)] {
        let cpu = valid(cpu)
        return (0..<PcpLists.lists).flatMap { index -> [(pfn: UInt32, order: Int)] in
            let list = self.list(cpu, index).pointee
            guard let ring = list.ring else { return [] }
            // SAFETY: `slot` of an index below count is inside the ring.
            return (0..<list.count).map { (ring[list.slot($0)], PcpLists.order(ofList: index)) }
        }
    }

    /// `cpu`'s `high`, clamped into the zone's bounds as `nr_pcp_high` and
    /// `nr_pcp_alloc` do first.
    func high(_ cpu: Int, _ zone: Zone) -> Int { clampHigh(state(valid(cpu)), zone) }

    @inline(__always)
    private func clampHigh(_ pcp: UnsafeMutablePointer<Cpu>, _ zone: Zone) -> Int {
        pcp.pointee.high = min(max(pcp.pointee.high, zone.highMin), zone.highMax)
        return pcp.pointee.high
    }

    // MARK: The kernel's sizing (mm/page_alloc.c)

    /// `nr_pcp_alloc`: how many blocks a refill of `order` takes. Order-0
    /// refills grow by `alloc_factor`, which each refill that fits below
    /// `high` raises, up to `batch << CONFIG_PCP_BATCH_SCALE_MAX`; and
    /// `high` grows by the batch while the zone is not below its high watermark.
    func allocCount(_ cpu: Int, _ zone: Zone, order: Int) -> Int {
        let base = zone.batch, pcp = state(valid(cpu))
        var high = clampHigh(pcp, zone)
        guard high >= base else { return 1 }
        var batch = order > 0 ? base : base << pcp.pointee.allocFactor
        if zone.highMin != zone.highMax, !zone.belowHigh {
            high = min(high + batch, zone.highMax)
            pcp.pointee.high = high
        }
        if order == 0 {
            let maxAlloc = max(high - pcp.pointee.pages - base, base)
            if batch <= maxAlloc, pcp.pointee.allocFactor < PcpLists.batchScaleMax { pcp.pointee.allocFactor += 1 }
            batch = min(batch, maxAlloc)
        }
        if batch > 1 { batch = max(batch >> order, 2) }
        return batch
    }

    /// `rmqueue_pcplist`'s bookkeeping: an allocation halves `free_count`.
    @inline(__always)
    func allocated(_ cpu: Int) {
        state(valid(cpu)).pointee.freeCount >>= 1
    }

    /// `free_unref_page_commit` after the block went on its list: how many
    /// pages go back to the buddy allocator now (0: none).
    @inline(__always)
    func freeCount(_ cpu: Int, _ zone: Zone, order: Int) -> Int {
        let batch = zone.batch, pcp = state(valid(cpu))
        pcp.pointee.allocFactor >>= 1
        var freeHigh = false
        if order > 0 && order <= PAGE_ALLOC_COSTLY_ORDER {
            // PCPF_FREE_HIGH_BATCH is set only for a zone that is its node's last (not here).
            freeHigh = pcp.pointee.freeCount >= batch && pcp.pointee.prevFreeHighOrder
            pcp.pointee.prevFreeHighOrder = true
        } else {
            pcp.pointee.prevFreeHighOrder = false
        }
        if pcp.pointee.freeCount < batch << PcpLists.batchScaleMax { pcp.pointee.freeCount += 1 << order }
        let high = nrPcpHigh(pcp, zone, freeHigh: freeHigh)
        guard pcp.pointee.pages >= high else { return 0 }
        return nrPcpFree(pcp, zone, high: high, freeHigh: freeHigh)
    }

    /// `nr_pcp_high`: the `high` this free is measured against, adjusting
    /// `pcp->high` on the way.
    @inline(__always)
    private func nrPcpHigh(_ pcp: UnsafeMutablePointer<Cpu>, _ zone: Zone, freeHigh: Bool) -> Int {
        let batch = zone.batch
        var high = clampHigh(pcp, zone)
        guard high > 0 else { return 0 }
        if freeHigh {
            pcp.pointee.high = max(high - (batch << PcpLists.batchScaleMax), zone.highMin)
            return 0
        }
        if zone.reclaimActive {
            pcp.pointee.high = max(high - max(pcp.pointee.freeCount, batch), zone.highMin)
            return min(batch << 2, pcp.pointee.high)
        }
        if zone.highMin == zone.highMax { return high }
        if zone.belowHigh {
            pcp.pointee.high = max(high - max(pcp.pointee.freeCount, batch), zone.highMin)
            high = max(pcp.pointee.pages, zone.highMin)
        } else if pcp.pointee.pages >= high {
            let need = pcp.pointee.freeCount + batch
            if pcp.pointee.high < need { pcp.pointee.high = min(max(need, zone.highMin), zone.highMax) }
        }
        return high
    }

    /// `nr_pcp_free`: all a batch-scaled run of high-order frees, else
    /// `free_count` clamped to leave a batch (`batch` ... `high - batch`).
    private func nrPcpFree(_ pcp: UnsafeMutablePointer<Cpu>, _ zone: Zone, high: Int, freeHigh: Bool) -> Int {
        let batch = zone.batch
        if freeHigh { return min(pcp.pointee.pages, batch << PcpLists.batchScaleMax) }
        if high < batch { return 1 }
        return min(max(pcp.pointee.freeCount, batch), max(high - batch, batch))
    }
}

extension PageAllocator {
    /// `rmqueue_pcplist`: the head of this CPU's list of `order` and
    /// `type`, refilled when empty by `rmqueue_bulk` (the blocks in the
    /// order taken, the first taken handed out first).
    @inline(__always)
    func allocatePcp(_ zone: Zone, order: Int = 0, _ type: MigrateType) throws(KernelError) -> UInt64? {
        let cpu = currentCpu, index = PcpLists.index(order: order, type: type.rawValue)
        let pcp = zone.pcp
        pcp.allocated(cpu)
        if pcp.entries(cpu, index) == 0 { try refillPcp(zone, cpu: cpu, index: index, order: order, type) }
        return pcp.pop(cpu, index, order: order).map { UInt64($0) }
    }

    /// `rmqueue_bulk`: `nr_pcp_alloc` blocks onto an empty list.
    private func refillPcp(_ zone: Zone, cpu: Int, index: Int, order: Int, _ type: MigrateType) throws(KernelError) {
        let pcp = zone.pcp
        for _ in 0..<pcp.allocCount(cpu, zone, order: order) {
            guard let pfn = try rmqueue(zone, order: order, type: type) else { break }
            if let page = memory.existingPage(Pfn(pfn)) {
                page.pointee.flags = StructPage.Flag.pcp
                page.pointee.order = UInt8(order)
            }
            pcp.pushCold(cpu, index, UInt32(pfn), order: order)
        }
    }

    /// `free_unref_page`: onto this CPU's list of the block's pageblock
    /// type (Movable's for the high-atomic reserve); past `high`,
    /// `nr_pcp_free` pages go back, coldest first, list after list from
    /// this one (`free_pcppages_bulk`).
    @inline(__always)
    func freePcp(_ pfn: UInt64, _ page: UnsafeMutablePointer<StructPage>, order: Int, zone: Zone) {
        page.pointee.flags = StructPage.Flag.pcp
        page.pointee.order = UInt8(order)
        let cpu = currentCpu, pcp = zone.pcp
        let index = PcpLists.index(order: order, type: blockType(pfn).pcpType)
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
