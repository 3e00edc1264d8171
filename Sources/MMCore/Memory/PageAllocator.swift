#if canImport(Glibc)
import Glibc
#endif

/// `MAX_PAGE_ORDER`: the largest block is `1 << MAX_ORDER` pages (4 MiB).
public let MAX_ORDER = 10

/// A memory zone (`struct zone`): its free areas, per-CPU lists and the
/// RAM it manages. mmlab has Normal and, when booted with `highmem`, HighMem.
public final class Zone {
    public let name: String
    /// Its place in the zonelist: 0 Normal, 1 HighMem (`zone_idx`).
    public let index: Int
    /// The zone's RAM, as half-open pfn ranges in address order.
    public let spans: [Range<UInt64>]
    /// RAM pages the zone manages.
    public let managedPages: UInt64
    // The zone's mutable state below is changed only by PageAllocator's
    // methods, which never call out (shrinkers, collector) while changing
    // it: exclusivity holds by construction, and its dynamic checks were
    // half the cost of an allocation.

    /// Pages in the buddy free lists (`NR_FREE_PAGES`), pcp pages excluded.
    @exclusivity(unchecked) public internal(set) var freePages: UInt64 = 0
    /// Pages moved to or from the per-CPU lists at once (`zone_batchsize`).
    public let batch: Int
    /// The bounds of each CPU's `high` (`zone_highsize`): the low
    /// watermark shared among the CPUs, and an eighth of the zone.
    @exclusivity(unchecked) public internal(set) var highMin = 0
    @exclusivity(unchecked) public internal(set) var highMax = 0
    /// `ZONE_BELOW_HIGH`: an allocation found free memory at the high
    /// watermark; the per-CPU lists shrink until it is above again.
    @exclusivity(unchecked) var belowHigh = false
    /// `ZONE_RECLAIM_ACTIVE`: kswapd is reclaiming from it.
    @exclusivity(unchecked) var reclaimActive = false

    /// Free lists by order and migratetype (`free_area[order].free_list[mt]`,
    /// at `Zone.list(order, mt)`), linked through `struct page`.
    @exclusivity(unchecked) var freeLists = [FreeList](repeating: FreeList(), count: (MAX_ORDER + 1) * MigrateType.allCases.count)
    /// `nr_reserved_highatomic`: pages of the pageblocks reserved for
    /// high-order atomic allocations.
    @exclusivity(unchecked) public internal(set) var nrReservedHighatomic: UInt64 = 0
    /// `nr_free_highatomic`: free pages on the reserve's lists, which
    /// allocations without a right to reserves do not count as free.
    @exclusivity(unchecked) public internal(set) var nrFreeHighatomic: UInt64 = 0
    /// Max-order free blocks never touched since boot, lowest first: they
    /// are on no list so that booting touches no page structs.
    @exclusivity(unchecked) var pristine: [Range<UInt64>] = []
    @exclusivity(unchecked) var pristineBlocks = 0
    /// Per-CPU lists of free order-0 pages (`per_cpu_pages`).
    let pcp: PcpLists

    init(name: String, index: Int, spans: [Range<UInt64>], cpus: Int) {
        self.name = name
        self.index = index
        self.spans = spans
        managedPages = spans.reduce(0) { $0 + UInt64($1.count) }
        // zone_batchsize: ~0.1% of the zone or 1 MiB, clamped to 2^n - 1.
        var batch = Int(min(managedPages >> 10, UInt64(1 << 20) / UInt64(PAGE_SIZE))) / 4
        batch = max(batch, 1)
        batch = max(1 << (Int.bitWidth - 1 - (batch + batch / 2).leadingZeroBitCount) - 1, 1)
        self.batch = batch
        pcp = PcpLists(cpus: cpus)
    }

    @inline(__always)
    func contains(_ pfn: UInt64) -> Bool {
        if spans.count == 1 { return spans[0].contains(pfn) }
        return spans.contains { $0.contains(pfn) }
    }

    /// Where the free list of `order` and `type` is in `freeLists`.
    @inline(__always)
    static func list(_ order: Int, _ type: MigrateType) -> Int { order * MigrateType.allCases.count + type.rawValue }

    /// Free blocks of `order` (a column of /proc/buddyinfo).
    public func nrFree(_ order: Int) -> Int {
        MigrateType.allCases.reduce(order == MAX_ORDER ? pristineBlocks : 0) { $0 + freeLists[Zone.list(order, $1)].count }
    }

    /// Free blocks of `order` on `type`'s list (a cell of /proc/pagetypeinfo);
    /// pristine blocks are Movable, as every pageblock is at boot.
    public func nrFree(_ order: Int, _ type: MigrateType) -> Int {
        freeLists[Zone.list(order, type)].count + (order == MAX_ORDER && type == .movable ? pristineBlocks : 0)
    }

    public var pcpPages: Int { pcp.total }
    /// CPU `cpu`'s `pcp->high`.
    public func pcpHigh(_ cpu: Int) -> Int { pcp.high(cpu, self) }

    /// Its watermarks, set at boot (Watermark.swift). Set once, read by
    /// every allocation: no dynamic exclusivity check.
    @exclusivity(unchecked) public internal(set) var watermark = Watermark()
    /// `lowmem_reserve[]`: pages kept back from allocations that could use
    /// each zone (by index) above this one.
    @exclusivity(unchecked) public internal(set) var lowmemReserve: [UInt64] = []
}

/// A list of frames linked through their `struct page` (`list_head`).
struct FreeList {
    var head = StructPage.none
    var tail = StructPage.none
    var count = 0
}

