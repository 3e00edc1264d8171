/// A zone's watermarks (`zone->_watermark[]`), as mm/page_alloc.c's
/// `init_per_zone_wmark_min` sets them at boot: `calculate_min_free_kbytes`,
/// then `__setup_per_zone_wmarks`. The allocator does not stop at them yet:
/// they are what the machine reports (`kernel.mem.zones()`).
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
