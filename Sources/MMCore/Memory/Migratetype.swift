/// Grouping pages by mobility (mm/page_alloc.c, include/linux/mmzone.h):
/// memory is cut into pageblocks of `pageblock_order`, each with a
/// migratetype; free blocks sit on a free list per order and migratetype,
/// and an allocation takes from its own type's lists first (`gfp_migratetype`).
/// When those are empty it falls back through `fallbacks[]`: it claims a
/// whole pageblock of another type when it can (`__rmqueue_claim`,
/// `try_to_steal_block`), and otherwise steals a block and leaves its
/// pageblock's type alone (`__rmqueue_steal`).
///
/// mmlab has Unmovable, Movable and Reclaimable (`MIGRATE_PCPTYPES`) and
/// the high-atomic reserve: pageblocks a high-order atomic allocation took
/// for the next ones (`reserve_highatomic_pageblock`), given back when an
/// allocation is about to fail (`unreserve_highatomic_pageblock`). No CMA,
/// no isolation, and no watermark boosting when a pageblock changes type.
public enum MigrateType: Int, CaseIterable, Sendable {
    case unmovable = 0, movable = 1, reclaimable = 2
    /// `MIGRATE_HIGHATOMIC`.
    case highatomic = 3

    /// `MIGRATE_PCPTYPES`: the types with per-CPU lists and fallbacks.
    static let pcpTypes = 3

    /// As /proc/pagetypeinfo names them (`migratetype_names`).
    public var name: String {
        switch self {
        case .unmovable: "Unmovable"
        case .movable: "Movable"
        case .reclaimable: "Reclaimable"
        case .highatomic: "HighAtomic"
        }
    }

    /// `fallbacks[]`: where an allocation of this type looks next, in order.
    /// No allocation starts from the reserve, and none falls back to it.
    public var fallbacks: [MigrateType] {
        switch self {
        case .unmovable: [.reclaimable, .movable]
        case .movable: [.reclaimable, .unmovable]
        case .reclaimable: [.unmovable, .movable]
        case .highatomic: []
        }
    }

    /// `migratetype_is_mergeable`: a type whose pageblocks may be reserved.
    var isMergeable: Bool { rawValue < MigrateType.pcpTypes }

    /// The per-CPU list a freed block of this pageblock type goes on
    /// (`free_unref_page`: the reserve's go on Movable's).
    @inline(__always)
    var pcpType: Int { rawValue < MigrateType.pcpTypes ? rawValue : MigrateType.movable.rawValue }

    /// `gfp_migratetype`: `__GFP_MOVABLE` is Movable, `__GFP_RECLAIMABLE`
    /// Reclaimable, neither Unmovable (both is a kernel WARN; Movable here).
    @inline(__always)
    public init(gfp: Gfp) {
        let bits = (gfp.rawValue >> 3) & 3
        self = bits == 2 ? .reclaimable : bits == 0 ? .unmovable : .movable
    }

    /// `can_steal_fallback`: whether an allocation of `self` at `order`
    /// may take a whole pageblock of another type.
    func canSteal(order: Int, mobilityDisabled: Bool) -> Bool {
        order >= PAGEBLOCK_ORDER || order >= PAGEBLOCK_ORDER / 2 || self == .reclaimable || self == .unmovable
            || mobilityDisabled
    }
}

/// `pageblock_order` on x86-64 (`HUGETLB_PAGE_ORDER`): 512 pages.
public let PAGEBLOCK_ORDER = 9
/// `pageblock_nr_pages`.
public let PAGEBLOCK_PAGES = UInt64(1) << UInt64(PAGEBLOCK_ORDER)

extension PageAllocator {
    /// `get_pfnblock_migratetype`.
    @inline(__always)
    public func blockType(_ pfn: UInt64) -> MigrateType {
        MigrateType(rawValue: Int(pageblockTypes[Int(pfn >> UInt64(PAGEBLOCK_ORDER))])) ?? .movable
    }

    /// `set_pageblock_migratetype`.
    func setBlockType(_ pfn: UInt64, _ type: MigrateType) {
        pageblockTypes[Int(pfn >> UInt64(PAGEBLOCK_ORDER))] = UInt8(type.rawValue)
    }

    /// `change_pageblock_range`: every pageblock of a block of `order`.
    func changePageblockRange(_ pfn: UInt64, order: Int, to type: MigrateType) {
        var block = pfn
        let end = pfn + (UInt64(1) << UInt64(max(order, PAGEBLOCK_ORDER)))
        while block < end {
            setBlockType(block, type)
            block += PAGEBLOCK_PAGES
        }
    }

    /// `find_suitable_fallback`: the first type in `start`'s fallbacks with
    /// a free block of `order`, and whether `start` may claim its pageblock.
    func suitableFallback(_ zone: Zone, order: Int, start: MigrateType) -> (MigrateType, canSteal: Bool)? {
        for type in start.fallbacks where zone.nrFree(order, type) > 0 {
            return (type, start.canSteal(order: order, mobilityDisabled: mobilityDisabled))
        }
        return nil
    }