/// The buddy allocator, orders 0 ... MAX_ORDER, with per-CPU lists for
/// order 0 in front (mm/page_alloc.c).
///
/// # Invariants
///
/// Every managed frame is in exactly one of: a free block on a free list
/// (its head flagged `buddy`, with the block's order), a pristine block, a
/// per-CPU list (flagged `pcp`), or an allocated block (flagged
/// `allocated`, its head flagged `head` with the allocation's order and a
/// positive refcount). Free blocks are aligned to their size and never
/// have a free buddy of the same order: they are merged.
public final class PageAllocator {
    public let memory: PhysicalMemory
    /// Normal first, then HighMem if the machine has it.
    public let zones: [Zone]
    // The same, as properties: reading an array element of class type
    // retains it, and those atomic retains were half the cost of an
    // order-0 allocation.
    private let normalZone: Zone
    private let highmemZone: Zone?
    /// RAM pages the allocator manages.
    public let totalPages: UInt64
    /// The first HighMem frame: frames at or above it are HighMem
    /// (`PageHighMem`); `UInt64.max` without HighMem.
    public let highmemStart: UInt64
    public let initOnAlloc: Bool
    public let initOnFree: Bool
    public let pagePoison: Bool
    /// `vm.min_free_kbytes`, as given or as `calculate_min_free_kbytes` computed it.
    public let minFreeKbytes: UInt64
    /// `fail_page_alloc`, when on.
    @exclusivity(unchecked) public var faultInjection: FaultAttr?
    /// The CPU allocations run on, for the per-CPU lists.
    @exclusivity(unchecked) public var currentCpu = 0
    /// Frees memory others hold when an allocation that may sleep fails:
    /// the engine runs the garbage collector here.
    public var collector: (() -> Void)?
    /// Called with the net pages allocated since the last call (frees
    /// count back) every `pressureBatch` of them: the engine steps its
    /// collector. Pages freed explicitly leave nothing for the collector
    /// to find, so they add no pressure.
    @exclusivity(unchecked) public var pressure: ((Int) -> Void)?
    @exclusivity(unchecked) public var pressureBatch = 256
    /// The trace being recorded, if any.
    var trace: TraceLog?
    /// Registered shrinkers, in registration order, with their deferred work.
    var shrinkers: [RegisteredShrinker] = []
    /// `/proc/vmstat`'s events.
    @exclusivity(unchecked) public internal(set) var events = VmEvents()
    /// Reclaim is running (`PF_MEMALLOC`): its own allocations ignore the
    /// watermarks and never reclaim again.
    public internal(set) var reclaiming = false
    /// kswapd's state (Vmscan.swift), once an allocation woke it.
    public let kswapd = Kswapd()
    /// Called when kswapd must wake and has no task yet: the engine spawns `kswapd0`.
    public var spawnKswapd: (() -> Void)?
    /// Wakes kswapd's task from its wait queue (the machine's scheduler).
    var wakeUp: ((WaitQueueHead) -> Void)?
    /// `out_of_memory`: true when it freed memory (a kill) or the task
    /// should retry. The machine's OOM killer (OomKill.swift).
    var outOfMemory: ((Gfp, Int) -> Bool)?
    /// The running task's id, for the trace.
    var currentTask: (() -> Int)?
    /// Whether the running task is an OOM victim (`tsk_is_oom_victim`).
    var currentIsOomVictim: (() -> Bool)?
    /// A kernel warning (`WARN`) for the engine to report.
    public var onWarning: ((String) -> Void)?
    /// A line of the kernel log (the OOM report) for the engine to print.
    public var onLog: ((String) -> Void)?
    private var warned: Set<String> = []

    /// Each pageblock's migratetype (`pageblock_flags`), by `pfn >> PAGEBLOCK_ORDER`.
    @exclusivity(unchecked) var pageblockTypes: [UInt8]
    /// `page_group_by_mobility_disabled`: too little memory to group by
    /// mobility (fewer pages than `pageblock_nr_pages * MIGRATE_TYPES`, 5
    /// in Debian's 6.12, with isolation and without CMA): any allocation
    /// may claim any pageblock.
    public let mobilityDisabled: Bool

    // As Zone's: changed only here, never across a call out.
    @exclusivity(unchecked) var random: Random
    @exclusivity(unchecked) private var generation: UInt32 = 0
    @exclusivity(unchecked) private var pressurePages = 0

    /// The freed-page pattern (`PAGE_POISON`, include/linux/poison.h).
    public static let poison: UInt8 = 0xaa
    /// A page of it, to compare freed pages with.
    nonisolated(unsafe) private static let poisonPage: UnsafeMutableRawPointer = {
        let page = UnsafeMutableRawPointer.allocate(byteCount: PAGE_SIZE, alignment: 64)
        page.initializeMemory(as: UInt8.self, repeating: poison, count: PAGE_SIZE)
        return page
    }()
    /// Names where frames were freed, for corruption reports.
    let sites: SiteTable

    init(memory: PhysicalMemory, config: MachineConfig, sites: SiteTable) throws(KernelError) {
        self.memory = memory
        self.sites = sites
        initOnAlloc = config.initOnAlloc
        initOnFree = config.initOnFree
        pagePoison = config.pagePoison
        random = Random(seed: config.seed ^ 0x6661_696c_5f70_6167)
        let ram = PageAllocator.ramSpans(memory.regions)
        totalPages = ram.reduce(0) { $0 + UInt64($1.count) }
        // memmap_init: every pageblock starts Movable.
        pageblockTypes = [UInt8](repeating: UInt8(MigrateType.movable.rawValue),
                                 count: Int((ram.last?.upperBound ?? 0) >> UInt64(PAGEBLOCK_ORDER)) + 1)
        mobilityDisabled = totalPages < PAGEBLOCK_PAGES * 5
        let boundary = PageAllocator.highmemStart(ram, highmemPages: config.highmem >> UInt64(PAGE_SHIFT))
        let normal = ram.compactMap { $0.clamped(to: 0..<boundary).nonEmpty }
        let high = ram.compactMap { $0.clamped(to: boundary..<UInt64.max).nonEmpty }
        var zones = [Zone(name: "Normal", index: 0, spans: normal, cpus: config.cpus)]
        if !high.isEmpty { zones.append(Zone(name: "HighMem", index: 1, spans: high, cpus: config.cpus)) }
        self.zones = zones
        normalZone = zones[0]
        highmemZone = zones.count > 1 ? zones[1] : nil
        highmemStart = high.isEmpty ? .max : boundary
        let lowmem = zones[0].managedPages  // Normal; HighMem is never lowmem
        let minFree = config.minFreeKbytes ?? Watermark.minFreeKbytes(lowmemPages: lowmem)
        minFreeKbytes = minFree
        let marks = Watermark.setup(zones.enumerated().map { ($1.managedPages, $0 > 0) }, minFreeKbytes: minFree,
                                    scaleFactor: config.watermarkScaleFactor)
        for (zone, mark) in zip(zones, marks) {
            guard mark.min <= zone.managedPages else {
                throw KernelError(.EINVAL, "min_free_kbytes \(minFreeKbytes) puts the \(zone.name) zone's min watermark (\(mark.min) pages) above its \(zone.managedPages) managed pages")
            }
            zone.watermark = mark
            // zone_set_pageset_high_and_batch: zone_highsize over the node's CPUs.
            zone.highMin = max(Int(mark.low) / config.cpus, zone.batch << 2)
            zone.highMax = max(Int(zone.managedPages / 8) / config.cpus, zone.batch << 2)
        }
        let reserves = Watermark.lowmemReserve(managed: zones.map(\.managedPages), ratios: config.lowmemReserveRatio)
        for (zone, reserve) in zip(zones, reserves) { zone.lowmemReserve = reserve }
        for zone in zones {
            for span in zone.spans { try addFreeRange(span, to: zone) }
        }
    }

