/// `off <= size && len <= size && off + len <= size`, or EINVAL: the
/// bounds rule of `with_pointer_into_page`, the one place it lives.
/// Offsets and lengths are unsigned: a negative one is out of bounds.
@inlinable
public func checkPageBounds(_ off: Int, _ len: Int, size: Int) throws(KernelError) {
    let usize = UInt(bitPattern: size), uoff = UInt(bitPattern: off), ulen = UInt(bitPattern: len)
    guard uoff <= usize, ulen <= usize, uoff + ulen <= usize else { throw pageBoundsError(off, len, size) }
}

@usableFromInline
func zeroPageWrite(_ pfn: Pfn) -> KernelError {
    .bug("write to the shared zero page (pfn \(pfn)): it is mapped read-only wherever it is mapped")
}

@usableFromInline
func pageBoundsError(_ off: Int, _ len: Int, _ size: Int) -> KernelError {
    KernelError(.EINVAL, "offset \(off) + length \(len) exceeds the page (\(size))")
}

/// What `Page` and `BorrowedPage` share (a `BorrowedPage` derefs to a
/// `Page` in Rust): the frame, and access to its bytes. Every accessor
/// goes through `pointerIntoPage`.
public protocol PageAccess: AnyObject, CustomStringConvertible {
    var machine: Machine { get }
    var pfn: Pfn { get }
    var order: Int { get }
    /// `PAGE_SIZE << order` bytes.
    var size: Int { get }
    /// A pointer `off` bytes in, valid for `len` bytes, after the bounds
    /// rule and the checks that the page may be touched now.
    func pointerIntoPage(_ off: Int, _ len: Int) throws(KernelError) -> UnsafeMutableRawPointer
    /// Throws unless the page may be touched now.
    func checkAccess() throws(KernelError)
    /// Throws if the page was freed (a borrowed one: or reallocated)
    /// since: `checkAccess` for a pointer that holds its kmap slot.
    func checkAlive() throws(KernelError)
}

extension PageAccess {
    /// The physical address of the first byte (`page_to_phys`).
    public var phys: PhysAddr { pfn.phys }
    /// The NUMA node: the model has one.
    public var nid: Int { 0 }
    /// `page_ref_count`.
    public var refcount: Int { machine.pageAllocator.refcount(pfn) }
    /// Whether the page is in HighMem (no permanent kernel mapping).
    public var isHighmem: Bool { pfn.rawValue >= machine.pageAllocator.highmemStart }

    public func readRaw(_ off: Int, _ len: Int) throws(KernelError) -> [UInt8] {
        let p = try pointerIntoPage(off, len)
        // SAFETY: `p` is valid for `len` bytes.
        return Array(UnsafeRawBufferPointer(start: p, count: len))
    }

    /// Writing the zero page would change every mapping of it: a bug.
    @inlinable
    public func checkWritable() throws(KernelError) {
        if pfn == ZERO_PAGE_PFN { throw zeroPageWrite(pfn) }
    }

    public func writeRaw(_ bytes: some Collection<UInt8>, _ off: Int) throws(KernelError) {
        try checkWritable()
        let p = try pointerIntoPage(off, bytes.count)
        // SAFETY: `p` is valid for `bytes.count` bytes.
        UnsafeMutableRawBufferPointer(start: p, count: bytes.count).copyBytes(from: bytes)
    }

    public func fillZeroRaw(_ off: Int, _ len: Int) throws(KernelError) {
        try checkWritable()
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
        try checkWritable()
        let p = try pointerIntoPage(off, MemoryLayout<T>.size)
        // SAFETY: `p` is valid for `MemoryLayout<T>.size` bytes.
        p.storeBytes(of: value.littleEndian, as: T.self)
    }

    /// `kmap_local_page` of the first page; `unmap` it in reverse order.
    public func map() throws(KernelError) -> KmapMapping {
        try checkAccess()
        guard let pointer = machine.memory.address(of: pfn) else {
            throw KernelError.bug("kmap_local_page of pfn \(pfn), which has no memory behind it")
        }
        return try machine.kmap.map(self, pointer: pointer, highmem: isHighmem, cpu: machine.scheduler.current.cpu)
    }
}

/// An owned block of `1 << order` pages, as `kernel::page::Page`: its
/// reference goes when it is freed, and the memory returns to the
/// allocator with the last reference.
///
/// # Invariants
///
/// Until `free` or `intoPhys`, the object holds a reference to the head of
/// the allocated block at `pfn`, and `base` is the block's memory, valid for
/// `size` bytes.
public final class Page: NativeObject, PageAccess {
    public let machine: Machine
    public let pfn: Pfn
    public let order: Int
    public let size: Int
    @usableFromInline let base: UnsafeMutableRawPointer
    /// Where it was freed, once it is. Read on every access, written once
    /// by `free`: no dynamic exclusivity check is needed.
    @exclusivity(unchecked) public private(set) var freedAt: Site?
    /// Whether an accessor has reached the memory yet: the first one
    /// tells the frames they may be written (`PhysicalMemory.reached`).
    @usableFromInline @exclusivity(unchecked) var touched = false

