/// `kmap_local_page`: temporary mappings of pages (`__kmap_local_page_prot`).
///
/// A lowmem page is in the direct map: its mapping is its direct-map
/// address, and takes no slot. A highmem page has no permanent mapping
/// and takes one of the task's 16 slots, at an address below
/// `FIXADDR_TOP`, for the mapping's life; those nest like a stack and must
/// be unmapped in reverse order.
public final class KmapLocal {
    /// `KM_MAX_IDX`: mappings may nest this deep.
    public static let maxDepth = 16
    /// `PAGE_OFFSET`: the start of the direct map (x86-64, 4-level paging).
    public static let pageOffset: UInt64 = 0xffff_8880_0000_0000
    /// The top of the fixmap, below which kmap slots are placed.
    public static let fixaddrTop: UInt64 = 0xffff_ffff_ff7f_f000

    public private(set) var stack: [KmapMapping] = [] {
        didSet { depth = stack.count }
    }
    /// Mappings in place. Read by every page access: kept apart from the
    /// stack, and without a dynamic exclusivity check.
    @exclusivity(unchecked) public private(set) var depth = 0

    public init() {}

    /// Maps one page: a highmem page past `maxDepth` slots is a bug
    /// (`BUG_ON(idx >= KM_MAX_IDX)`).
    public func map(_ page: any PageAccess, pointer: UnsafeMutableRawPointer, highmem: Bool, cpu: Int) throws(KernelError) -> KmapMapping {
        let pfn = page.pfn
        guard highmem else {
            return KmapMapping(page, address: KmapLocal.pageOffset + pfn.phys.rawValue, pointer: pointer, slotted: false)
        }
        guard depth < KmapLocal.maxDepth else { throw KmapLocal.overflow() }
        let slot = UInt64(stack.count + cpu * KmapLocal.maxDepth)
        let mapping = KmapMapping(page, address: KmapLocal.fixaddrTop - slot * UInt64(PAGE_SIZE), pointer: pointer,
                                  slotted: true)
        stack.append(mapping)
        return mapping
    }

    /// `kunmap_local`: a direct-map address needs nothing undone; of the
    /// slots, only the most recent may go. Out of order is a bug; the
    /// mapping goes anyway, so that the stack stays whole.
    public func unmap(_ mapping: KmapMapping) throws(KernelError) {
        mapping.isMapped = false
        guard mapping.slotted else { return }
        if stack.last === mapping {
            stack.removeLast()
            return
        }
        let last = stack.last.map(String.init(describing:)) ?? "none"
        stack.removeAll { $0 === mapping }
        throw KernelError.bug("kunmap_local of \(mapping) out of order: the last mapping is \(last)")
    }

    /// What an accessor's transient mapping of a highmem page needs: a free slot.
    @inlinable
    public func checkSlot() throws(KernelError) {
        if depth >= KmapLocal.maxDepth { throw KmapLocal.overflow() }
    }

    @usableFromInline
    static func overflow() -> KernelError {
        .bug("kmap_local_page: more than \(maxDepth) nested mappings")
    }
}

/// One kmap_local mapping of a page: valid for `PAGE_SIZE` bytes until unmapped.
public final class KmapMapping: CustomStringConvertible {
    /// The page it maps: each access checks the page is still there.
    public let page: any PageAccess
    public var pfn: Pfn { page.pfn }
    /// The kernel virtual address.
    public let address: UInt64
    let pointer: UnsafeMutableRawPointer
    /// It took a kmap slot (a highmem page).
    public let slotted: Bool
    public internal(set) var isMapped = true

    init(_ page: any PageAccess, address: UInt64, pointer: UnsafeMutableRawPointer, slotted: Bool) {
        self.page = page
        self.address = address
        self.pointer = pointer
        self.slotted = slotted
    }

    public var description: String { "Mapping{pfn=\(pfn), addr=0x\(String(address, radix: 16))}" }

    /// The host pointer for `len` bytes at `off`; out of the page, after
    /// unmapping, or once the page is freed (a borrowed page's owner may
    /// free it while it is mapped), is a bug.
    public func pointer(_ off: Int, _ len: Int) throws(KernelError) -> UnsafeMutableRawPointer {
        guard isMapped else { throw KernelError.bug("use of \(self) after kunmap_local") }
        try page.checkAlive()
        guard UInt(bitPattern: off) <= UInt(PAGE_SIZE), UInt(bitPattern: len) <= UInt(PAGE_SIZE),
              UInt(bitPattern: off) + UInt(bitPattern: len) <= UInt(PAGE_SIZE) else {
            throw KernelError.bug("out of bounds: \(len) bytes at offset \(off) through \(self), valid for \(PAGE_SIZE) bytes")
        }
        // SAFETY: `off + len <= PAGE_SIZE` and the mapping covers the page while mapped.
        return pointer + off
    }
}