    /// RAM as maximal runs of contiguous frames, so that blocks merge
    /// across adjacent regions.
    private static func ramSpans(_ regions: [MemoryRegion]) -> [Range<UInt64>] {
        var spans: [Range<UInt64>] = []
        for r in regions where r.kind == .ram {
            let span = r.startPfn.rawValue..<r.endPfn.rawValue
            if let last = spans.last, last.upperBound == span.lowerBound {
                spans[spans.count - 1] = last.lowerBound..<span.upperBound
            } else {
                spans.append(span)
            }
        }
        return spans
    }

    /// The first pfn of HighMem: the top `highmemPages` of RAM.
    private static func highmemStart(_ ram: [Range<UInt64>], highmemPages: UInt64) -> UInt64 {
        var left = highmemPages
        for span in ram.reversed() {
            if left == 0 { return span.upperBound }
            if UInt64(span.count) >= left { return span.upperBound - left }
            left -= UInt64(span.count)
        }
        return ram.first?.lowerBound ?? 0
    }

    /// Frees a range at boot as memblock does: the largest aligned blocks.
    private func addFreeRange(_ span: Range<UInt64>, to zone: Zone) throws(KernelError) {
        var pfn = span.lowerBound
        let maxBlock = UInt64(1) << MAX_ORDER
        while pfn < span.upperBound {
            let alignment = pfn == 0 ? MAX_ORDER : min(MAX_ORDER, pfn.trailingZeroBitCount)
            var order = min(alignment, Int.bitWidth - 1 - Int(span.upperBound - pfn).leadingZeroBitCount)
            order = min(order, MAX_ORDER)
            if order == MAX_ORDER {
                // A run of whole max-order blocks stays pristine.
                let end = span.upperBound & ~(maxBlock - 1)
                zone.pristine.append(pfn..<end)
                zone.pristineBlocks += Int((end - pfn) >> UInt64(MAX_ORDER))
                zone.freePages += end - pfn
                pfn = end
                continue
            }
            let page = try memory.page(Pfn(pfn))
            page.pointee.flags = StructPage.Flag.buddy
            page.pointee.order = UInt8(order)
            addToFreeList(pfn, order: order, type: blockType(pfn), zone: zone, tail: true)
            zone.freePages += UInt64(1) << UInt64(order)
            pfn += UInt64(1) << UInt64(order)
        }
    }

    // MARK: Allocation

    /// Allocates `1 << order` frames (`__alloc_pages`). The fast path takes
    /// a block from the first zone `gfp` may use that stays above its low
    /// watermark; order-0 pages come from the per-CPU list. Otherwise the
    /// slow path (`slowPath`) wakes kswapd, tries again at the min
    /// watermark with the reserves `gfp` allows, reclaims, retries and, as
    /// a last resort, calls the OOM killer. An injected failure is final.
    public func allocPages(_ gfp: Gfp, order: Int, site: Site = .unknown) throws(KernelError) -> Pfn {
        guard (0...MAX_ORDER).contains(order) else {
            throw KernelError(.EINVAL, "order \(order) is out of range (0 to \(MAX_ORDER))")
        }
        if faultInjection?.shouldFailAllocPage(gfp, order: order, random: &random) == true {
            throw KernelError(.ENOMEM, "fail_page_alloc: injected failure of an order-\(order) allocation")
        }
        var pfn: Pfn?
        let normal = normalZone
        if order == 0, highmemZone == nil || gfp.isDisjoint(with: [.highmem, .movable]),
           normal.freePages > normal.watermark.low + normal.nrFreeHighatomic,
           let p = try allocatePcp(normal, MigrateType(gfp: gfp)) {
            // The common case, spelled out: Normal above its low mark (which
            // keeps no lowmem reserve from a Normal allocation, and counts
            // no free high-atomic reserve), order 0.
            if normal.freePages <= normal.watermark.high + normal.nrFreeHighatomic { normal.belowHigh = true }
            events.pgallocNormal &+= 1
            pfn = Pfn(p)
        } else {
            pfn = try allocate(gfp, order: order, flags: .wmarkLow)
            if pfn == nil { pfn = try slowPath(gfp, order: order) }
        }
        guard let pfn else {
            trace?.emit(.instant, "alloc failed", category: "memory", track: .machine, args: [.init("order", order)])
            throw KernelError(.ENOMEM, failureMessage(gfp, order: order))
        }
        if let corruption = prepare(pfn, order: order, gfp: gfp) {
            // Reported, and the block goes back poisoned again: the next
            // allocation of it is clean.
            if let head = memory.existingPage(pfn) { freeBlock(pfn, head, order: order, site: .unknown) }
            throw corruption
        }
        pressurePages += 1 << order
        if pressurePages >= pressureBatch, let pressure {
            let pages = pressurePages
            pressurePages = 0
            pressure(pages)
        }
        return pfn
    }

    /// `gfp_zone`: the highest zone an allocation may use, as a zonelist
    /// index (`ac->highest_zoneidx`): HighMem with `__GFP_HIGHMEM` or
    /// `__GFP_MOVABLE` on a machine that has it, else Normal.
    @inline(__always) func highestZone(_ gfp: Gfp) -> Int {
        highmemZone != nil && !gfp.isDisjoint(with: [.highmem, .movable]) ? 1 : 0
    }

