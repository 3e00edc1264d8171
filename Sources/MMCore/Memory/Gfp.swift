/// Allocation flags (`gfp_t`), with the values of include/linux/gfp_types.h.
public struct Gfp: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `__GFP_DMA`
    public static let dma = Gfp(rawValue: 0x01)
    /// `__GFP_HIGHMEM`: highmem pages are acceptable.
    public static let highmem = Gfp(rawValue: 0x02)
    /// `__GFP_DMA32`
    public static let dma32 = Gfp(rawValue: 0x04)
    /// `__GFP_MOVABLE`
    public static let movable = Gfp(rawValue: 0x08)
    /// `__GFP_RECLAIMABLE`
    public static let reclaimable = Gfp(rawValue: 0x10)
    /// `__GFP_HIGH`: may use the atomic reserves.
    public static let high = Gfp(rawValue: 0x20)
    /// `__GFP_IO`
    public static let io = Gfp(rawValue: 0x40)
    /// `__GFP_FS`
    public static let fs = Gfp(rawValue: 0x80)
    /// `__GFP_ZERO`: return zeroed memory.
    public static let zero = Gfp(rawValue: 0x100)
    /// `__GFP_DIRECT_RECLAIM`: the caller may sleep and reclaim.
    public static let directReclaim = Gfp(rawValue: 0x400)
    /// `__GFP_KSWAPD_RECLAIM`
    public static let kswapdReclaim = Gfp(rawValue: 0x800)
    /// `__GFP_NOWARN`: no failure report.
    public static let nowarn = Gfp(rawValue: 0x2000)
    /// `__GFP_RETRY_MAYFAIL`
    public static let retryMayfail = Gfp(rawValue: 0x4000)
    /// `__GFP_NOFAIL`
    public static let nofail = Gfp(rawValue: 0x8000)
    /// `__GFP_NORETRY`
    public static let noretry = Gfp(rawValue: 0x10000)
    /// `__GFP_COMP`: a compound page.
    public static let comp = Gfp(rawValue: 0x40000)
    /// `__GFP_HARDWALL`: stay in the cpuset.
    public static let hardwall = Gfp(rawValue: 0x100000)
    /// `__GFP_ACCOUNT`
    public static let account = Gfp(rawValue: 0x400000)

    /// `__GFP_RECLAIM`
    public static let reclaim: Gfp = [.directReclaim, .kswapdReclaim]
    /// `GFP_KERNEL`
    public static let kernel: Gfp = [.reclaim, .io, .fs]
    /// `GFP_ATOMIC`
    public static let atomic: Gfp = [.high, .kswapdReclaim]
    /// `GFP_NOWAIT`
    public static let nowait: Gfp = [.kswapdReclaim, .nowarn]
    /// `GFP_NOIO`
    public static let noio: Gfp = [.reclaim]
    /// `GFP_NOFS`
    public static let nofs: Gfp = [.reclaim, .io]
    /// `GFP_USER`
    public static let user: Gfp = [.reclaim, .io, .fs, .hardwall]
    /// `GFP_HIGHUSER`
    public static let highuser: Gfp = [.user, .highmem]
    /// `GFP_HIGHUSER_MOVABLE` (without `__GFP_SKIP_KASAN`, which mmlab's KASAN-less pages need not)
    public static let highuserMovable: Gfp = [.highuser, .movable]

    /// Every flag and combination under its kernel name.
    public static let named: [(String, Gfp)] = [
        ("GFP_KERNEL", .kernel), ("GFP_ATOMIC", .atomic), ("GFP_NOWAIT", .nowait),
        ("GFP_NOIO", .noio), ("GFP_NOFS", .nofs), ("GFP_USER", .user),
        ("GFP_HIGHUSER", .highuser), ("GFP_HIGHUSER_MOVABLE", .highuserMovable), ("GFP_DMA", .dma), ("GFP_DMA32", .dma32),
        ("__GFP_DMA", .dma), ("__GFP_HIGHMEM", .highmem), ("__GFP_DMA32", .dma32),
        ("__GFP_MOVABLE", .movable), ("__GFP_RECLAIMABLE", .reclaimable),
        ("__GFP_HIGH", .high), ("__GFP_IO", .io), ("__GFP_FS", .fs), ("__GFP_ZERO", .zero),
        ("__GFP_DIRECT_RECLAIM", .directReclaim), ("__GFP_KSWAPD_RECLAIM", .kswapdReclaim),
        ("__GFP_RECLAIM", .reclaim), ("__GFP_NOWARN", .nowarn),
        ("__GFP_RETRY_MAYFAIL", .retryMayfail), ("__GFP_NOFAIL", .nofail),
        ("__GFP_NORETRY", .noretry), ("__GFP_COMP", .comp), ("__GFP_ACCOUNT", .account),
    ]

    /// `%pGg`: the value and its names, combinations first, as
    /// include/trace/events/mmflags.h lists them (`0xcc0(GFP_KERNEL)`).
    public var kernelFormat: String {
        let names: [(String, Gfp)] = [
            ("GFP_HIGHUSER_MOVABLE", .highuserMovable), ("GFP_HIGHUSER", .highuser), ("GFP_USER", .user),
            ("GFP_KERNEL_ACCOUNT", [.kernel, .account]), ("GFP_KERNEL", .kernel), ("GFP_NOFS", .nofs),
            ("GFP_ATOMIC", .atomic), ("GFP_NOIO", .noio), ("GFP_NOWAIT", .nowait), ("GFP_DMA", .dma),
            ("__GFP_HIGHMEM", .highmem), ("GFP_DMA32", .dma32), ("__GFP_HIGH", .high), ("__GFP_IO", .io),
            ("__GFP_FS", .fs), ("__GFP_NOWARN", .nowarn), ("__GFP_RETRY_MAYFAIL", .retryMayfail),
            ("__GFP_NOFAIL", .nofail), ("__GFP_NORETRY", .noretry), ("__GFP_COMP", .comp), ("__GFP_ZERO", .zero),
            ("__GFP_HARDWALL", .hardwall), ("__GFP_RECLAIMABLE", .reclaimable), ("__GFP_MOVABLE", .movable),
            ("__GFP_ACCOUNT", .account), ("__GFP_RECLAIM", .reclaim), ("__GFP_DIRECT_RECLAIM", .directReclaim),
            ("__GFP_KSWAPD_RECLAIM", .kswapdReclaim),
        ]
        var left = self, parts: [String] = []
        for (name, flags) in names where !flags.isEmpty && left.isSuperset(of: flags) {
            parts.append(name)
            left.subtract(flags)
        }
        if !left.isEmpty { parts.append("0x" + String(left.rawValue, radix: 16)) }
        return "0x" + String(rawValue, radix: 16) + "(" + (parts.isEmpty ? "none" : parts.joined(separator: "|")) + ")"
    }

    /// Whether the caller may sleep: direct reclaim, the GC and shrinkers
    /// may run (`gfpflags_allow_blocking`).
    public var allowsBlocking: Bool { contains(.directReclaim) }
}

/// `PAGE_ALLOC_COSTLY_ORDER`: larger allocations give up early rather
/// than reclaim hard or kill.
public let PAGE_ALLOC_COSTLY_ORDER = 3
/// `MAX_RECLAIM_RETRIES`: reclaim passes without progress before the
/// allocator stops retrying (and kswapd before it gives a node up).
public let MAX_RECLAIM_RETRIES = 16