    /// `__rmqueue_claim`: from the largest order down, a fallback block
    /// whose pageblock this allocation takes over (`try_to_steal_block`);
    /// it stops at the first order whose fallback it may not claim.
    func rmqueueClaim(_ zone: Zone, order: Int, start: MigrateType) throws(KernelError) -> UInt64? {
        for current in stride(from: MAX_ORDER, through: order, by: -1) {
            guard let (fallback, canSteal) = suitableFallback(zone, order: current, start: start) else { continue }
            guard canSteal else { break }
            guard let pfn = try firstFree(zone, order: current, type: fallback) else { continue }
            if let page = try tryToStealBlock(zone, pfn, of: fallback, current: current, order: order, start: start) {
                return page
            }
        }
        return nil
    }

    /// `__rmqueue_steal`: the smallest fallback block, split with its
    /// halves left on the fallback type's lists.
    func rmqueueSteal(_ zone: Zone, order: Int, start: MigrateType) throws(KernelError) -> UInt64? {
        for current in order...MAX_ORDER {
            guard let (fallback, _) = suitableFallback(zone, order: current, start: start),
                  let pfn = try takeFree(zone, order: current, type: fallback) else { continue }
            expand(zone, pfn, low: order, high: current, type: fallback)
            return pfn
        }
        return nil
    }

    /// `try_to_steal_block`: a fallback block of a pageblock or more is
    /// claimed whole; a smaller one claims its pageblock when at least half
    /// of it is free or already of the new type's kind (movable pages for
    /// a Movable allocation; for another, the pages of a Movable pageblock
    /// that are not movable), and the allocation then takes its own type.
    func tryToStealBlock(_ zone: Zone, _ pfn: UInt64, of blockType: MigrateType, current: Int, order: Int,
                         start: MigrateType) throws(KernelError) -> UInt64? {
        // `pfn` heads `blockType`'s list (`firstFree`): the list is its pageblock's type.
        if current >= PAGEBLOCK_ORDER {
            guard try takeFree(zone, order: current, type: blockType) != nil else { return nil }
            changePageblockRange(pfn, order: current, to: start)
            expand(zone, pfn, low: order, high: current, type: start)
            return pfn
        }
        guard let blockStart = pageblockStart(pfn, in: zone) else { return nil }
        let (free, movable) = pageblockCounts(blockStart)
        let alike = start == .movable ? movable : blockType == .movable ? Int(PAGEBLOCK_PAGES) - (free + movable) : 0
        guard free + alike >= Int(PAGEBLOCK_PAGES / 2) || mobilityDisabled else { return nil }
        moveFreeBlocks(zone, blockStart, to: start)
        return try rmqueueSmallest(zone, order: order, type: start)
    }

    /// `prep_move_freepages_block`'s counts: free pages in the pageblock,
    /// and allocated ones that are movable (anonymous memory, which the
    /// kernel keeps on its LRU).
    func pageblockCounts(_ start: UInt64) -> (free: Int, movable: Int) {
        var free = 0, movable = 0, pfn = start
        while pfn < start + PAGEBLOCK_PAGES {
            guard let page = memory.existingPage(Pfn(pfn)) else { pfn += 1; continue }
            if page.pointee.has(StructPage.Flag.buddy) {
                let n = 1 << Int(page.pointee.order)
                free += n
                pfn += UInt64(n)
                continue
            }
            if page.pointee.has(StructPage.Flag.anonymous) { movable += 1 }
            pfn += 1
        }
        return (free, movable)
    }

    /// `__move_freepages_block`: every free block of the pageblock onto
    /// `type`'s lists, and the pageblock becomes `type`.
    func moveFreeBlocks(_ zone: Zone, _ start: UInt64, to type: MigrateType) {
        var pfn = start
        let old = blockType(start)
        while pfn < start + PAGEBLOCK_PAGES {
            guard let page = memory.existingPage(Pfn(pfn)), page.pointee.has(StructPage.Flag.buddy) else { pfn += 1; continue }
            let order = Int(page.pointee.order)
            moveFreeBlock(zone, pfn, order: order, from: old, to: type)
            pfn += UInt64(1) << UInt64(order)
        }
        setBlockType(start, type)
    }

    /// `prep_move_freepages_block`'s check: the first frame of the
    /// pageblock holding `pfn`, if the whole pageblock lies in `zone`.
    func pageblockStart(_ pfn: UInt64, in zone: Zone) -> UInt64? {
        let start = pfn & ~(PAGEBLOCK_PAGES - 1)
        return zone.contains(start) && zone.contains(start + PAGEBLOCK_PAGES - 1) ? start : nil
    }

