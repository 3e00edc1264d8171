/// A process's binder buffer space (drivers/android/binder_alloc.c, with
/// Rust Binder's range allocator and shrinkable page range): a read-only
/// MIXEDMAP VMA in the process's mm, at most 4 MiB of it used, where the
/// kernel writes incoming transactions. Buffers are carved out of it by
/// the range allocator; the pages under a buffer are allocated and inserted
/// into the VMA the first time a buffer covers them, and go on the LRU when
/// no buffer covers them any more.
///
/// The Alloc holds an `mm_count` on the mm, as `ShrinkablePageRange` holds
/// `ARef<Mm>`: the mm's address space may go (new buffers then fail with
/// ESRCH) while the structure stays.
public final class BinderAlloc: NativeObject {
    /// The most of the VMA binder uses (`SZ_4M`).
    public static let maxSize = 4 << 20

    public let machine: Machine
    public let mm: MmStruct
    /// Where the buffer space starts in the process (`buffer`).
    public let userAddress: UInt64
    /// Bytes of buffer space (`buffer_size`).
    public let bufferSize: Int
    let ranges: RangeAllocator<Void>
    let pages: PageRange
    /// Live buffers by offset: released with the Alloc.
    // As RangeAllocator's state.
    @exclusivity(unchecked) private var buffers: [Int: BinderBuffer] = [:]
    @exclusivity(unchecked) public private(set) var isReleased = false

    /// `binder_mmap` of `size` bytes into `mm` under `guard_` (its write
    /// lock): the VMA is read-only for userspace (MAYWRITE cleared),
    /// DONTCOPY and MIXEDMAP. EINVAL for an empty size.
    public init(machine: Machine, mm: MmStruct, size: Int, under guard_: MmapGuard, site: Site) throws(KernelError) {
        guard size > 0 else { throw KernelError(.EINVAL, "binder mmap of \(size) bytes") }
        try mm.checkUsersForBinder()
        let file = machine.newFile()
        let address = try mm.mmap(under: guard_, addr: nil, len: UInt64(size), prot: Mmap.PROT_READ,
                                  flags: Mmap.MAP_PRIVATE, file: file) { (vma: VmaNew) throws(KernelError) in
            do { try vma.tryClear(.maywrite, unless: .write) } catch { throw KernelError(.EPERM, "binder mmap: the VMA is writable") }
            try vma.setDontcopy()
            _ = try vma.setMixedmap()
        }
        self.machine = machine
        self.mm = mm
        userAddress = address
        bufferSize = min(page_align(UInt64(size)).map(Int.init) ?? size, Self.maxSize)
        ranges = try RangeAllocator(size: bufferSize)
        pages = PageRange(machine: machine, mm: mm, vmaAddress: address, file: file, count: bufferSize / PAGE_SIZE)
        super.init(site: site)
        mm.count += 1  // mmgrab
        machine.accounting.track(self)
    }

    override public var typeName: String { "Alloc" }
    override public var description: String {
        "Alloc{mm=\(mm.id), buffer=0x\(String(userAddress, radix: 16)), size=\(bufferSize)}"
    }

    func checkLive(_ what: String) throws(KernelError) {
        if isReleased { throw KernelError(.ESRCH, "\(what) on \(self), which was released") }
    }

    /// `binder_alloc_new_buf`'s size: each part rounded up to 8 bytes, at
    /// least 8; 0 when it overflows (`sanitized_size`).
    public static func sanitizedSize(_ data: UInt64, _ offsets: UInt64, _ extra: UInt64) -> UInt64 {
        func align(_ v: UInt64) -> UInt64? {
            let (r, o) = v.addingReportingOverflow(7)
            return o ? nil : r & ~7
        }
        guard let d = align(data), let o = align(offsets), let e = align(extra) else { return 0 }
        let (tmp, o1) = d.addingReportingOverflow(o)
        guard !o1 else { return 0 }
        let (total, o2) = tmp.addingReportingOverflow(e)
        guard !o2 else { return 0 }
        return max(total, 8)
    }