    /// Tries the zones `gfp` may use, in zonelist order (HighMem first
    /// when it may use it, then Normal), each only while it stays above
    /// the watermark `flags` names (`get_page_from_freelist`).
    @inline(__always) private func allocate(_ gfp: Gfp, order: Int, flags: AllocFlags) throws(KernelError) -> Pfn? {
        let highest = highestZone(gfp)
        let type = MigrateType(gfp: gfp)
        if highest == 1, let highmemZone, let pfn = try allocate(from: highmemZone, order: order, type: type, flags: flags, highest: 1) {
            events.pgallocHigh &+= UInt64(1) << UInt64(order)
            return Pfn(pfn)
        }
        guard let pfn = try allocate(from: normalZone, order: order, type: type, flags: flags, highest: highest) else { return nil }
        events.pgallocNormal &+= UInt64(1) << UInt64(order)
        return Pfn(pfn)
    }

    @inline(__always) private func allocate(from zone: Zone, order: Int, type: MigrateType, flags: AllocFlags, highest: Int) throws(KernelError) -> UInt64? {
        if !flags.contains(.noWatermarks) {
            // ZONE_BELOW_HIGH: set by the first allocation that finds the zone at its high watermark.
            if !zone.belowHigh, !zone.watermarkFast(order: order, mark: zone.watermark.high, highestZone: highest, flags: flags) {
                zone.belowHigh = true
            }
            guard zone.watermarkFast(order: order, mark: zone.mark(flags), highestZone: highest, flags: flags) else { return nil }
        }
        // rmqueue: the per-CPU lists for their orders, else the buddy allocator.
        var pfn = PcpLists.allowed(order) ? try allocatePcp(zone, order: order, type) : nil
        if pfn == nil { pfn = try rmqueueBuddy(zone, order: order, type: type, flags: flags) }
        guard let pfn else { return nil }
        // get_page_from_freelist: a high-order atomic allocation reserves its pageblock for the next ones.
        if flags.contains(.highatomic) { reserveHighatomic(zone, pfn, order: order) }
        return pfn
    }

    /// `__alloc_pages_slowpath`, without compaction (mmlab has none):
    /// wakes kswapd, tries again at the min watermark with the reserves
    /// `gfp` allows (`gfp_to_alloc_flags`), then, if it may sleep, reclaims
    /// directly and retries as `should_reclaim_retry` allows. Costly orders
    /// (above `PAGE_ALLOC_COSTLY_ORDER`) give up after one reclaim unless
    /// `__GFP_RETRY_MAYFAIL`; `__GFP_NORETRY` always does. Last comes the
    /// OOM killer, for order ≤ 3 without `__GFP_RETRY_MAYFAIL`; each kill
    /// frees the victim's memory and the allocation retries.
    /// `__GFP_NOFAIL` takes from the reserves rather than fail.
    private func slowPath(_ gfp: Gfp, order: Int) throws(KernelError) -> Pfn? {
        let canReclaim = gfp.allowsBlocking
        let costly = order > PAGE_ALLOC_COSTLY_ORDER
        let nofail = gfp.contains(.nofail)
        if nofail {
            if order > 1 { warnOnce("__GFP_NOFAIL allocation of order \(order): only orders 0 and 1 may not fail (WARN_ON_ONCE(order > 1))") }
            if !canReclaim { warnOnce("__GFP_NOFAIL allocation that cannot reclaim (mode:\(gfp.kernelFormat)): it fails like any other") }
        }
        var flags = AllocFlags(gfp: gfp, order: order)
        var noProgressLoops = 0
        while true {
            if flags.contains(.kswapd) { wakeKswapd(order: order, highestZone: highestZone(gfp), gfp: gfp) }
            // __gfp_pfmemalloc_flags: reclaim itself (PF_MEMALLOC) ignores
            // the watermarks; an OOM victim digs into the reserves.
            if reclaiming {
                flags = AllocFlags.noWatermarks.union(flags.intersection(.kswapd))
            } else if currentIsOomVictim?() == true {
                flags = AllocFlags.oom.union(flags.intersection(.kswapd))
            }
            if let pfn = try allocate(gfp, order: order, flags: flags) { return pfn }
            guard canReclaim, !reclaiming else { break }
            let progress = directReclaim(gfp, order: order)
            if progress > 0 {
                if let pfn = try allocate(gfp, order: order, flags: flags) { return pfn }
            }
            // __alloc_pages_direct_reclaim: the high-atomic reserve but one
            // pageblock and the per-CPU lists go back to the buddy allocator.
            _ = try unreserveHighatomic(gfp, force: false)
            drainPages()
            if let pfn = try allocate(gfp, order: order, flags: flags) { return pfn }
            if gfp.contains(.noretry) { break }
            if costly && !(gfp.contains(.io) && gfp.contains(.retryMayfail)) { break }
            if try shouldReclaimRetry(gfp, order: order, flags: flags, progress: progress > 0, loops: &noProgressLoops) { continue }
            // __alloc_pages_may_oom: one more try at the high watermark first.
            if let pfn = try allocate(gfp, order: order, flags: .wmarkHigh) { return pfn }
            guard !costly, !gfp.contains(.retryMayfail) else { break }
            if currentIsOomVictim?() == true, flags.contains(.oom) { break }
            guard let outOfMemory, outOfMemory(gfp, order) else { break }
            noProgressLoops = 0
        }
        if nofail && canReclaim {
            // __alloc_pages_cpuset_fallback with ALLOC_MIN_RESERVE, then
            // ALLOC_NO_WATERMARKS: the kernel would loop here until one works.
            for fallback in [AllocFlags.minReserve, .noWatermarks] {
                if let pfn = try allocate(gfp, order: order, flags: fallback) { return pfn }
            }
            throw KernelError.bug("a __GFP_NOFAIL allocation of order \(order) cannot be satisfied: nothing is left to reclaim or kill, and the kernel would retry it forever")
        }
        return nil
    }

    /// `should_reclaim_retry`: up to `MAX_RECLAIM_RETRIES` passes without
    /// progress (progress at a costly order does not count), while some
    /// zone could meet its min watermark with what is free (mmlab has no
    /// LRU pages that reclaim could still free). Where it would stop, it
    /// retries instead while a high-atomic pageblock can be given back:
    /// the reserve goes before the OOM killer comes.
    private func shouldReclaimRetry(_ gfp: Gfp, order: Int, flags: AllocFlags, progress: Bool, loops: inout Int) throws(KernelError) -> Bool {
        if progress && order <= PAGE_ALLOC_COSTLY_ORDER { loops = 0 } else { loops += 1 }
        let highest = highestZone(gfp)
        if loops <= MAX_RECLAIM_RETRIES, zones.prefix(highest + 1).reversed().contains(where: { zone in
            zone.watermarkOk(order: order, mark: zone.watermark.min, highestZone: highest, flags: flags, free: Int64(zone.freePages))
        }) { return true }
        return try unreserveHighatomic(gfp, force: true)
    }