    /// `move_freepages_block`: whether the pageblock holding `pfn` lies in
    /// `zone` (-1 in the kernel otherwise), and if so its free blocks move
    /// to `type`'s lists and it becomes `type`.
    func moveFreepagesBlock(_ zone: Zone, _ pfn: UInt64, to type: MigrateType) -> Bool {
        guard let start = pageblockStart(pfn, in: zone) else { return false }
        moveFreeBlocks(zone, start, to: type)
        return true
    }

    /// `reserve_highatomic_pageblock`: after a high-order atomic allocation
    /// at `pfn`, its pageblock becomes the reserve's, up to about 1% of the
    /// zone rounded up to pageblocks (none when 1% is less than one), and
    /// only from a type that can merge with others.
    func reserveHighatomic(_ zone: Zone, _ pfn: UInt64, order: Int) {
        guard zone.managedPages / 100 >= PAGEBLOCK_PAGES else { return }
        let maxManaged = (zone.managedPages / 100 + PAGEBLOCK_PAGES - 1) & ~(PAGEBLOCK_PAGES - 1)  // ALIGN
        guard zone.nrReservedHighatomic < maxManaged, blockType(pfn).isMergeable else { return }
        if order < PAGEBLOCK_ORDER {
            guard moveFreepagesBlock(zone, pfn, to: .highatomic) else { return }
            zone.nrReservedHighatomic += PAGEBLOCK_PAGES
        } else {
            changePageblockRange(pfn, order: order, to: .highatomic)
            zone.nrReservedHighatomic += UInt64(1) << UInt64(order)
        }
    }

    /// `unreserve_highatomic_pageblock`: when an allocation of `gfp` is
    /// about to fail, the first free block on a reserve's list, smallest
    /// order first, takes its pageblock back to the allocation's type, in
    /// the zones it may use; unless `force`, each zone keeps one pageblock.
    /// Whether it gave one back.
    func unreserveHighatomic(_ gfp: Gfp, force: Bool) throws(KernelError) -> Bool {
        let type = MigrateType(gfp: gfp)
        for zone in zones.prefix(highestZone(gfp) + 1).reversed() {
            if !force && zone.nrReservedHighatomic <= PAGEBLOCK_PAGES { continue }
            for order in 0...MAX_ORDER {
                guard let pfn = try firstFree(zone, order: order, type: .highatomic) else { continue }
                let old = blockType(pfn)
                if old == .highatomic {
                    // Never below zero, should the count and the lists disagree.
                    let size = min(max(PAGEBLOCK_PAGES, UInt64(1) << UInt64(order)), zone.nrReservedHighatomic)
                    zone.nrReservedHighatomic -= size
                }
                if order < PAGEBLOCK_ORDER {
                    // Reserving the pageblock succeeded, so it lies in the zone.
                    guard moveFreepagesBlock(zone, pfn, to: type) else {
                        throw .bug("\(zone.name): the high-atomic pageblock of pfn 0x\(String(pfn, radix: 16)) crosses the zone's end")
                    }
                } else {
                    moveFreeBlock(zone, pfn, order: order, from: old, to: type)
                    changePageblockRange(pfn, order: order, to: type)
                }
                return true
            }
        }
        return false
    }

    /// `/proc/pagetypeinfo`: free blocks per order and migratetype, and
    /// pageblocks per migratetype, per zone.
    public var pagetypeinfo: String {
        func pad(_ s: String, _ n: Int, left: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, n - s.count))
            return left ? s + fill : fill + s
        }
        var text = "Page block order: \(PAGEBLOCK_ORDER)\nPages per block:  \(PAGEBLOCK_PAGES)\n\n"
        text += pad("Free pages count per migrate type at order", 43, left: true) + " "
        text += (0...MAX_ORDER).map { pad(String($0), 6) + " " }.joined() + "\n"
        for zone in zones where zone.managedPages > 0 {
            for type in MigrateType.allCases {
                text += "Node    0, zone \(pad(zone.name, 8)), type \(pad(type.name, 12)) "
                text += (0...MAX_ORDER).map { pad(String(zone.nrFree($0, type)), 6) + " " }.joined() + "\n"
            }
        }
        text += "\n" + pad("Number of blocks type ", 23, left: true)
        text += MigrateType.allCases.map { pad($0.name, 12) + " " }.joined() + "\n"
        for zone in zones where zone.managedPages > 0 {
            let counts = pageblockCounts(zone)
            text += "Node 0, zone \(pad(zone.name, 8)) " + MigrateType.allCases.map { pad(String(counts[$0.rawValue]), 12) + " " }.joined() + "\n"
        }
        return text
    }

    /// Pageblocks of each type in `zone`, counted from its first frame in
    /// steps of a pageblock (`pagetypeinfo_showblockcount_print`).
    public func pageblockCounts(_ zone: Zone) -> [Int] {
        var counts = [Int](repeating: 0, count: MigrateType.allCases.count)
        for span in zone.spans {
            var pfn = span.lowerBound
            while pfn < span.upperBound {
                counts[blockType(pfn).rawValue] += 1
                pfn += PAGEBLOCK_PAGES
            }
        }
        return counts
    }
}
