/// Mapping and unmapping (mm/mmap.c, mm/vma.c): placing VMAs, the merge and
/// split rules, zapping PTEs, and anonymous page faults.
public enum Mmap {
    /// `TASK_SIZE` for 4-level paging on x86-64: user addresses stay below.
    public static let taskSize: UInt64 = (1 << 47) - UInt64(PAGE_SIZE)
    /// `mmap_min_addr`: the lowest address a mapping may take.
    public static let minAddr: UInt64 = 0x10000
    /// Where top-down placement starts (`mm->mmap_base`, without randomization).
    public static let base: UInt64 = 0x7f00_0000_0000
    /// `sysctl_max_map_count`.
    public static let maxMapCount = 65530

    public static let PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4
    public static let MAP_SHARED = 0x01, MAP_PRIVATE = 0x02, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20
    public static let MAP_FIXED_NOREPLACE = 0x100000
}

extension MmStruct {
    /// The VMA holding `addr` (`vma_lookup`).
    public func find(_ addr: UInt64) -> VmArea? {
        var lo = 0, hi = vmas.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if vmas[mid].end <= addr { lo = mid + 1 } else { hi = mid }
        }
        return lo < vmas.count && vmas[lo].contains(addr) ? vmas[lo] : nil
    }

    private func overlaps(_ range: Range<UInt64>) -> Bool {
        vmas.contains { $0.start < range.upperBound && range.lowerBound < $0.end }
    }

    /// `get_unmapped_area`, top down from `Mmap.base`: the highest gap below
    /// it that fits `len`.
    private func unmappedArea(_ len: UInt64) -> UInt64? {
        var top = Mmap.base
        for vma in vmas.reversed() where vma.start < top {
            if vma.end <= top, top - vma.end >= len { return top - len }
            top = min(top, vma.start)
        }
        return top >= Mmap.minAddr + len ? top - len : nil
    }

    /// `do_mmap` under `guard_`, this mm's write lock: maps `len` bytes and
    /// returns the address. With a `file` (a driver's, named by a number),
    /// `offset` bytes into it, the driver's mmap handler `hook` sets the
    /// new VMA up; if it fails, the mapping does too.
    public func mmap(under guard_: MmapGuard, addr: UInt64?, len: UInt64, prot: Int, flags: Int,
                     file: Int? = nil, offset: UInt64 = 0,
                     hook: ((VmaNew) throws(KernelError) -> Void)? = nil) throws(KernelError) -> UInt64 {
        let new = try prepareMmap(under: guard_, addr: addr, len: len, prot: prot, flags: flags, file: file, offset: offset)
        do {
            try hook?(new)
        } catch {
            abortMmap(new)
            throw error
        }
        return commitMmap(new)
    }

    /// The first half of `mmap`: checks the request, picks the address
    /// (clearing what a MAP_FIXED range covers) and builds the VMA, not yet
    /// in the mm. For a `file`, the driver's handler sets it up before
    /// `commitMmap` links it in, or `abortMmap` drops it.
    public func prepareMmap(under guard_: MmapGuard, addr: UInt64?, len: UInt64, prot: Int, flags: Int,
                            file: Int? = nil, offset: UInt64 = 0) throws(KernelError) -> VmaNew {
        try checkWriteLocked(guard_, "mmap")
        let vma = try makeVma(addr: addr, len: len, prot: prot, flags: flags, file: file, offset: offset)
        return VmaNew(vma, protector: guard_)
    }

    /// Operations that change the VMAs need this mm's write lock.
    private func checkWriteLocked(_ guard_: MmapGuard, _ what: String) throws(KernelError) {
        guard guard_.mm === self, guard_.isWrite, !guard_.isReleased else {
            throw .bug("\(what) of \(self) needs its mmap write lock; \(guard_) is not it")
        }
    }

    private func makeVma(addr: UInt64?, len: UInt64, prot: Int, flags: Int, file: Int?,
                         offset: UInt64) throws(KernelError) -> VmArea {
        guard len > 0 else { throw KernelError(.EINVAL, "mmap of length 0") }
        guard let size = page_align(len), size <= Mmap.taskSize else {
            throw KernelError(.ENOMEM, "mmap of \(len) bytes: larger than the address space")
        }
        guard offset & UInt64(PAGE_SIZE - 1) == 0 else {
            throw KernelError(.EINVAL, "mmap: offset 0x\(String(offset, radix: 16)) is not page aligned")
        }
        guard (offset >> UInt64(PAGE_SHIFT)).addingReportingOverflow(size >> UInt64(PAGE_SHIFT)).overflow == false,
              offset.addingReportingOverflow(size).overflow == false else {
            throw KernelError(.EOVERFLOW, "mmap: offset 0x\(String(offset, radix: 16)) + \(size) bytes overflows")
        }
        guard prot & ~(Mmap.PROT_READ | Mmap.PROT_WRITE | Mmap.PROT_EXEC) == 0 else {
            throw KernelError(.EINVAL, "mmap: unknown prot bits 0x\(String(prot, radix: 16))")
        }
        let known = Mmap.MAP_SHARED | Mmap.MAP_PRIVATE | Mmap.MAP_FIXED | Mmap.MAP_ANONYMOUS | Mmap.MAP_FIXED_NOREPLACE
        guard flags & ~known == 0, flags & (Mmap.MAP_SHARED | Mmap.MAP_PRIVATE) != (Mmap.MAP_SHARED | Mmap.MAP_PRIVATE) else {
            throw KernelError(.EINVAL, "mmap: bad flags 0x\(String(flags, radix: 16))")
        }
        guard vmas.count < Mmap.maxMapCount else {
            throw KernelError(.ENOMEM, "mmap: the mm has max_map_count (\(Mmap.maxMapCount)) VMAs already")
        }
        let fixed = flags & (Mmap.MAP_FIXED | Mmap.MAP_FIXED_NOREPLACE) != 0
        var start: UInt64
        if fixed {
            guard let addr, addr & UInt64(PAGE_SIZE - 1) == 0 else {
                throw KernelError(.EINVAL, "mmap: a fixed address must be page aligned")
            }
            guard addr <= Mmap.taskSize, size <= Mmap.taskSize - addr else {
                throw KernelError(.ENOMEM, "mmap: 0x\(String(addr, radix: 16)) + \(size) bytes ends past TASK_SIZE")
            }
            guard addr >= Mmap.minAddr else {
                throw KernelError(.EPERM, "mmap: 0x\(String(addr, radix: 16)) is below mmap_min_addr (0x10000)")
            }
            if overlaps(addr..<addr + size) {
                if flags & Mmap.MAP_FIXED_NOREPLACE != 0 {
                    throw KernelError(.EEXIST, "mmap: MAP_FIXED_NOREPLACE range 0x\(String(addr, radix: 16)) is mapped")
                }
                try unmap(addr..<addr + size)
            }
            start = addr
        } else if let hint = addr.flatMap(page_align), hint >= Mmap.minAddr, hint <= Mmap.taskSize,
                  size <= Mmap.taskSize - hint, !overlaps(hint..<hint + size) {
            start = hint
        } else {
            guard let found = unmappedArea(size) else { throw KernelError(.ENOMEM, "mmap: no room for \(size) bytes") }
            start = found
        }
        var vmFlags: VmFlags = [.mayread, .maywrite, .mayexec]
        if prot & Mmap.PROT_READ != 0 { vmFlags.insert(.read) }
        if prot & Mmap.PROT_WRITE != 0 { vmFlags.insert(.write) }
        if prot & Mmap.PROT_EXEC != 0 { vmFlags.insert(.exec) }
        let shared = flags & Mmap.MAP_SHARED != 0
        if shared { vmFlags.formUnion([.shared, .mayshare]) }
        var backing = VmArea.Backing.anonymous
        if let file {
            backing = .file(file)
        } else if shared {  // shared anonymous memory is a new shmem object each time
            nextShmem += 1
            backing = .shmem(nextShmem)
        }
        return VmArea(mm: self, start: start, end: start + size, flags: vmFlags,
                      pgoff: file == nil ? start >> UInt64(PAGE_SHIFT) : offset >> UInt64(PAGE_SHIFT),
                      backing: backing)
    }

    /// The second half of `mmap`: links the VMA in, merging it with
    /// neighbours it can merge with. Returns the address.
    @discardableResult
    public func commitMmap(_ new: VmaNew) -> UInt64 {
        let start = new.vma.start
        insert(new.vma)
        return start
    }

    /// An mmap handler failed: whatever it mapped into the range goes.
    public func abortMmap(_ new: VmaNew) {
        zap(new.vma.start..<new.vma.end)
        pageTable.freeTables(keeping: vmas.map { $0.start..<$0.end })
        new.vma.isDetached = true
    }

    /// `vma_merge`: neighbours of the same file (or both private anonymous
    /// memory) with equal flags whose offsets continue each other merge;
    /// special ones (IO, DONTEXPAND, PFNMAP, MIXEDMAP) never do.
    private func mergeable(_ a: VmArea, _ b: VmArea) -> Bool {
        a.end == b.start && a.backing == b.backing && a.flags == b.flags
            && a.flags.isDisjoint(with: .special)
            && a.pgoff + ((a.end - a.start) >> UInt64(PAGE_SHIFT)) == b.pgoff
    }

    private func insert(_ vma: VmArea) {
        var i = vmas.firstIndex { $0.start >= vma.end } ?? vmas.count
        vmas.insert(vma, at: i)
        if i + 1 < vmas.count, mergeable(vma, vmas[i + 1]) {
            vma.end = vmas[i + 1].end
            vmas[i + 1].isDetached = true
            vmas.remove(at: i + 1)
        }
        if i > 0, mergeable(vmas[i - 1], vma) {
            vmas[i - 1].end = vma.end
            vma.isDetached = true
            vmas.remove(at: i)
            i -= 1
        }
    }

    /// `munmap` under `guard_`, this mm's write lock: unmaps
    /// `[addr, addr + len)`, splitting VMAs that straddle it.
    public func munmap(under guard_: MmapGuard, _ addr: UInt64, _ len: UInt64) throws(KernelError) {
        try checkWriteLocked(guard_, "munmap")
        guard addr & UInt64(PAGE_SIZE - 1) == 0 else {
            throw KernelError(.EINVAL, "munmap of 0x\(String(addr, radix: 16)), which is not page aligned")
        }
        guard addr <= Mmap.taskSize, len <= Mmap.taskSize - addr, let size = page_align(len), size > 0 else {
            throw KernelError(.EINVAL, "munmap of \(len) bytes at 0x\(String(addr, radix: 16)): empty or past TASK_SIZE")
        }
        try unmap(addr..<addr + size)
    }

    private func unmap(_ range: Range<UInt64>) throws(KernelError) {
        var kept: [VmArea] = []
        for vma in vmas {
            guard vma.start < range.upperBound, range.lowerBound < vma.end else {
                kept.append(vma)
                continue
            }
            if vma.start < range.lowerBound {  // the head stays
                kept.append(split(vma, vma.start, range.lowerBound))
            }
            if range.upperBound < vma.end {  // the tail stays
                kept.append(split(vma, range.upperBound, vma.end))
            }
            zap(max(vma.start, range.lowerBound)..<min(vma.end, range.upperBound))
            vma.isDetached = true
        }
        guard kept.count <= Mmap.maxMapCount else {
            throw KernelError(.ENOMEM, "munmap would split past max_map_count")
        }
        vmas = kept.sorted { $0.start < $1.start }
        pageTable.freeTables(keeping: vmas.map { $0.start..<$0.end })
    }

    /// The part `[start, end)` of `vma` as its own VMA (`split_vma`).
    private func split(_ vma: VmArea, _ start: UInt64, _ end: UInt64) -> VmArea {
        VmArea(mm: self, start: start, end: end, flags: vma.flags,
               pgoff: vma.pgoff + ((start - vma.start) >> UInt64(PAGE_SHIFT)), backing: vma.backing)
    }

    /// Clears the PTEs in `range`; each drops its page's reference.
    func zap(_ range: Range<UInt64>) {
        for addr in pageTable.mapped(in: range) {
            if let pfn = pageTable.unmap(addr), machine.memory.isManaged(pfn) {
                try? machine.pageAllocator.putPage(pfn)
            }
        }
    }

    /// What the page tables map at `addr` (`follow_page`), without faulting.
    public func followPage(_ addr: UInt64) -> BorrowedPage? {
        guard let pte = pageTable.lookup(addr & ~UInt64(PAGE_SIZE - 1)) else { return nil }
        return Page.borrowPhys(machine, pte.pfn.phys)
    }

    /// The memory backing `addr` for a user access, faulting anonymous
    /// memory in (`handle_mm_fault`): a write fault allocates a zeroed page;
    /// a read of a page never written reads the zero page (nil) and maps
    /// nothing. EFAULT where the VMAs do not allow the access, or a driver's
    /// mapping has no page there (it has no fault handler: SIGBUS).
    func resolve(_ addr: UInt64, write: Bool) throws(KernelError) -> UnsafeMutableRawPointer? {
        let hex = "0x" + String(addr, radix: 16)
        guard let vma = find(addr) else { throw KernelError(.EFAULT, "\(hex) is not mapped") }
        guard vma.flags.contains(write ? .write : .read) else {
            throw KernelError(.EFAULT, "\(hex) is not \(write ? "writable" : "readable") (\(vma))")
        }
        let page = addr & ~UInt64(PAGE_SIZE - 1)
        var pfn = pageTable.lookup(page)?.pfn
        if pfn == nil {
            guard !vma.isFile, vma.flags.isDisjoint(with: .special) else {
                throw KernelError(.EFAULT, "\(hex): no page is mapped there in \(vma), which has no fault handler")
            }
            guard write else { return nil }
            let new: Pfn
            do {
                new = try machine.pageAllocator.allocPages([.highuser, .movable, .zero], order: 0)
            } catch {
                throw KernelError(.EFAULT, "\(hex): the page fault failed: \(error.message)")
            }
            do {
                try pageTable.map(page, new, writable: true, executable: vma.flags.contains(.exec))
            } catch {
                // No page table for it: the page goes back (the kernel's
                // do_anonymous_page releases it on its way out, too).
                try? machine.pageAllocator.putPage(new)
                throw KernelError(.EFAULT, "\(hex): the page fault failed: \(error.message)")
            }
            pfn = new
        }
        guard let pfn, let base = machine.memory.address(of: pfn) else {
            throw KernelError(.EFAULT, "\(hex) maps a frame without memory")
        }
        // SAFETY: the offset is below PAGE_SIZE, inside the frame.
        return base + Int(addr - page)
    }

    /// Whether `[addr, addr + len)` is mapped in the page tables for the
    /// access already, so that touching it cannot fault.
    func isPresent(_ addr: UInt64, _ len: Int, write: Bool) -> Bool {
        var page = addr & ~UInt64(PAGE_SIZE - 1)
        let end = addr + UInt64(len)
        while page < end {
            guard let pte = pageTable.lookup(page), !write || pte.writable else { return false }
            page += UInt64(PAGE_SIZE)
        }
        return true
    }
}