    /// Reserves a buffer (`binder_alloc_new_buf`): EINVAL for a size that
    /// overflows, ESRCH once the address space or VMA is gone, ENOSPC when
    /// nothing fits or async space is short. Pages it covers that are on
    /// the LRU come off it; the rest are allocated by `populate`.
    public func newBuf(dataSize: UInt64, offsetsSize: UInt64 = 0, extraBuffersSize: UInt64 = 0,
                       isAsync: Bool = false, pid: Int = 0, site: Site) throws(KernelError) -> BinderBuffer {
        try checkLive("new_buf")
        guard mm.users > 0, pages.vma() != nil else {
            throw KernelError(.ESRCH, "new_buf: \(self) has no VMA (the process's address space is gone)")
        }
        let size = Self.sanitizedSize(dataSize, offsetsSize, extraBuffersSize)
        guard size != 0 else {
            throw KernelError(.EINVAL, "new_buf: data \(dataSize) + offsets \(offsetsSize) + extra \(extraBuffersSize) bytes overflows")
        }
        guard size <= UInt64(bufferSize) else {
            throw KernelError(.ENOSPC, "new_buf of \(size) bytes: larger than the buffer space (\(bufferSize))")
        }
        let (offset, spam) = try ranges.reserveNew(size: Int(size), isOneway: isAsync, pid: pid)
        let buffer = BinderBuffer(alloc: self, offset: offset, size: Int(size), isAsync: isAsync, spamDetected: spam, site: site)
        buffer.missing = pages.useRange(offset / PAGE_SIZE, (offset + Int(size) + PAGE_SIZE - 1) / PAGE_SIZE)
        buffers[offset] = buffer
        machine.accounting.track(buffer)
        return buffer
    }

    /// Allocates and maps the pages `buffer` still lacks. They go into the
    /// VMA under the mmap read lock: false when the task must wait for it
    /// (it is blocked, or, unless `mayWait`, nothing happened); call again.
    /// On failure the buffer is freed.
    public func populate(_ buffer: BinderBuffer, site: Site, mayWait: Bool = true) throws(KernelError) -> Bool {
        guard !buffer.missing.isEmpty else { return true }
        let scheduler = machine.scheduler
        do throws(KernelError) {
            try checkLive("new_buf")
            if !buffer.holdsMmapLock {
                try scheduler.mightSleep("binder new_buf")
                guard mm.users > 0 else { throw KernelError(.ESRCH, "new_buf: the process's address space is gone") }
                if buffer.populating == false {
                    buffer.populating = true
                    pages.populating += 1
                }
                if !mayWait, scheduler.wouldWait(for: mm.mmapLock, write: false) { return false }
                guard try scheduler.down(mm.mmapLock, write: false, site: site) else { return false }
                buffer.holdsMmapLock = true
            }
            defer { finishPopulating(buffer) }
            for i in buffer.missing { try pages.populate(i) }
            buffer.missing = []
            return true
        } catch {
            finishPopulating(buffer)
            free(buffer)
            throw error
        }
    }

    private func finishPopulating(_ buffer: BinderBuffer) {
        if buffer.holdsMmapLock {
            buffer.holdsMmapLock = false
            machine.scheduler.up(mm.mmapLock, task: machine.scheduler.current, write: false)
        }
        if buffer.populating {
            buffer.populating = false
            pages.populating -= 1
        }
    }

    /// `binder_alloc_free_buf`: the range is freed (async space returned,
    /// free neighbours merged) and pages no buffer covers go on the LRU.
    func free(_ buffer: BinderBuffer) {
        guard !buffer.isFreed else { return }
        buffer.isFreed = true
        machine.accounting.untrack(buffer)
        guard !isReleased, buffers[buffer.offset] === buffer else { return }
        finishPopulating(buffer)
        buffers[buffer.offset] = nil
        // Every live buffer is a reserved range at its offset, so the
        // abort cannot fail; if it does, the model is broken.
        do {
            let freed = try ranges.reservationAbort(offset: buffer.offset)
            pages.stopUsingRange(freed.start, freed.end)
        } catch {
            machine.reportBrokenInvariant("binder free of \(buffer): \(error)")
        }
    }

    public func pageState(_ i: Int) throws(KernelError) -> String {
        guard i >= 0, i < pages.pages.count else {
            throw KernelError(.EINVAL, "page \(i): \(self) has pages 0 to \(pages.pages.count - 1)")
        }
        return pages.state(i)
    }

