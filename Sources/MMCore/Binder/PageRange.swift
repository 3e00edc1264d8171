/// Rust Binder's `ShrinkablePageRange` (drivers/android/binder/page_range.rs):
/// the pages behind a process's binder mmap. Each page is free (none
/// allocated), in use (a buffer covers it) or available (allocated, unused,
/// on the shrinker's LRU). Pages are allocated when a buffer first covers
/// them and inserted into the VMA with `vm_insert_page`; when no buffer
/// covers them any more they go on the LRU, and the shrinker frees them
/// under memory pressure, zapping them from the VMA.
final class PageInfo {
    unowned let range: PageRange
    let index: Int
    /// The page (our reference), when allocated.
    var pfn: Pfn?
    /// Its place on the LRU, when on it.
    var lruSeq: UInt64?

    init(range: PageRange, index: Int) {
        self.range = range
        self.index = index
    }
}

final class PageRange {
    let machine: Machine
    /// The process's mm (the owning Alloc holds an `mm_count` on it).
    let mm: MmStruct
    /// The VMA the pages go into, recognised by its driver file.
    let vmaAddress: UInt64
    let file: Int
    // As RangeAllocator's state.
    @exclusivity(unchecked) private(set) var pages: [PageInfo] = []
    /// A task is inserting pages (`mm_lock` held): the shrinker skips us.
    @exclusivity(unchecked) var populating = 0
    private(set) var isReleased = false

    init(machine: Machine, mm: MmStruct, vmaAddress: UInt64, file: Int, count: Int) {
        self.machine = machine
        self.mm = mm
        self.vmaAddress = vmaAddress
        self.file = file
        pages = []
        pages = (0..<count).map { PageInfo(range: self, index: $0) }
    }

    var lru: BinderLru { machine.binderLru }

    /// Pages `[start, end)` come into use: those on the LRU leave it; the
    /// indexes of those that must be allocated.
    func useRange(_ start: Int, _ end: Int) -> [Int] {
        var missing: [Int] = []
        for i in start..<max(start, end) {
            if pages[i].pfn != nil { lru.remove(pages[i]) } else { missing.append(i) }
        }
        return missing
    }

    /// `stop_using_range`: allocated pages of `[start, end)` go on the LRU.
    func stopUsingRange(_ start: Int, _ end: Int) {
        guard start < end, !isReleased else { return }
        for i in (start..<end).reversed() where pages[i].pfn != nil { lru.add(pages[i]) }
    }

    /// The binder VMA, if it is still mapped (`check_vma`).
    func vma() -> VmArea? {
        guard let vma = mm.find(vmaAddress), vma.start == vmaAddress, vma.backing == .file(file),
              vma.flags.contains(.mixedmap) else { return nil }
        return vma
    }

    /// Allocates page `i` and inserts it into the VMA (`use_page_slow`);
    /// the caller holds the mmap lock for reading.
    func populate(_ i: Int) throws(KernelError) {
        guard pages[i].pfn == nil else { return }
        let pfn = try machine.pageAllocator.allocPages([.kernel, .highmem, .zero], order: 0)
        guard let vma = vma() else {
            machine.pageAllocator.putOwned(pfn, by: "the binder page range at 0x\(String(vmaAddress, radix: 16))")
            throw KernelError(.ESRCH, "binder: the buffer VMA at 0x\(String(vmaAddress, radix: 16)) is gone")
        }
        do {
            try mm.insertPage(into: vma, at: vmaAddress + UInt64(i * PAGE_SIZE), pfn: pfn)
        } catch {
            machine.pageAllocator.putOwned(pfn, by: "the binder page range at 0x\(String(vmaAddress, radix: 16))")
            throw error
        }
        pages[i].pfn = pfn
    }

    /// The state `page_state` reports.
    func state(_ i: Int) -> String {
        pages[i].pfn == nil ? "free" : pages[i].lruSeq == nil ? "active" : "lru"
    }

    /// The page's memory, `offset` bytes in; nil unless allocated.
    func memory(_ i: Int) -> UnsafeMutableRawPointer? {
        pages[i].pfn.flatMap { machine.memory.address(of: $0) }
    }