    private init(machine: Machine, pfn: Pfn, order: Int, base: UnsafeMutableRawPointer, site: Site) {
        self.machine = machine
        self.pfn = pfn
        self.order = order
        self.base = base
        self.size = PAGE_SIZE << order
        super.init(site: site)
    }

    /// Allocates a page (`Page::alloc_page`).
    public static func allocPage(_ machine: Machine, _ gfp: Gfp, site: Site = .unknown) throws(KernelError) -> Page {
        try allocPages(machine, gfp, order: 0, site: site)
    }

    /// Allocates `1 << order` contiguous pages (`alloc_pages`).
    public static func allocPages(_ machine: Machine, _ gfp: Gfp, order: Int, site: Site = .unknown) throws(KernelError) -> Page {
        // The caller holds the machine, which holds its scheduler and allocator.
        if gfp.allowsBlocking {
            try withUnretained(machine.unretained.scheduler) { (scheduler) throws(KernelError) in try scheduler.mightSleep("alloc_pages(GFP_KERNEL)") }
        }
        let pfn = try withUnretained(machine.unretained.pageAllocator) { (allocator) throws(KernelError) in
            try allocator.allocPages(gfp, order: order, site: site)
        }
        guard let base = machine.memory.rawAddress(of: pfn) else {
            throw KernelError.bug("the allocator returned pfn \(pfn), which has no memory behind it")
        }
        // INVARIANT: the allocator just gave us the block and its one reference.
        let page = Page(machine: machine, pfn: pfn, order: order, base: base, site: site)
        withUnretained(machine.unretained.accounting) { $0.track(page) }
        return page
    }

    /// Drops the reference (`__free_pages`). Freeing twice, or after
    /// giving the page away with `intoPhys`, is a bug.
    public func free(site: Site = .unknown) throws(KernelError) {
        if let freedAt { throw .bug("double free: \(self) freed at \(machine.sites.name(freedAt))") }
        if isGivenAway { throw .bug("free of \(self), which was given away with into_phys") }
        // `self` holds the machine, which holds its allocator and accounting.
        try withUnretained(machine.unretained.pageAllocator) { (allocator) throws(KernelError) in
            try allocator.freePages(pfn, order: order, site: site)
        }
        freedAt = site
        withUnretained(machine.unretained.accounting) { $0.untrack(self) }
    }

    public var isFreed: Bool { freedAt != nil }
    /// Whether `intoPhys` gave it away and `fromPhys` has not taken it back.
    public var isGivenAway: Bool {
        // The frame's flag first: a free should not cost a dictionary lookup.
        machine.memory.existingPage(pfn)?.pointee.has(StructPage.Flag.intoPhys) == true && machine.givenAway[pfn] === self
    }

    override public var typeName: String { "Page" }
    override public var description: String { Page.describe(pfn: pfn, order: order) }
    public static func describe(pfn: Pfn, order: Int) -> String { "Page{pfn=\(pfn), order=\(order)}" }

    @inlinable
    public func pointerIntoPage(_ off: Int, _ len: Int) throws(KernelError) -> UnsafeMutableRawPointer {
        try checkPageBounds(off, len, size: size)
        try checkAccess()
        if !touched { touch() }
        // SAFETY: `off <= size`, so the result is in bounds or one past the end.
        return base + off
    }

    @usableFromInline
    func touch() {
        touched = true
        machine.memory.reached(pfn, frames: 1 << order)
    }

    /// A highmem page's accessor maps it for the access: it needs a slot.
    @inlinable
    public func checkAccess() throws(KernelError) {
        try checkAlive()
        if pfn.rawValue >= machine.pageAllocator.highmemStart { try machine.kmap.checkSlot() }
    }

    @inlinable
    public func checkAlive() throws(KernelError) {
        if freedAt != nil { throw useAfterFree() }
    }

    @usableFromInline
    func useAfterFree() -> KernelError {
        .bug("use after free: \(self) freed at \(machine.sites.name(freedAt ?? .unknown))")
    }
}

