/// `kmap_local_page`: temporary mappings of pages, which nest like a stack
/// and must be unmapped in reverse order.
///
/// Lowmem pages map at their direct-map address; highmem pages have none
/// and get a slot address below `FIXADDR_TOP` for the mapping's life.
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

    /// Maps one page: a bug past `maxDepth` (`BUG_ON(idx >= KM_MAX_IDX)`).
    public func map(_ pfn: Pfn, pointer: UnsafeMutableRawPointer, highmem: Bool, cpu: Int) throws(KernelError) -> KmapMapping {
        guard depth < KmapLocal.maxDepth else { throw KmapLocal.overflow() }
        let slot = UInt64(stack.count + cpu * KmapLocal.maxDepth)
        let address = highmem ? KmapLocal.fixaddrTop - slot * UInt64(PAGE_SIZE)
                              : KmapLocal.pageOffset + pfn.phys.rawValue
        let mapping = KmapMapping(pfn: pfn, address: address, pointer: pointer)
        stack.append(mapping)
        return mapping
    }

    /// `kunmap_local`: only the most recent mapping may go. Out of order
    /// is a bug; the mapping goes anyway, so that the stack stays whole.
    public func unmap(_ mapping: KmapMapping) throws(KernelError) {
        mapping.isMapped = false
        if stack.last === mapping {
            stack.removeLast()
            return
        }
        let last = stack.last.map(String.init(describing:)) ?? "none"
        stack.removeAll { $0 === mapping }
        throw KernelError.bug("kunmap_local of \(mapping) out of order: the last mapping is \(last)")
    }

    /// What an accessor's transient mapping needs: a free slot.
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
    public let pfn: Pfn
    /// The kernel virtual address.
    public let address: UInt64
    let pointer: UnsafeMutableRawPointer
    public internal(set) var isMapped = true

    init(pfn: Pfn, address: UInt64, pointer: UnsafeMutableRawPointer) {
        self.pfn = pfn
        self.address = address
        self.pointer = pointer
    }

    public var description: String { "Mapping{pfn=\(pfn), addr=0x\(String(address, radix: 16))}" }

    /// The host pointer for `len` bytes at `off`; out of the page, or after
    /// unmapping, is a bug.
    public func pointer(_ off: Int, _ len: Int) throws(KernelError) -> UnsafeMutableRawPointer {
        guard isMapped else { throw KernelError.bug("use of \(self) after kunmap_local") }
        guard UInt(bitPattern: off) <= UInt(PAGE_SIZE), UInt(bitPattern: len) <= UInt(PAGE_SIZE),
              UInt(bitPattern: off) + UInt(bitPattern: len) <= UInt(PAGE_SIZE) else {
            throw KernelError.bug("out of bounds: \(len) bytes at offset \(off) through \(self), valid for \(PAGE_SIZE) bytes")
        }
        // SAFETY: `off + len <= PAGE_SIZE` and the mapping covers the page while mapped.
        return pointer + off
    }
}