    /// Frees a page the shrinker took: zaps it from the VMA (under the mmap
    /// read lock the caller holds) and drops our reference.
    func reclaim(_ info: PageInfo) {
        guard let pfn = info.pfn else { return }
        info.pfn = nil
        if vma() != nil {
            let addr = vmaAddress + UInt64(info.index * PAGE_SIZE)
            mm.zap(addr..<addr + UInt64(PAGE_SIZE))
        }
        machine.pageAllocator.putOwned(pfn, by: "the binder page range at 0x\(String(vmaAddress, radix: 16))")
    }

    /// The range goes (the Alloc is released): every page leaves the LRU and
    /// loses our reference; the VMA keeps its own until it is unmapped.
    func release() {
        guard !isReleased else { return }
        isReleased = true
        for info in pages {
            lru.remove(info)
            if let pfn = info.pfn {
                info.pfn = nil
                machine.pageAllocator.putOwned(pfn, by: "the binder page range at 0x\(String(vmaAddress, radix: 16))")
            }
        }
    }
}

/// Binder's shrinker and its LRU (`list_lru`), one per machine: available
/// pages of every process, oldest first. Under memory pressure the page
/// allocator calls it; each page is freed only if its mm, its range's
/// `mm_lock`, the mmap lock and the range's lock can all be taken with
/// trylocks; otherwise it is skipped (`LRU_SKIP`), as rust_shrink_free_page
/// does, since it takes them in the wrong order.
public final class BinderLru: Shrinker, CustomStringConvertible {
    unowned let machine: Machine
    // As RangeAllocator's state.
    @exclusivity(unchecked) private var list = OrderedTree<UInt64, PageInfo>()
    @exclusivity(unchecked) private var seq: UInt64 = 0
    /// Pages freed, and pages skipped on contention, so far.
    public private(set) var reclaimed = 0
    public private(set) var skipped = 0

    init(machine: Machine) {
        self.machine = machine
        do { try machine.pageAllocator.register(self) } catch {
            machine.reportBrokenInvariant("binder's shrinker: \(error.message)")  // a new object cannot be registered yet
        }
    }

    public var count: Int { list.count }
    /// `DEFAULT_SEEKS`, as binder's `shrinker_alloc` leaves it.
    public var seeks: Int { 2 }
    public var description: String { "binder" }

    func add(_ info: PageInfo) {
        guard info.lruSeq == nil else { return }
        seq += 1
        info.lruSeq = seq
        list.insert(seq, info)
    }

    func remove(_ info: PageInfo) {
        guard let s = info.lruSeq else { return }
        list.remove(s)
        info.lruSeq = nil
    }

    public func countObjects() -> Int { list.count }

    /// `list_lru_walk` with `nr_to_walk` = `n` (`__list_lru_walk_one`):
    /// from the head, every entry visited uses up one of `n`; a contended
    /// entry is skipped (`LRU_SKIP`), and a freed one (`LRU_REMOVED_RETRY`:
    /// the LRU lock was dropped) restarts the walk at the head, where the
    /// skipped entries are visited again. How many it freed.
    public func scanObjects(_ n: Int) -> Int {
        var freed = 0, left = n
        var cursor = list.first
        while let entry = cursor, left > 0 {
            left -= 1
            if tryFree(entry.value) {
                freed += 1
                cursor = list.first
            } else {
                skipped += 1
                cursor = list.first(after: entry.key, inclusive: false)
            }
        }
        reclaimed += freed
        machine.trace?.emit(.instant, "binder shrink", category: "memory", track: .machine,
                            args: [.init("scanned", n - left), .init("freed", freed)])
        return freed
    }

    /// `rust_shrink_free_page` for one page.
    private func tryFree(_ info: PageInfo) -> Bool {
        let range = info.range
        let mm = range.mm
        let scheduler = machine.scheduler
        guard mm.users > 0, range.populating == 0 else { return false }  // mmget_not_zero, mm_lock trylock
        guard scheduler.tryDown(mm.mmapLock, write: false, site: .unknown) else { return false }
        mm.users += 1  // mmget_not_zero, released with mmput_async
        remove(info)
        range.reclaim(info)
        scheduler.up(mm.mmapLock, task: scheduler.current, write: false)
        mm.put(async: true)
        return true
    }
}

extension Machine {
    /// A new driver file number (what a VMA's `vm_file` tells apart).
    public func newFile() -> Int {
        files += 1
        return files
    }
}