/// A page someone else owns, borrowed by physical address (`BorrowedPage`).
/// Dropping it releases nothing. Touching it once the page has been freed
/// is a bug, as KASAN would report; so is touching a page that was free
/// when it was borrowed.
///
/// # Invariants
///
/// `pfn` has a `struct page`; `generation` is the allocation that owned the
/// frame when it was borrowed (nil for reserved frames, which never change).
public final class BorrowedPage: PageAccess {
    public let machine: Machine
    public let pfn: Pfn
    public var order: Int { 0 }
    public var size: Int { PAGE_SIZE }
    let base: UnsafeMutableRawPointer
    let generation: UInt32?

    init(machine: Machine, pfn: Pfn, base: UnsafeMutableRawPointer) {
        self.machine = machine
        self.pfn = pfn
        self.base = base
        if machine.memory.isManaged(pfn) {
            let state = machine.pageAllocator.allocation(of: pfn)
            generation = state.allocated ? state.generation : 0
        } else {
            generation = nil
        }
    }

    public var description: String { BorrowedPage.describe(pfn: pfn) }
    public static func describe(pfn: Pfn) -> String { "BorrowedPage{pfn=\(pfn)}" }

    public func pointerIntoPage(_ off: Int, _ len: Int) throws(KernelError) -> UnsafeMutableRawPointer {
        try checkPageBounds(off, len, size: size)
        try checkAccess()
        // SAFETY: `off <= PAGE_SIZE`, so the result is in bounds or one past the end.
        return base + off
    }

    public func checkAccess() throws(KernelError) {
        try checkAlive()
        if isHighmem { try machine.kmap.checkSlot() }
    }

    public func checkAlive() throws(KernelError) {
        if let generation {
            let now = machine.pageAllocator.allocation(of: pfn)
            if !now.allocated || now.generation != generation || generation == 0 {
                throw useAfterFree(now)
            }
        }
    }

    private func useAfterFree(_ now: (allocated: Bool, generation: UInt32, freedAt: Site)) -> KernelError {
        if generation == 0 {
            return .bug("use after free: \(self) was free when it was borrowed")
        }
        let freed = now.freedAt == .unknown ? "" : " freed at \(machine.sites.name(now.freedAt))"
        let since = now.allocated ? " (and reallocated since)" : ""
        return .bug("use after free: \(self)\(freed)\(since)")
    }
}

// Ownership transfer by physical address (the Asahi series).
extension Page {
    /// `Page::into_phys`: gives up ownership; the page stays allocated
    /// and `fromPhys` of the address takes it back.
    public static func intoPhys(_ page: Page) throws(KernelError) -> PhysAddr {
        if let freedAt = page.freedAt { throw .bug("into_phys of \(page), freed at \(page.machine.sites.name(freedAt))") }
        if page.isGivenAway { throw .bug("into_phys of \(page), which was given away already") }
        try page.machine.memory.page(page.pfn).pointee.flags |= StructPage.Flag.intoPhys
        page.machine.givenAway[page.pfn] = page
        return page.phys
    }

    /// `Page::from_phys`: the owned page given away at `pa`. Anything but an
    /// address from `intoPhys`, taken back once, is a bug (the kernel's
    /// safety contract, which it cannot check).
    public static func fromPhys(_ machine: Machine, _ pa: PhysAddr) throws(KernelError) -> Page {
        guard pa.isPageAligned else {
            throw .bug("from_phys of \(pa), which is not page aligned: it did not come from into_phys")
        }
        guard let page = machine.givenAway.removeValue(forKey: pa.pfn) else {
            throw .bug("from_phys of \(pa), which did not come from into_phys or was taken back already")
        }
        machine.memory.existingPage(page.pfn)?.pointee.flags &= ~StructPage.Flag.intoPhys
        return page
    }

    /// `Page::borrow_phys`: the page at `pa`, or nil unless its frame has a
    /// `struct page` and is RAM. Like `phys_to_pfn`, it ignores the offset
    /// within the page.
    public static func borrowPhys(_ machine: Machine, _ pa: PhysAddr) -> BorrowedPage? {
        let pfn = pa.pfn
        guard machine.memory.pfnValid(pfn), machine.memory.pageIsRam(pfn),
              let base = machine.memory.address(of: pfn) else { return nil }
        return BorrowedPage(machine: machine, pfn: pfn, base: base)
    }

    /// `Page::borrow_phys_unchecked`: as `borrowPhys`, but an address
    /// without a `struct page` is the caller's undefined behaviour: a bug.
    public static func borrowPhysUnchecked(_ machine: Machine, _ pa: PhysAddr) throws(KernelError) -> BorrowedPage {
        guard let page = borrowPhys(machine, pa) else {
            throw .bug("borrow_phys_unchecked of \(pa), which has no struct page (not RAM)")
        }
        return page
    }
}
