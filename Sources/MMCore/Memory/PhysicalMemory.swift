#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a range of physical addresses is (the e820 / `memmap=` types).
public enum MemoryKind: String, Sendable, CaseIterable {
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
    public var endPfn: Pfn { end.pfn }
    public var pageCount: UInt64 { size >> UInt64(PAGE_SHIFT) }
    public func contains(_ pfn: Pfn) -> Bool { pfn >= startPfn && pfn < endPfn }
}

/// `ZERO_PAGE(0)`'s frame: the kernel image's `empty_zero_page`, which read
/// faults on untouched private anonymous memory map. mmlab puts the kernel
/// image's page at the last frame below `maxPhysAddr`, which no memory map
/// may cover.
public let ZERO_PAGE_PFN = Pfn((maxPhysAddr >> UInt64(PAGE_SHIFT)) - 1)

/// The machine's physical memory: its map, the host memory behind RAM and
/// reserved regions, and their `struct page`s; and the zero page.
///
/// RAM and reserved regions are backed by anonymous mappings the host
/// populates on first touch, and page structs are allocated a section at a
/// time when first used, so a machine with 64 GiB costs what it uses.
///
/// # Invariants
///
/// Regions are page aligned, sorted, disjoint and below `maxPhysAddr`.
/// `backing[i]` maps all of `regions[i]` unless it is MMIO (`nil`).
public final class PhysicalMemory {
    public let regions: [MemoryRegion]
    private let backing: [UnsafeMutableRawPointer?]
    /// The zero page's memory: zeros, which nothing may write.
    public let zeroPage: UnsafeMutableRawPointer
    /// Read on every page lookup; only `page(_:)` writes it, and calls nothing meanwhile.
    @exclusivity(unchecked) private var sections: [UnsafeMutablePointer<StructPage>?]

    init(regions: [MemoryRegion]) throws(KernelError) {
        self.regions = regions
        sections = Array(repeating: nil, count: Int(maxPhysAddr >> UInt64(PAGE_SHIFT + sectionShift)))
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
        zeroPage = .allocate(byteCount: PAGE_SIZE, alignment: PAGE_SIZE)
        zeroPage.initializeMemory(as: UInt8.self, repeating: 0, count: PAGE_SIZE)
    }

    deinit {
        for (region, p) in zip(regions, backing) {
            // SAFETY: `p` is the mapping `init` made for exactly this region.
            if let p { munmap(p, Int(region.size)) }
        }
        for case let section? in sections { free(section) }
        // SAFETY: `init` allocated it; nothing else frees it.
        zeroPage.deallocate()
    }

    /// The region holding `pfn`.
    public func region(of pfn: Pfn) -> MemoryRegion? {
        regionIndex(of: pfn).map { regions[$0] }
    }

    func regionIndex(of pfn: Pfn) -> Int? {
        var lo = 0, hi = regions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if regions[mid].endPfn <= pfn { lo = mid + 1 } else { hi = mid }
        }
        return lo < regions.count && regions[lo].contains(pfn) ? lo : nil
    }

    /// Whether `pfn` has a `struct page` (`pfn_valid`): RAM or reserved.
    public func pfnValid(_ pfn: Pfn) -> Bool {
        if pfn == ZERO_PAGE_PFN { return true }
        guard let kind = region(of: pfn)?.kind else { return false }
        return kind != .mmio
    }

    /// Whether `pfn` is System RAM (`page_is_ram`); reserved RAM counts.
    public func pageIsRam(_ pfn: Pfn) -> Bool { pfnValid(pfn) }

    /// Whether `pfn` is RAM the allocator manages.
    func isManaged(_ pfn: Pfn) -> Bool { region(of: pfn)?.kind == .ram }

    /// The host memory behind a valid frame: what the direct map and
    /// kmap both reach. Whoever asks may write it, so the frame no longer
    /// counts as holding only the poison (`StructPage.intact`).
    public func address(of pfn: Pfn) -> UnsafeMutableRawPointer? {
        reached(pfn, frames: 1)
        return rawAddress(of: pfn)
    }

    /// `frames` frames from `pfn` may be written from now on: none of them
    /// counts as holding only the poison.
    func reached(_ pfn: Pfn, frames: Int) {
        guard let head = existingPage(pfn) else { return }
        // SAFETY: an allocated block lies in one section, whose `struct page`s are contiguous.
        for i in 0..<frames { (head + i).pointee.intact = false }
    }

    /// `address(of:)` for the allocator, which keeps `intact` itself, and
    /// for a `Page`, which calls `reached` when first touched.
    func rawAddress(of pfn: Pfn) -> UnsafeMutableRawPointer? {
        if pfn == ZERO_PAGE_PFN { return zeroPage }
        guard let i = regionIndex(of: pfn), let base = backing[i] else { return nil }
        let offset = (pfn.rawValue - regions[i].startPfn.rawValue) << UInt64(PAGE_SHIFT)
        // SAFETY: `pfn` lies in region `i`, so the offset is inside its mapping.
        return base + Int(offset)
    }

    /// The `struct page` of a valid frame if its section exists; a missing
    /// section holds only never-used frames.
    @inline(__always)
    func existingPage(_ pfn: Pfn) -> UnsafeMutablePointer<StructPage>? {
        let index = Int(pfn.rawValue >> UInt64(sectionShift))
        guard index < sections.count, let section = sections[index] else { return nil }
        // SAFETY: a section holds `1 << sectionShift` entries and the mask keeps the index inside.
        return section + Int(pfn.rawValue & UInt64((1 << sectionShift) - 1))
    }

    /// The `struct page` of a valid frame, allocating its section on first
    /// use: ENOMEM when the host has no memory for it.
    @inline(__always)
    func page(_ pfn: Pfn) throws(KernelError) -> UnsafeMutablePointer<StructPage> {
        if let page = existingPage(pfn) { return page }
        let index = Int(pfn.rawValue >> UInt64(sectionShift))
        let count = 1 << sectionShift
        // calloc of this size maps zero pages lazily; zero is a never-used frame.
        guard let raw = calloc(count, MemoryLayout<StructPage>.stride) else {
            throw KernelError(.ENOMEM, "no host memory for the page structs of section \(index)")
        }
        sections[index] = raw.bindMemory(to: StructPage.self, capacity: count)
        return try page(pfn)
    }

    /// Whether the zero page still holds only zeros.
    public var zeroPageIsClean: Bool {
        // SAFETY: the zero page is PAGE_SIZE bytes.
        UnsafeRawBufferPointer(start: zeroPage, count: PAGE_SIZE).allSatisfy { $0 == 0 }
    }

    /// Sections of page structs allocated so far.
    public var allocatedSections: Int { sections.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }
}