    /// `warn_alloc`'s line, with what the zones had.
    private func failureMessage(_ gfp: Gfp, order: Int) -> String {
        let zones = self.zones.prefix(highestZone(gfp) + 1).map { "\($0.name) free:\($0.freePages) min:\($0.watermark.min)" }
        return "page allocation failure: order:\(order), mode:\(gfp.kernelFormat) (" + zones.joined(separator: ", ") + ")"
    }

    /// `WARN_ON_ONCE`: each message once per machine, counted as a warning.
    private func warnOnce(_ message: String) {
        guard warned.insert(message).inserted else { return }
        onWarning?(message)
    }

    /// `rmqueue_buddy`: with `ALLOC_HIGHATOMIC` the reserve first; then
    /// `__rmqueue`; failing that, an OOM victim or an allocation that
    /// cannot block takes from the reserve, as failing now is worse than
    /// failing a high-order atomic allocation later.
    func rmqueueBuddy(_ zone: Zone, order: Int, type: MigrateType, flags: AllocFlags) throws(KernelError) -> UInt64? {
        if flags.contains(.highatomic), let pfn = try rmqueueSmallest(zone, order: order, type: .highatomic) { return pfn }
        if let pfn = try rmqueue(zone, order: order, type: type) { return pfn }
        guard !flags.isDisjoint(with: [.oom, .nonBlock]) else { return nil }
        return try rmqueueSmallest(zone, order: order, type: .highatomic)
    }

    /// `__rmqueue`: `type`'s own lists, then a fallback pageblock claimed,
    /// then a fallback block stolen (Migratetype.swift).
    func rmqueue(_ zone: Zone, order: Int, type: MigrateType) throws(KernelError) -> UInt64? {
        if let pfn = try rmqueueSmallest(zone, order: order, type: type) { return pfn }
        if let pfn = try rmqueueClaim(zone, order: order, start: type) { return pfn }
        return try rmqueueSteal(zone, order: order, start: type)
    }

    /// `__rmqueue_smallest`: the smallest free block of `type` that fits,
    /// split down to `order` with the upper halves returned to its lists.
    func rmqueueSmallest(_ zone: Zone, order: Int, type: MigrateType) throws(KernelError) -> UInt64? {
        for current in order...MAX_ORDER {
            guard let pfn = try takeFree(zone, order: current, type: type) else { continue }
            expand(zone, pfn, low: order, high: current, type: type)
            return pfn
        }
        return nil
    }

    /// The first free block of exactly `order` on `type`'s list (a pristine
    /// one for Movable at the largest order), without taking it.
    func firstFree(_ zone: Zone, order: Int, type: MigrateType) throws(KernelError) -> UInt64? {
        let list = zone.freeLists[Zone.list(order, type)]
        if list.count > 0 { return UInt64(list.head) }
        if order == MAX_ORDER, type == .movable, let range = zone.pristine.first { return range.lowerBound }
        return nil
    }

    /// Takes that block off its list (`del_page_from_free_list`).
    func takeFree(_ zone: Zone, order: Int, type: MigrateType) throws(KernelError) -> UInt64? {
        let pfn: UInt64
        if zone.freeLists[Zone.list(order, type)].count > 0 {
            pfn = UInt64(zone.freeLists[Zone.list(order, type)].head)
            removeFromFreeList(pfn, order: order, type: type, zone: zone)
        } else if order == MAX_ORDER, type == .movable, let range = zone.pristine.first {
            pfn = range.lowerBound
            _ = try memory.page(Pfn(pfn))  // the block's section, before anything changes
            let next = pfn + (UInt64(1) << UInt64(MAX_ORDER))
            if next == range.upperBound { zone.pristine.removeFirst() } else { zone.pristine[0] = next..<range.upperBound }
            zone.pristineBlocks -= 1
        } else {
            return nil
        }
        zone.freePages -= UInt64(1) << UInt64(order)
        return pfn
    }

    /// `expand()`: hands back the upper halves of a block of order `high`
    /// split down to `low`, onto `type`'s lists. A block never crosses a
    /// section, so their page structs exist.
    func expand(_ zone: Zone, _ pfn: UInt64, low: Int, high: Int, type: MigrateType) {
        var size = UInt64(1) << UInt64(high)
        var high = high
        while high > low {
            high -= 1
            size >>= 1
            guard let buddy = memory.existingPage(Pfn(pfn + size)) else { continue }
            buddy.pointee.flags = StructPage.Flag.buddy
            buddy.pointee.order = UInt8(high)
            addToFreeList(pfn + size, order: high, type: type, zone: zone, tail: false)
            zone.freePages += size
        }
    }

    /// `prep_new_page`: marks the block allocated, one reference on its
    /// head; checks the poison of its frames that were poisoned when freed
    /// (`kernel_unpoison_pages`), then zeroes them if asked. The corruption
    /// it found, if any.
    @inline(__always) private func prepare(_ pfn: Pfn, order: Int, gfp: Gfp) -> KernelError? {
        generation &+= 1
        let count = 1 << order
        var flags = StructPage.Flag.allocated
        if gfp.contains(.comp) { flags |= StructPage.Flag.compound }
        var corruption: KernelError?
        for i in 0..<count {
            // The block came off a free list or a pristine block whose section exists.
            guard let page = memory.existingPage(pfn + UInt64(i)) else { continue }
            if page.pointee.poisoned {
                page.pointee.poisoned = false
                if corruption == nil { corruption = checkPoison(pfn + UInt64(i), freedAt: Site(id: page.pointee.freedAt)) }
                page.pointee.intact = corruption == nil
            }
            page.pointee.flags = i == 0 ? flags | StructPage.Flag.head : flags
            page.pointee.generation = generation
            page.pointee.refcount = i == 0 ? 1 : 0
            page.pointee.order = i == 0 ? UInt8(order) : 0
        }
        if (gfp.contains(.zero) || initOnAlloc) && !initOnFree, let base = memory.rawAddress(of: pfn) {
            memory.reached(pfn, frames: count)
            // SAFETY: the block is `count` frames of RAM, contiguous in one region's mapping.
            base.initializeMemory(as: UInt8.self, repeating: 0, count: count * PAGE_SIZE)
        }
        return corruption
    }

