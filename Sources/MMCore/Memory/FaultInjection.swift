/// Fault injection for the page allocator (`fail_page_alloc`, with the
/// `should_fail_ex` logic of lib/fault-inject.c).
public struct FaultAttr: Equatable, Sendable {
    /// Percent of eligible allocations to fail.
    public var probability: UInt64 = 100
    /// With `interval > 1`, only every interval-th eligible allocation may fail.
    public var interval: UInt64 = 1
    /// Failures left; -1 is unlimited.
    public var times: Int = -1
    /// Bytes (pages, here) to let through before failing.
    public var space: Int = 0
    /// Allocations below this order never fail.
    public var minOrder: Int = 0
    /// `ignore-gfp-highmem`: never fail `__GFP_HIGHMEM` allocations.
    public var ignoreGfpHighmem = false
    /// `ignore-gfp-wait`: never fail allocations that may reclaim.
    public var ignoreGfpReclaim = false
    /// Eligible allocations seen, for `interval`.
    public private(set) var count: UInt64 = 0
    /// Failures injected so far.
    public private(set) var failures: UInt64 = 0

    public init(probability: UInt64 = 100, interval: UInt64 = 1, times: Int = -1, space: Int = 0,
                minOrder: Int = 0, ignoreGfpHighmem: Bool = false, ignoreGfpReclaim: Bool = false) {
        self.probability = probability
        self.interval = interval
        self.times = times
        self.space = space
        self.minOrder = minOrder
        self.ignoreGfpHighmem = ignoreGfpHighmem
        self.ignoreGfpReclaim = ignoreGfpReclaim
    }

    /// `should_fail_alloc_page`: whether this allocation fails.
    mutating func shouldFailAllocPage(_ gfp: Gfp, order: Int, random: inout Random) -> Bool {
        if order < minOrder { return false }
        if gfp.contains(.nofail) { return false }
        if ignoreGfpHighmem && gfp.contains(.highmem) { return false }
        if ignoreGfpReclaim && gfp.contains(.directReclaim) { return false }
        return shouldFail(size: 1 << order, random: &random)
    }

    /// `should_fail_ex`.
    mutating func shouldFail(size: Int, random: inout Random) -> Bool {
        if probability == 0 { return false }
        if times == 0 { return false }
        if space > size {
            space -= size
            return false
        }
        if interval > 1 {
            count += 1
            if count % interval != 0 { return false }
        }
        if probability <= random.below(100) { return false }
        if times != -1 { times -= 1 }
        failures += 1
        return true
    }
}
