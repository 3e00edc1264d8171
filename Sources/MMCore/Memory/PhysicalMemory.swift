#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a range of physical addresses is (the e820 / `memmap=` types).
public enum MemoryKind: String, Sendable {
    /// RAM the page allocator hands out.
    case ram
    /// RAM with page structs and a direct mapping that the allocator never
    /// hands out (firmware, boot tables).
    case reserved
    /// Device memory: no page structs.
    case mmio
}

public struct MemoryRegion: Equatable, Sendable {
    public var start: PhysAddr
    public var size: UInt64
    public var kind: MemoryKind

    public init(start: PhysAddr, size: UInt64, kind: MemoryKind) {
        self.start = start
        self.size = size
        self.kind = kind
    }

    public var end: PhysAddr { PhysAddr(start.rawValue + size) }
    public var startPfn: Pfn { start.pfn }
    public var pageCount: UInt64 { size >> UInt64(PAGE_SHIFT) }
    public func contains(_ pfn: Pfn) -> Bool {
        pfn >= startPfn && pfn.rawValue < startPfn.rawValue + pageCount
    }
}

/// The machine's physical memory and its direct map.
///
/// RAM and reserved regions are backed by anonymous mappings that the host
/// populates on first touch, so a machine with 64 GiB costs what it uses.
///
/// # Invariants
///
/// `backing[i]` maps all of `regions[i]` when it is RAM or reserved, and is
/// `nil` for MMIO. Regions are page aligned, sorted and disjoint.
public final class PhysicalMemory {
    public let regions: [MemoryRegion]
    private let backing: [UnsafeMutableRawPointer?]

    init(regions: [MemoryRegion]) throws(KernelError) {
        self.regions = regions
        var backing: [UnsafeMutableRawPointer?] = []
        for region in regions {
            guard region.kind != .mmio else {
                backing.append(nil)
                continue
            }
            let p = mmap(nil, Int(region.size), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let p, p != MAP_FAILED else {
                for (mapped, r) in zip(backing, regions) { if let mapped { munmap(mapped, Int(r.size)) } }
                throw KernelError(.ENOMEM, "cannot reserve \(region.size) bytes of host address space")
            }
            backing.append(p)
        }
        self.backing = backing
    }

    deinit {
        for (region, p) in zip(regions, backing) {
            // SAFETY: `p` is the mapping `init` made for exactly this region.
            if let p { munmap(p, Int(region.size)) }
        }
    }

    /// The index of the region holding `pfn`.
    public func regionIndex(of pfn: Pfn) -> Int? {
        regions.firstIndex { $0.contains(pfn) }
    }

    /// The direct-map address of a RAM or reserved frame (`page_address`).
    public func address(of pfn: Pfn) -> UnsafeMutableRawPointer? {
        guard let i = regionIndex(of: pfn), let base = backing[i] else { return nil }
        let offset = (pfn.rawValue - regions[i].startPfn.rawValue) << UInt64(PAGE_SHIFT)
        // SAFETY: `pfn` lies in region `i`, so the offset is inside its mapping.
        return base + Int(offset)
    }
}