    /// `check_poison_mem`: a frame freed with `PAGE_POISON` in it must still
    /// hold it; anything else was written behind the allocator's back.
    private func checkPoison(_ pfn: Pfn, freedAt: Site) -> KernelError? {
        guard let base = memory.rawAddress(of: pfn),
              memcmp(base, PageAllocator.poisonPage, PAGE_SIZE) != 0 else { return nil }
        // SAFETY: the frame is PAGE_SIZE bytes of RAM.
        let bytes = UnsafeRawBufferPointer(start: base, count: PAGE_SIZE)
        let first = bytes.firstIndex { $0 != PageAllocator.poison } ?? 0
        let last = bytes.lastIndex { $0 != PageAllocator.poison } ?? first
        let hex = { (v: Int) in "0x" + String(v, radix: 16) }
        let freed = freedAt == .unknown ? "" : " after it was freed at \(sites.name(freedAt))"
        return .bug("pagealloc: memory corruption: pfn \(pfn) was written\(freed): bytes \(hex(first))-\(hex(last)) are not the poison 0xaa (byte \(hex(first)) is \(hex(Int(bytes[first]))))")
    }

    // MARK: Freeing

    /// `__free_pages`: drops the reference the caller holds. At zero the
    /// block is freed; a block that is not compound frees all but its first
    /// page while others still reference that one.
    public func freePages(_ pfn: Pfn, order: Int, site: Site = .unknown) throws(KernelError) {
        let head = try checkedHead(pfn, "__free_pages")
        guard Int(head.pointee.order) == order else {
            throw KernelError.bug("__free_pages of pfn \(pfn) with order \(order); it was allocated with order \(head.pointee.order)")
        }
        let compound = head.pointee.has(StructPage.Flag.compound)
        head.pointee.refcount -= 1
        if head.pointee.refcount == 0 {
            freeBlock(pfn, head, order: order, site: site)
        } else if !compound && head.pointee.order > 0 {
            var o = Int(head.pointee.order)
            head.pointee.order = 0
            while o > 0 {
                o -= 1
                let part = pfn + (UInt64(1) << UInt64(o))
                // The block was allocated, so its section exists.
                guard let page = memory.existingPage(part) else { continue }
                freeBlock(part, page, order: o, site: site)
            }
        }
    }

    /// `get_page`: another reference to an allocated head page.
    public func getPage(_ pfn: Pfn) throws(KernelError) {
        try checkedHead(pfn, "get_page").pointee.refcount += 1
    }

    /// `put_page`: drops a reference; the block is freed at zero.
    /// Where the model records an invariant it broke where it could not
    /// throw (the machine's `brokenInvariants`, which `kernel.debug.check` reports).
    var onBrokenInvariant: ((String) -> Void)?

    /// `put_page` of a reference the caller holds, where nothing can fail
    /// unless the model broke: a failure is recorded, never swallowed.
    func putOwned(_ pfn: Pfn, by owner: @autoclosure () -> String) {
        do { try putPage(pfn) } catch {
            onBrokenInvariant?("\(owner()) dropped a page reference it did not hold: \(error.message)")
        }
    }

    /// `__free_pages` of a block the caller owns, likewise.
    func freeOwned(_ pfn: Pfn, order: Int, by owner: @autoclosure () -> String) {
        do { try freePages(pfn, order: order) } catch {
            onBrokenInvariant?("\(owner()) freed a block it did not own: \(error.message)")
        }
    }

    public func putPage(_ pfn: Pfn, site: Site = .unknown) throws(KernelError) {
        let head = try checkedHead(pfn, "put_page")
        head.pointee.refcount -= 1
        if head.pointee.refcount == 0 { freeBlock(pfn, head, order: Int(head.pointee.order), site: site) }
    }

    /// A fault mapped the allocated head `pfn` as anonymous memory.
    func markAnonymous(_ pfn: Pfn) {
        memory.existingPage(pfn)?.pointee.flags |= StructPage.Flag.anonymous
    }

    /// `folio_test_anon`.
    public func isAnonymous(_ pfn: Pfn) -> Bool {
        memory.existingPage(pfn)?.pointee.has(StructPage.Flag.anonymous) == true
    }

    /// `page_ref_count`: 0 for a frame that is not an allocated head.
    public func refcount(_ pfn: Pfn) -> Int {
        guard let page = memory.existingPage(pfn), page.pointee.has(StructPage.Flag.head) else { return 0 }
        return Int(page.pointee.refcount)
    }

    /// Only frames this allocator handed out are flagged `head`, so the
    /// flags alone tell a managed, allocated head.
    @inline(__always) private func checkedHead(_ pfn: Pfn, _ what: String) throws(KernelError) -> UnsafeMutablePointer<StructPage> {
        guard let page = memory.existingPage(pfn), page.pointee.has(StructPage.Flag.head), page.pointee.refcount > 0 else {
            throw KernelError.bug("\(what) of pfn \(pfn), which is not an allocated page")
        }
        return page
    }

    /// `free_the_page`: poisons (or zeroes, with init_on_free; or neither,
    /// without page_poison) and returns
    /// the block: order 0 to this CPU's list, larger blocks to the buddy
    /// allocator.
    private func freeBlock(_ pfn: Pfn, _ head: UnsafeMutablePointer<StructPage>, order: Int, site: Site) {
        let count = 1 << order
        pressurePages = max(0, pressurePages - count)
        events.pgfree &+= UInt64(count)
        let poisons = pagePoison && !initOnFree
        for i in 0..<count {
            // SAFETY: a block lies in one section, whose `struct page`s are contiguous.
            let page = head + i
            page.pointee.flags = 0
            page.pointee.refcount = 0
            page.pointee.order = 0
            page.pointee.freedAt = site.id
            if poisons { page.pointee.poisoned = true }  // an allocated frame is never poisoned
        }
        if initOnFree || pagePoison { fillFreed(pfn, head, count: count) }
        if let highmemZone, highmemZone.contains(pfn.rawValue) {
            release(pfn, head, order: order, to: highmemZone)
        } else {
            release(pfn, head, order: order, to: normalZone)
        }
    }

