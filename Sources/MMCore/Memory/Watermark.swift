/// A zone's watermarks (`zone->_watermark[]`), as mm/page_alloc.c's
/// `init_per_zone_wmark_min` sets them at boot: `calculate_min_free_kbytes`,
/// then `__setup_per_zone_wmarks`;
/// the page allocator checks them (`Zone.watermarkOk`) and kswapd
/// reclaims up to them.
public struct Watermark: Equatable, Sendable {
    public var min: UInt64 = 0
    public var low: UInt64 = 0
    public var high: UInt64 = 0
    /// `WMARK_PROMO`: for memory tiering's promotion.
    public var promo: UInt64 = 0

    /// `SWAP_CLUSTER_MAX`: the floor of a highmem zone's min.
    static let swapClusterMax: UInt64 = 32

    /// `calculate_min_free_kbytes`: sqrt(lowmem_kbytes * 16), clamped to
    /// 128 ... 262144 (`nr_free_buffer_pages` is the lowmem zones' managed
    /// pages at boot, before any watermark is set).
    public static func minFreeKbytes(lowmemPages: UInt64) -> UInt64 {
        let lowmemKbytes = lowmemPages * UInt64(PAGE_SIZE >> 10)
        return Swift.min(Swift.max(intSqrt(lowmemKbytes * 16), 128), 262_144)
    }

    /// `__setup_per_zone_wmarks` over `zones` (managed pages, and whether
    /// each is highmem): a lowmem zone's min is its share of
    /// `min_free_kbytes`; a highmem zone's is managed / 1024 clamped to
    /// 32 ... 128. Low and high step up by max(share / 4, managed *
    /// watermark_scale_factor / 10000).
    public static func setup(_ zones: [(managed: UInt64, highmem: Bool)], minFreeKbytes: UInt64,
                             scaleFactor: UInt64) -> [Watermark] {
        let pagesMin = minFreeKbytes >> UInt64(PAGE_SHIFT - 10)
        let lowmemPages = zones.filter { !$0.highmem }.reduce(0) { $0 + $1.managed }
        return zones.map { zone in
            let share = lowmemPages == 0 ? 0 : pagesMin * zone.managed / lowmemPages  // u64: div64_ul
            var w = Watermark()
            w.min = zone.highmem ? Swift.min(Swift.max(zone.managed / 1024, swapClusterMax), 128) : share
            let step = Swift.max(share >> 2, zone.managed * scaleFactor / 10_000)  // mult_frac
            w.low = w.min + step
            w.high = w.low + step
            w.promo = w.high + step
            return w
        }
    }

    /// `setup_per_zone_lowmem_reserve`: what each zone keeps back from
    /// allocations that could have used a higher zone, per higher zone:
    /// the managed pages of the zones above it, up to that one, over the
    /// zone's `lowmem_reserve_ratio` (0 keeps nothing back).
    public static func lowmemReserve(managed: [UInt64], ratios: [UInt64]) -> [[UInt64]] {
        managed.indices.map { i in
            let ratio = i < ratios.count ? ratios[i] : 0
            var above: UInt64 = 0
            return managed.indices.map { j in
                guard j > i else { return 0 }
                above += managed[j]
                return ratio == 0 || managed[i] == 0 ? 0 : above / ratio
            }
        }
    }

    /// `int_sqrt`: the integer square root, rounded down.
    static func intSqrt(_ x: UInt64) -> UInt64 {
        guard x > 1 else { return x }
        var r = UInt64(Double(x).squareRoot())
        while r * r > x { r -= 1 }
        while (r + 1) * (r + 1) <= x { r += 1 }
        return r
    }
}