    /// Pages active (under a buffer), on the LRU, and not allocated.
    public var pageCounts: (active: Int, lru: Int, free: Int) {
        var counts = (active: 0, lru: 0, free: 0)
        for i in pages.pages.indices {
            switch pages.state(i) {
            case "active": counts.active += 1
            case "lru": counts.lru += 1
            default: counts.free += 1
            }
        }
        return counts
    }

    public var freeAsyncSpace: Int { ranges.freeOnewaySpace }
    public var bufferCount: Int { buffers.count }

    /// The process is done with binder (`binder_alloc_deferred_release`):
    /// every buffer is released, every page loses our reference, and the
    /// mm its `mm_count`. The VMA keeps its pages until it is unmapped.
    public func release() {
        guard !isReleased else { return }
        isReleased = true
        for buffer in buffers.values { finishPopulating(buffer) }
        buffers = [:]
        pages.release()
        mm.drop()
        machine.accounting.untrack(self)
    }
}

/// A buffer of an Alloc (`struct binder_buffer`): it keeps its Alloc alive;
/// dropping it frees it.
public final class BinderBuffer: NativeObject {
    public let alloc: BinderAlloc
    public let offset: Int
    public let size: Int
    public let isAsync: Bool
    /// `reserve_new` saw the caller as a oneway spammer.
    public let spamDetected: Bool
    /// Page indexes still to allocate.
    var missing: [Int] = []
    var holdsMmapLock = false
    var populating = false
    public internal(set) var isFreed = false

    init(alloc: BinderAlloc, offset: Int, size: Int, isAsync: Bool, spamDetected: Bool, site: Site) {
        self.alloc = alloc
        self.offset = offset
        self.size = size
        self.isAsync = isAsync
        self.spamDetected = spamDetected
        super.init(site: site)
    }

    override public var typeName: String { "Buffer" }
    override public var description: String {
        "Buffer{offset=0x\(String(offset, radix: 16)), size=\(size)\(isAsync ? ", async" : "")}"
    }

    /// Where userspace sees it.
    public var userData: UInt64 { alloc.userAddress + UInt64(offset) }

    /// Frees it (dropping the Buffer).
    public func free() { alloc.free(self) }

    /// The buffer's bytes `[off, off + len)`, a page at a time: EINVAL out
    /// of bounds, ESRCH once the Alloc is released.
    func forEachChunk(_ off: Int, _ len: Int, _ what: String,
                      _ body: (UnsafeMutableRawPointer, Int, Int) -> Void) throws(KernelError) {
        try alloc.checkLive(what)
        try checkPageBounds(off, len, size: size)
        var done = 0
        while done < len {
            let at = offset + off + done
            let n = min(len - done, PAGE_SIZE - at % PAGE_SIZE)
            guard let base = alloc.pages.memory(at / PAGE_SIZE) else {
                throw KernelError.bug("\(what) of \(self): page \(at / PAGE_SIZE) is not allocated")
            }
            // SAFETY: `at % PAGE_SIZE + n <= PAGE_SIZE`, inside the page.
            body(base + at % PAGE_SIZE, done, n)
            done += n
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at off: Int) throws(KernelError) {
        guard let source = bytes.baseAddress else { return }
        try forEachChunk(off, bytes.count, "write") { page, done, n in
            // SAFETY: `done + n <= bytes.count`; `page` is valid for `n` bytes.
            page.copyMemory(from: source + done, byteCount: n)
        }
    }

    public func read(_ off: Int, _ len: Int) throws(KernelError) -> [UInt8] {
        try checkPageBounds(off, len, size: size)  // before allocating `len` bytes
        let target = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, len), alignment: 1)
        defer { target.deallocate() }
        try forEachChunk(off, len, "read") { page, done, n in
            // SAFETY: `done + n <= len`, within `target`; `page` is valid for `n` bytes.
            (target.baseAddress.unsafelyUnwrapped + done).copyMemory(from: page, byteCount: n)
        }
        return Array(UnsafeRawBufferPointer(rebasing: target[0..<len]))
    }
}

extension MmStruct {
    /// Binder needs the address space: a bug to map into one that is gone.
    func checkUsersForBinder() throws(KernelError) {
        guard users > 0 else { throw .bug("binder mmap into \(self) after mm_users reached zero") }
    }
}