    /// Zeroes (init_on_free) or poisons a freed block. Out of line: the
    /// free path without either stays small enough to inline.
    @inline(never) private func fillFreed(_ pfn: Pfn, _ head: UnsafeMutablePointer<StructPage>, count: Int) {
        guard let base = memory.rawAddress(of: pfn) else { return }
        if initOnFree {
            // SAFETY: the block is `count` frames of RAM, contiguous in one region's mapping.
            base.initializeMemory(as: UInt8.self, repeating: 0, count: count * PAGE_SIZE)
            return
        }
        // A frame that still holds only the poison keeps it: writing it
        // again would change no byte.
        for i in 0..<count where !(head + i).pointee.intact {
            // SAFETY: the block is `count` frames of RAM, contiguous in one region's mapping.
            (base + i * PAGE_SIZE).initializeMemory(as: UInt8.self, repeating: PageAllocator.poison, count: PAGE_SIZE)
            (head + i).pointee.intact = true
        }
    }

    @inline(__always) private func release(_ pfn: Pfn, _ head: UnsafeMutablePointer<StructPage>, order: Int, to zone: Zone) {
        if PcpLists.allowed(order) {
            freePcp(pfn.rawValue, head, order: order, zone: zone)
        } else {
            freeOne(pfn.rawValue, order: order, zone: zone)
        }
    }

    /// `__free_one_page`: merges with free buddies while it can, then goes
    /// on its pageblock type's free list, at the tail when the next merge
    /// looks likely. A buddy of a pageblock or more of another type takes
    /// this block's type (`change_pageblock_range`).
    func freeOne(_ pfn: UInt64, order: Int, zone: Zone) {
        memory.existingPage(Pfn(pfn))?.pointee.flags = 0
        var pfn = pfn, order = order
        let type = blockType(pfn)
        zone.freePages += UInt64(1) << UInt64(order)
        var buddy = pfn
        while order < MAX_ORDER {
            buddy = pfn ^ (UInt64(1) << UInt64(order))
            guard isFreeBuddy(buddy, order: order, zone: zone) else { break }
            let buddyType = order >= PAGEBLOCK_ORDER ? blockType(buddy) : type
            removeFromFreeList(buddy, order: order, type: buddyType, zone: zone)
            if buddyType != type { changePageblockRange(buddy, order: order, to: type) }
            memory.existingPage(Pfn(buddy))?.pointee.flags = 0
            pfn &= buddy
            order += 1
        }
        guard let page = memory.existingPage(Pfn(pfn)) else { return }
        page.pointee.flags = StructPage.Flag.buddy
        page.pointee.order = UInt8(order)
        // buddy_merge_likely: the block this one would merge into next has a free buddy.
        var tail = false
        if order < MAX_ORDER - 1 {
            let higher = buddy & pfn
            tail = isFreeBuddy(higher ^ (UInt64(1) << UInt64(order + 1)), order: order + 1, zone: zone)
        }
        addToFreeList(pfn, order: order, type: type, zone: zone, tail: tail)
    }

    private func isFreeBuddy(_ pfn: UInt64, order: Int, zone: Zone) -> Bool {
        guard zone.contains(pfn), let page = memory.existingPage(Pfn(pfn)) else { return false }
        return page.pointee.has(StructPage.Flag.buddy) && Int(page.pointee.order) == order
    }

    /// `drain_all_pages`: every per-CPU list back to the buddy allocator.
    public func drainPages() {
        for zone in zones {
            for cpu in 0..<zone.pcp.cpus {
                for index in 0..<PcpLists.lists {
                    while let pfn = zone.pcp.popCold(cpu, index) { freeOne(UInt64(pfn), order: PcpLists.order(ofList: index), zone: zone) }
                }
            }
        }
    }

    // MARK: Free lists, linked through struct page.

    private func addToFreeList(_ pfn: UInt64, order: Int, type: MigrateType, zone: Zone, tail: Bool) {
        guard let page = memory.existingPage(Pfn(pfn)) else { return }
        link(page, UInt32(pfn), into: &zone.freeLists[Zone.list(order, type)], tail: tail)
        if type == .highatomic { zone.nrFreeHighatomic += UInt64(1) << UInt64(order) }
    }

    private func removeFromFreeList(_ pfn: UInt64, order: Int, type: MigrateType, zone: Zone) {
        guard let page = memory.existingPage(Pfn(pfn)) else { return }
        unlink(page, UInt32(pfn), from: &zone.freeLists[Zone.list(order, type)])
        page.pointee.flags &= ~StructPage.Flag.buddy
        if type == .highatomic { zone.nrFreeHighatomic -= UInt64(1) << UInt64(order) }
    }

    /// `move_to_free_list`: a free block onto the tail of another type's list.
    func moveFreeBlock(_ zone: Zone, _ pfn: UInt64, order: Int, from: MigrateType, to: MigrateType) {
        guard let page = memory.existingPage(Pfn(pfn)) else { return }
        unlink(page, UInt32(pfn), from: &zone.freeLists[Zone.list(order, from)])
        link(page, UInt32(pfn), into: &zone.freeLists[Zone.list(order, to)], tail: true)
        // account_freepages of both types.
        if from == .highatomic { zone.nrFreeHighatomic -= UInt64(1) << UInt64(order) }
        if to == .highatomic { zone.nrFreeHighatomic += UInt64(1) << UInt64(order) }
    }

    /// `list_add` (or `list_add_tail`) of frame `p`, whose `struct page` is `page`.
    private func link(_ page: UnsafeMutablePointer<StructPage>, _ p: UInt32, into list: inout FreeList, tail: Bool) {
        if list.count == 0 {
            page.pointee.next = StructPage.none
            page.pointee.prev = StructPage.none
            list.head = p
            list.tail = p
        } else if tail {
            page.pointee.prev = list.tail
            page.pointee.next = StructPage.none
            memory.existingPage(Pfn(UInt64(list.tail)))?.pointee.next = p
            list.tail = p
        } else {
            page.pointee.next = list.head
            page.pointee.prev = StructPage.none
            memory.existingPage(Pfn(UInt64(list.head)))?.pointee.prev = p
            list.head = p
        }
        list.count += 1
    }

