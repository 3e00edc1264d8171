/// An owned block of `1 << order` pages, as `kernel::page::Page`: the
/// pages return to the allocator when it is freed.
///
/// # Invariants
///
/// Until `free`, the object owns frames `pfn ..< pfn + (1 << order)` and
/// `base` is their direct-map address, valid for `size` bytes.
public final class Page: NativeObject {
    public let machine: Machine
    public let pfn: Pfn
    public let order: Int
    @usableFromInline let base: UnsafeMutableRawPointer
    /// `PAGE_SIZE << order` bytes.
    public let size: Int
    /// Where it was freed, once it is. Read on every access, written once
    /// by `free`: no dynamic exclusivity check is needed.
    @exclusivity(unchecked) public private(set) var freedAt: Site?

    private init(machine: Machine, pfn: Pfn, order: Int, base: UnsafeMutableRawPointer, site: Site) {
        self.machine = machine
        self.pfn = pfn
        self.order = order
        self.base = base
        self.size = PAGE_SIZE << order
        super.init(site: site)
    }

    /// Allocates a page (`Page::alloc_page`); `__GFP_ZERO` zeroes it.
    public static func allocPage(_ machine: Machine, _ gfp: Gfp, site: Site = .unknown) throws(KernelError) -> Page {
        let pfn = try machine.pageAllocator.allocPages(order: 0)
        guard let base = machine.memory.address(of: pfn) else {
            machine.pageAllocator.freePages(pfn, order: 0)
            throw KernelError.bug("allocator returned pfn \(pfn) without a direct mapping")
        }
        // INVARIANT: the allocator just gave us these frames.
        let page = Page(machine: machine, pfn: pfn, order: 0, base: base, site: site)
        if gfp.contains(.zero) {
            // SAFETY: `base` is valid for `size` bytes by the type invariant.
            base.initializeMemory(as: UInt8.self, repeating: 0, count: page.size)
        }
        machine.accounting.track(page)
        return page
    }

    /// Frees the pages (`__free_pages`). Freeing twice is a bug.
    public func free(site: Site = .unknown) throws(KernelError) {
        if freedAt != nil { throw doubleFree() }
        freedAt = site
        machine.pageAllocator.freePages(pfn, order: order)
        machine.accounting.untrack(self)
    }

    public var isFreed: Bool { freedAt != nil }
    /// The physical address of the first byte (`page_to_phys`).
    public var phys: PhysAddr { pfn.phys }
    /// The NUMA node: the model has one.
    public var nid: Int { 0 }

    override public var typeName: String { "Page" }
    override public var description: String { "Page{pfn=\(pfn), order=\(order)}" }

    private func doubleFree() -> KernelError {
        .bug("double free: \(self) freed at \(machine.sites.name(freedAt ?? .unknown))")
    }
}

// Access, bounds checked in one place as `with_pointer_into_page` does.
extension Page {
    /// A pointer `off` bytes into the pages, valid for `len` bytes, if
    /// `off <= size && len <= size && off + len <= size`; otherwise EINVAL.
    /// Offsets and lengths are unsigned: a negative one is out of bounds.
    @inlinable
    public func pointerIntoPage(_ off: Int, _ len: Int) throws(KernelError) -> UnsafeMutableRawPointer {
        let size = UInt(bitPattern: self.size)
        let uoff = UInt(bitPattern: off), ulen = UInt(bitPattern: len)
        guard uoff <= size, ulen <= size, uoff + ulen <= size else {
            throw KernelError(.EINVAL, "offset \(off) + length \(len) exceeds the page (\(size))")
        }
        guard freedAt == nil else { throw useAfterFree() }
        // SAFETY: `off <= size`, so the result is in bounds or one past the end.
        return base + off
    }

    @usableFromInline
    func useAfterFree() -> KernelError {
        .bug("use after free: \(self) freed at \(machine.sites.name(freedAt ?? .unknown))")
    }

    /// Runs `body` with a pointer valid for `len` bytes at `off`, or throws
    /// EINVAL without calling it (`with_pointer_into_page`).
    @inlinable
    public func withPointerIntoPage<R>(_ off: Int, _ len: Int,
                                       _ body: (UnsafeMutableRawPointer) throws(KernelError) -> R) throws(KernelError) -> R {
        try body(pointerIntoPage(off, len))
    }

    public func readRaw(_ off: Int, _ len: Int) throws(KernelError) -> [UInt8] {
        let p = try pointerIntoPage(off, len)
        // SAFETY: `p` is valid for `len` bytes.
        return Array(UnsafeRawBufferPointer(start: p, count: len))
    }

    public func writeRaw(_ bytes: some Collection<UInt8>, _ off: Int) throws(KernelError) {
        let p = try pointerIntoPage(off, bytes.count)
        // SAFETY: `p` is valid for `bytes.count` bytes.
        UnsafeMutableRawBufferPointer(start: p, count: bytes.count).copyBytes(from: bytes)
    }

    public func fillZeroRaw(_ off: Int, _ len: Int) throws(KernelError) {
        let p = try pointerIntoPage(off, len)
        // SAFETY: `p` is valid for `len` bytes.
        p.initializeMemory(as: UInt8.self, repeating: 0, count: len)
    }

    /// Reads a little-endian integer (`read_u8` ... `read_u64`).
    @inlinable
    public func read<T: FixedWidthInteger>(_: T.Type, at off: Int) throws(KernelError) -> T {
        let p = try pointerIntoPage(off, MemoryLayout<T>.size)
        // SAFETY: `p` is valid for `MemoryLayout<T>.size` bytes.
        return T(littleEndian: p.loadUnaligned(as: T.self))
    }

    /// Writes a little-endian integer (`write_u8` ... `write_u64`).
    @inlinable
    public func write<T: FixedWidthInteger>(_ value: T, at off: Int) throws(KernelError) {
        let p = try pointerIntoPage(off, MemoryLayout<T>.size)
        // SAFETY: `p` is valid for `MemoryLayout<T>.size` bytes.
        p.storeBytes(of: value.littleEndian, as: T.self)
    }
}