/// What an allocation may use (`ALLOC_*` of mm/internal.h): the watermark
/// it must stay above, in the low two bits, and the reserves below it.
public struct AllocFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let wmarkMin = AllocFlags([])
    public static let wmarkLow = AllocFlags(rawValue: 0x01)
    public static let wmarkHigh = AllocFlags(rawValue: 0x02)
    public static let noWatermarks = AllocFlags(rawValue: 0x04)
    /// `ALLOC_OOM`: an OOM victim digs deeper still.
    public static let oom = AllocFlags(rawValue: 0x08)
    /// `ALLOC_NON_BLOCK`: the caller cannot reclaim.
    public static let nonBlock = AllocFlags(rawValue: 0x10)
    /// `ALLOC_MIN_RESERVE`: `__GFP_HIGH`, half of the min reserve.
    public static let minReserve = AllocFlags(rawValue: 0x20)
    public static let cpuset = AllocFlags(rawValue: 0x40)
    public static let highatomic = AllocFlags(rawValue: 0x200)
    /// `ALLOC_KSWAPD`: the allocation wakes kswapd.
    public static let kswapd = AllocFlags(rawValue: 0x800)
    static let reserves: AllocFlags = [.nonBlock, .minReserve, .highatomic, .oom]

    /// `ALLOC_WMARK_MASK`: 0 min, 1 low, 2 high.
    public var watermark: Int { Int(rawValue & 3) }

    /// `gfp_to_alloc_flags`: the slow path's flags. `__GFP_HIGH` is
    /// `ALLOC_MIN_RESERVE` and `__GFP_KSWAPD_RECLAIM` `ALLOC_KSWAPD`; a
    /// caller that cannot reclaim is `ALLOC_NON_BLOCK`, and with
    /// `__GFP_HIGH` at order > 0 may use the high-atomic reserve.
    public init(gfp: Gfp, order: Int) {
        var flags: AllocFlags = [.wmarkMin, .cpuset]
        if gfp.contains(.high) { flags.insert(.minReserve) }
        if gfp.contains(.kswapdReclaim) { flags.insert(.kswapd) }
        if !gfp.contains(.directReclaim) {
            flags.insert(.nonBlock)
            if order > 0 && flags.contains(.minReserve) { flags.insert(.highatomic) }
            if flags.contains(.minReserve) { flags.remove(.cpuset) }
        }
        self = flags
    }
}

extension Zone {
    /// The mark `flags` names (`wmark_pages`).
    func mark(_ flags: AllocFlags) -> UInt64 {
        switch flags.watermark {
        case 0: watermark.min
        case 1: watermark.low
        default: watermark.high
        }
    }

    /// `__zone_watermark_unusable_free`: of the free pages, those an
    /// allocation of `order` with `flags` cannot count: the rest of its
    /// block, and the free high-atomic reserve unless it has a right to
    /// reserves.
    @inline(__always)
    func unusableFree(order: Int, flags: AllocFlags) -> Int64 {
        Int64((1 << order) - 1) + (flags.isDisjoint(with: AllocFlags.reserves) ? Int64(nrFreeHighatomic) : 0)
    }

    /// `__zone_watermark_ok`: whether `free` pages, less the unusable ones,
    /// leave more than `mark` (less what the reserves in `flags` allow)
    /// plus the lowmem reserve kept from allocations that could use zone
    /// `highestZone`; and, above order 0, whether a free block of at least
    /// `order` exists that `flags` may take (the reserve's only with
    /// `ALLOC_HIGHATOMIC` or `ALLOC_OOM`).
    public func watermarkOk(order: Int, mark: UInt64, highestZone: Int, flags: AllocFlags, free: Int64) -> Bool {
        var min = Int64(mark)
        let free = free - unusableFree(order: order, flags: flags)
        if !flags.isDisjoint(with: AllocFlags.reserves) {
            if flags.contains(.minReserve) {
                min -= min / 2
                if flags.contains(.nonBlock) { min -= min / 4 }
            }
            if flags.contains(.oom) { min -= min / 2 }
        }
        let reserve = highestZone < lowmemReserve.count ? Int64(lowmemReserve[highestZone]) : 0
        guard free > min + reserve else { return false }
        guard order > 0 else { return true }
        let reserveToo = !flags.isDisjoint(with: [.highatomic, .oom])
        return (order...MAX_ORDER).contains { o in
            MigrateType.allCases.contains { ($0 != .highatomic || reserveToo) && nrFree(o, $0) > 0 }
        }
    }

    /// `zone_watermark_fast`: the order-0 check first, which needs no
    /// look at the free lists.
    @inline(__always)
    func watermarkFast(order: Int, mark: UInt64, highestZone: Int, flags: AllocFlags) -> Bool {
        if order == 0 {
            // A zone keeps nothing back from allocations that could use no higher zone.
            let reserve = highestZone <= index || highestZone >= lowmemReserve.count ? 0 : lowmemReserve[highestZone]
            // As the kernel: what is reserved may exceed what is free, so never below zero.
            let unusable = UInt64(unusableFree(order: 0, flags: flags))
            if freePages - Swift.min(freePages, unusable) > mark + reserve { return true }
        }
        return watermarkOk(order: order, mark: mark, highestZone: highestZone, flags: flags, free: Int64(freePages))
    }
}