    /// `list_del` of frame `p` from `list`.
    private func unlink(_ page: UnsafeMutablePointer<StructPage>, _ p: UInt32, from list: inout FreeList) {
        let next = page.pointee.next, prev = page.pointee.prev
        if prev == StructPage.none { list.head = next } else { memory.existingPage(Pfn(UInt64(prev)))?.pointee.next = next }
        if next == StructPage.none { list.tail = prev } else { memory.existingPage(Pfn(UInt64(next)))?.pointee.prev = prev }
        list.count -= 1
    }

    // MARK: Shrinkers and statistics

    /// `shrinker_register`: at the end of the list. Registering one twice
    /// is a bug (list_add of an entry already on the list).
    public func register(_ shrinker: Shrinker) throws(KernelError) {
        guard !shrinkers.contains(where: { $0.shrinker === shrinker }) else {
            throw .bug("shrinker_register of \(shrinker), which is registered already: list_add corruption")
        }
        shrinkers.append(RegisteredShrinker(shrinker))
    }

    /// `shrinker_free`: a bug from inside one of its own calls, which it
    /// would wait for forever.
    public func unregister(_ shrinker: Shrinker) throws(KernelError) {
        if let entry = shrinkers.first(where: { $0.shrinker === shrinker }), entry.running > 0 {
            throw .bug("shrinker_free of \(shrinker) from inside its own count or scan: it waits for that call to return, which never happens")
        }
        shrinkers.removeAll { $0.shrinker === shrinker }
    }

    /// The shrinkers registered, in order.
    public var registeredShrinkers: [Shrinker] { shrinkers.map(\.shrinker) }

    /// Pages in the buddy free lists, per-CPU pages excluded.
    public var freePages: UInt64 { zones.reduce(0) { $0 + $1.freePages } }
    /// Pages on the per-CPU lists.
    public var pcpPages: Int { zones.reduce(0) { $0 + $1.pcpPages } }
    /// Free blocks per order, over all zones.
    public var nrFree: [Int] { (0...MAX_ORDER).map { order in zones.reduce(0) { $0 + $1.nrFree(order) } } }

    /// `/proc/buddyinfo`: a line per zone.
    public var buddyinfo: String {
        zones.filter { $0.managedPages > 0 }.map { zone in
            let name = String(repeating: " ", count: max(0, 8 - zone.name.count)) + zone.name
            return "Node 0, zone \(name) " + (0...MAX_ORDER).map { order in
                let n = String(zone.nrFree(order))
                return String(repeating: " ", count: max(0, 6 - n.count)) + n + " "
            }.joined() + "\n"
        }.joined()
    }

    /// Checks the invariants: every free list well linked and counted, its
    /// blocks aligned, in their zone, flagged, and without a free buddy;
    /// per-CPU pages flagged; the free page count adds up. A violation is a bug.
    public func checkConsistency() throws(KernelError) {
        for zone in zones {
            var pages = UInt64(zone.pristineBlocks) << UInt64(MAX_ORDER), highatomic: UInt64 = 0
            for order in 0...MAX_ORDER { for type in MigrateType.allCases {
                let list = zone.freeLists[Zone.list(order, type)]
                var count = 0, pfn = list.head, prev = StructPage.none
                while pfn != StructPage.none {
                    let p = UInt64(pfn)
                    guard let page = memory.existingPage(Pfn(p)), count <= Int(zone.managedPages) else {
                        throw .bug("\(zone.name) free list \(order): pfn 0x\(String(p, radix: 16)) has no page struct")
                    }
                    guard page.pointee.has(StructPage.Flag.buddy), Int(page.pointee.order) == order,
                          page.pointee.prev == prev, p & ((UInt64(1) << UInt64(order)) - 1) == 0, zone.contains(p) else {
                        throw .bug("\(zone.name) free list \(order): block at pfn 0x\(String(p, radix: 16)) is corrupt")
                    }
                    guard blockType(p) == type else {
                        throw .bug("\(zone.name) free list \(order) \(type.name): block at pfn 0x\(String(p, radix: 16)) is in a \(blockType(p).name) pageblock")
                    }
                    if order < MAX_ORDER, isFreeBuddy(p ^ (UInt64(1) << UInt64(order)), order: order, zone: zone) {
                        throw .bug("\(zone.name): free block at pfn 0x\(String(p, radix: 16)) has a free buddy of order \(order)")
                    }
                    count += 1
                    prev = pfn
                    pfn = page.pointee.next
                }
                guard count == list.count, prev == list.tail else {
                    throw .bug("\(zone.name) free list \(order) \(type.name): \(count) blocks linked, \(list.count) counted")
                }
                pages += UInt64(count) << UInt64(order)
                if type == .highatomic { highatomic += UInt64(count) << UInt64(order) }
            } }
            guard pages == zone.freePages else {
                throw .bug("\(zone.name): \(pages) pages on the free lists, \(zone.freePages) counted free")
            }
            guard highatomic == zone.nrFreeHighatomic else {
                throw .bug("\(zone.name): \(highatomic) pages on the high-atomic lists, \(zone.nrFreeHighatomic) counted (nr_free_highatomic)")
            }
            for cpu in 0..<zone.pcp.cpus {
                var pages = 0
                for (pfn, order) in zone.pcp.blocks(cpu) {
                    pages += 1 << order
                    guard let page = memory.existingPage(Pfn(UInt64(pfn))), page.pointee.has(StructPage.Flag.pcp),
                          Int(page.pointee.order) == order else {
                        throw .bug("\(zone.name): per-CPU block 0x\(String(pfn, radix: 16)) of order \(order) is not flagged as one")
                    }
                }
                guard pages == zone.pcp.count(cpu) else {
                    throw .bug("\(zone.name): CPU \(cpu)'s per-CPU lists hold \(pages) pages, \(zone.pcp.count(cpu)) counted")
                }
            }
        }
    }

    /// The zone holding a managed frame.
    public func zone(of pfn: Pfn) -> Zone? {
        for zone in zones where zone.contains(pfn.rawValue) { return zone }
        return nil
    }

    /// Whether a frame is part of an allocated block, and which allocation.
    func allocation(of pfn: Pfn) -> (allocated: Bool, generation: UInt32, freedAt: Site) {
        guard let page = memory.existingPage(pfn) else { return (false, 0, .unknown) }
        return (page.pointee.has(StructPage.Flag.allocated), page.pointee.generation, Site(id: page.pointee.freedAt))
    }
}

extension Range where Bound == UInt64 {
    var nonEmpty: Range? { isEmpty ? nil : self }
}
