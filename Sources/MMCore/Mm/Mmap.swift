/// Mapping and unmapping (mm/mmap.c, mm/vma.c): placing VMAs, the merge and
/// split rules, zapping PTEs, and anonymous page faults.
public enum Mmap {
    /// `TASK_SIZE` for 4-level paging on x86-64: user addresses stay below.
    public static let taskSize: UInt64 = (1 << 47) - UInt64(PAGE_SIZE)
    /// `mmap_min_addr`: the lowest address a mapping may take.
    public static let minAddr: UInt64 = 0x10000
    /// Where top-down placement starts (`mm->mmap_base`, without randomization).
    public static let base: UInt64 = 0x7f00_0000_0000
    public static let PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4
    public static let MAP_SHARED = 0x01, MAP_PRIVATE = 0x02, MAP_SHARED_VALIDATE = 0x03, MAP_FIXED = 0x10
    public static let MAP_ANONYMOUS = 0x20, MAP_FIXED_NOREPLACE = 0x100000
    /// `MAP_TYPE`: the bits that say the mapping's type.
    public static let MAP_TYPE = 0x0f
    /// `LEGACY_MAP_MASK`, of the flags mmlab knows: what MAP_SHARED_VALIDATE
    /// accepts from a file that supports nothing more.
    static let legacyMapMask = MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS
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
    /// new VMA up; if it fails, the mapping does too. For Swift callers that
    /// cannot wait: one that would wait for VMA readers is a bug (the
    /// engine uses `prepareMmap` and `commitMmap`, which wait).
    public func mmap(under guard_: MmapGuard, addr: UInt64?, len: UInt64, prot: Int, flags: Int,
                     file: Int? = nil, offset: UInt64 = 0,
                     hook: ((VmaNew) throws(KernelError) -> Void)? = nil) throws(KernelError) -> UInt64 {
        let wouldWait = KernelError.bug("mmap of \(self) would wait for a VMA's readers, here where nothing can wait")
        guard let new = try prepareMmap(under: guard_, addr: addr, len: len, prot: prot, flags: flags, file: file,
                                        offset: offset) else { throw wouldWait }
        do {
            try hook?(new)
        } catch {
            abortMmap(new)
            throw error
        }
        guard let address = commitMmap(new) else { throw wouldWait }
        return address
    }

    /// The first half of `mmap`: checks the request, picks the address
    /// (clearing what a MAP_FIXED range covers) and builds the VMA, not yet
    /// in the mm. For a `file`, the driver's handler sets it up before
    /// `commitMmap` links it in, or `abortMmap` drops it. Nil when the task
    /// must first wait for the readers of a VMA the MAP_FIXED range covers
    /// (it is blocked; call again when it wakes): nothing changed yet.
    public func prepareMmap(under guard_: MmapGuard, addr: UInt64?, len: UInt64, prot: Int, flags: Int,
                            file: Int? = nil, offset: UInt64 = 0) throws(KernelError) -> VmaNew? {
        try checkWriteLocked(guard_, "mmap")
        guard let vma = try makeVma(addr: addr, len: len, prot: prot, flags: flags, file: file, offset: offset) else {
            return nil
        }
        return VmaNew(vma, protector: guard_)
    }

    /// Operations that change the VMAs need this mm's write lock.
    private func checkWriteLocked(_ guard_: MmapGuard, _ what: String) throws(KernelError) {
        guard guard_.mm === self, guard_.isWrite, !guard_.isReleased else {
            throw .bug("\(what) of \(self) needs its mmap write lock; \(guard_) is not it")
        }
    }

    /// `do_mmap`'s checks and placement, as 6.12 orders them; nil when a
    /// MAP_FIXED range must wait for a VMA's readers first.
    private func makeVma(addr: UInt64?, len: UInt64, prot: Int, flags: Int, file: Int?,
                         offset: UInt64) throws(KernelError) -> VmArea? {
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
        let known = Mmap.MAP_TYPE | Mmap.MAP_FIXED | Mmap.MAP_ANONYMOUS | Mmap.MAP_FIXED_NOREPLACE
        guard flags & ~known == 0 else {
            throw KernelError(.EINVAL, "mmap: unknown flags 0x\(String(flags & ~known, radix: 16))")
        }
        let anonymous = flags & Mmap.MAP_ANONYMOUS != 0
        if anonymous, file != nil {
            throw KernelError(.EINVAL, "mmap: MAP_ANONYMOUS with a driver's file: an anonymous mapping has no mmap handler")
        }
        // ksys_mmap_pgoff: without MAP_ANONYMOUS the mapping needs a file.
        guard anonymous || file != nil else {
            throw KernelError(.EBADF, "mmap without MAP_ANONYMOUS needs a file: a driver's mmap handler (hook)")
        }
        guard vmas.count <= machine.config.maxMapCount else {
            throw KernelError(.ENOMEM, "mmap: the mm has more than max_map_count (\(machine.config.maxMapCount)) VMAs")
        }
        // do_mmap's switch on MAP_TYPE: a file takes MAP_SHARED,
        // MAP_SHARED_VALIDATE (no flag beyond the legacy ones: EOPNOTSUPP)
        // and MAP_PRIVATE; anonymous memory MAP_SHARED and MAP_PRIVATE.
        let type = flags & Mmap.MAP_TYPE
        switch type {
        case Mmap.MAP_SHARED, Mmap.MAP_PRIVATE: break
        case Mmap.MAP_SHARED_VALIDATE where file != nil:
            guard flags & ~Mmap.legacyMapMask == 0 else {
                throw KernelError(.EOPNOTSUPP, "mmap: MAP_SHARED_VALIDATE with flags 0x\(String(flags & ~Mmap.legacyMapMask, radix: 16)) the file does not support")
            }
        default:
            throw KernelError(.EINVAL, "mmap: map type 0x\(String(type, radix: 16)) is not MAP_SHARED, MAP_PRIVATE\(file == nil ? "" : " or MAP_SHARED_VALIDATE")\(file == nil && type == Mmap.MAP_SHARED_VALIDATE ? " (anonymous memory does not take MAP_SHARED_VALIDATE)" : "")")
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
                guard try unmap(addr..<addr + size) else { return nil }
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
        let shared = type != Mmap.MAP_PRIVATE
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
    /// neighbours it can merge with (`vma_merge_new_range`), every VMA it
    /// changes write-locked (`vma_start_write`). Returns the address, or nil
    /// when the task must first wait for a neighbour's readers (it is
    /// blocked; call again when it wakes): nothing changed yet.
    public func commitMmap(_ new: VmaNew) -> UInt64? {
        let vma = new.vma
        let i = vmas.firstIndex { $0.start >= vma.end } ?? vmas.count
        let prev = i > 0 ? vmas[i - 1] : nil, next = i < vmas.count ? vmas[i] : nil
        let left = prev.map { mergeable($0, vma) } ?? false
        var right = next.map { mergeable(vma, $0) } ?? false
        // can_vma_merge_right: with both, prev and next must agree too.
        if left, right, let prev, let next, !anonVmasCompatible(prev.anonVma, next.anonVma) { right = false }
        let changed = (left ? [prev] : []) + (right ? [next] : [])
        guard vmaStartWrite(changed.compactMap { $0 }) else { return nil }
        vma.lockSeq = lockSeq  // __mmap_region write-locks the new VMA before it is visible
        vmas.insert(vma, at: i)
        if right, let next {
            vma.end = next.end
            vma.anonVma = vma.anonVma ?? next.anonVma
            next.isDetached = true
            vmas.remove(at: i + 1)
        }
        if left, let prev {
            prev.end = vma.end
            prev.anonVma = prev.anonVma ?? vma.anonVma
            vma.isDetached = true
            vmas.remove(at: i)
        }
        return vma.start
    }

    /// An mmap handler failed: whatever it mapped into the range goes.
    public func abortMmap(_ new: VmaNew) {
        zap(new.vma.start..<new.vma.end)
        pageTable.freeTables(keeping: vmas.map { $0.start..<$0.end })
        new.vma.isDetached = true
    }

    /// `is_mergeable_vma` and `can_vma_merge_after` (`a` before `b`): the
    /// same file (or both private anonymous memory), equal flags, offsets
    /// that continue each other, compatible anon_vmas; special VMAs (IO,
    /// DONTEXPAND, PFNMAP, MIXEDMAP) never merge.
    private func mergeable(_ a: VmArea, _ b: VmArea) -> Bool {
        a.end == b.start && a.backing == b.backing && a.flags == b.flags
            && a.flags.isDisjoint(with: .special)
            && a.pgoff + ((a.end - a.start) >> UInt64(PAGE_SHIFT)) == b.pgoff
            && anonVmasCompatible(a.anonVma, b.anonVma)
    }

    /// `is_mergeable_anon_vma`: one without an anon_vma goes with any (no
    /// VMA here was ever forked, so every anon_vma chain is singular).
    private func anonVmasCompatible(_ a: Int?, _ b: Int?) -> Bool {
        a == nil || b == nil || a == b
    }

    /// `munmap` under `guard_`, this mm's write lock: unmaps
    /// `[addr, addr + len)`, splitting VMAs that straddle it. False when the
    /// task must first wait for the readers of a VMA in the range (it is
    /// blocked; call again when it wakes): nothing changed yet.
    @discardableResult
    public func munmap(under guard_: MmapGuard, _ addr: UInt64, _ len: UInt64) throws(KernelError) -> Bool {
        try checkWriteLocked(guard_, "munmap")
        guard addr & UInt64(PAGE_SIZE - 1) == 0 else {
            throw KernelError(.EINVAL, "munmap of 0x\(String(addr, radix: 16)), which is not page aligned")
        }
        guard addr <= Mmap.taskSize, len <= Mmap.taskSize - addr, let size = page_align(len), size > 0 else {
            throw KernelError(.EINVAL, "munmap of \(len) bytes at 0x\(String(addr, radix: 16)): empty or past TASK_SIZE")
        }
        return try unmap(addr..<addr + size)
    }

    /// `do_vmi_munmap`. `vms_gather_munmap_vmas` checks `max_map_count`
    /// before it splits anything: a range strictly inside one VMA makes two
    /// of it, which an mm at the limit may not (ENOMEM, nothing changed).
    /// Every VMA it touches is write-locked first; false when one has
    /// readers to wait for.
    private func unmap(_ range: Range<UInt64>) throws(KernelError) -> Bool {
        let touched = vmas.filter { $0.start < range.upperBound && range.lowerBound < $0.end }
        if let first = touched.first, first.start < range.lowerBound, range.upperBound < first.end,
           vmas.count >= machine.config.maxMapCount {
            throw KernelError(.ENOMEM, "munmap of [0x\(String(range.lowerBound, radix: 16)), 0x\(String(range.upperBound, radix: 16))) would split \(first) past max_map_count (\(machine.config.maxMapCount))")
        }
        guard vmaStartWrite(touched) else { return false }
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
        vmas = kept.sorted { $0.start < $1.start }
        pageTable.freeTables(keeping: vmas.map { $0.start..<$0.end })
        return true
    }

    /// The part `[start, end)` of `vma` as its own VMA (`split_vma`): the
    /// same anon_vma, write-locked as the VMA it came from.
    private func split(_ vma: VmArea, _ start: UInt64, _ end: UInt64) -> VmArea {
        let part = VmArea(mm: self, start: start, end: end, flags: vma.flags,
                          pgoff: vma.pgoff + ((start - vma.start) >> UInt64(PAGE_SHIFT)), backing: vma.backing)
        part.anonVma = vma.anonVma
        part.lockSeq = vma.lockSeq
        return part
    }

    /// Clears the PTEs in `range`; each drops its page's reference.
    func zap(_ range: Range<UInt64>) {
        for addr in pageTable.mapped(in: range) {
            guard let pfn = pageTable.unmap(addr), machine.memory.isManaged(pfn), pfn != ZERO_PAGE_PFN else { continue }
            guard machine.pageAllocator.refcount(pfn) > 0 else {
                // A PTE written behind the model's back (print_bad_pte).
                machine.pageAllocator.onLog?("BUG: Bad page map in \(self): pte:\(hex16(pfn.rawValue << UInt64(PAGE_SHIFT))) of a page that is not allocated")
                continue
            }
            put(pfn)
        }
    }

    /// Drops a page reference the mm holds (a PTE's): it cannot fail unless
    /// the model broke, which it reports.
    func put(_ pfn: Pfn) { machine.pageAllocator.putOwned(pfn, by: "\(self)") }

    /// What the page tables map at `addr` (`follow_page`), without faulting:
    /// the zero page where a read fault mapped it.
    public func followPage(_ addr: UInt64) -> BorrowedPage? {
        guard let pte = pageTable.lookup(addr & ~UInt64(PAGE_SIZE - 1)) else { return nil }
        return Page.borrowPhys(machine, pte.pfn.phys)
    }

    /// The memory backing `addr` for a user access, faulting anonymous
    /// memory in (`handle_mm_fault`, `do_anonymous_page`): a read fault on
    /// untouched private anonymous memory maps the shared zero page,
    /// read-only; a write fault (or a write to the zero page) maps a new
    /// zeroed page, and gives the VMA an anon_vma if it has none
    /// (`anon_vma_prepare`). Shared anonymous memory (shmem) gets a page on
    /// any fault. EFAULT where the VMAs do not allow the access, or a
    /// driver's mapping has no page there (it has no fault handler: SIGBUS).
    func resolve(_ addr: UInt64, write: Bool) throws(KernelError) -> UnsafeMutableRawPointer? {
        let hex = "0x" + String(addr, radix: 16)
        guard let vma = find(addr) else { throw KernelError(.EFAULT, "\(hex) is not mapped") }
        guard vma.flags.contains(write ? .write : .read) else {
            throw KernelError(.EFAULT, "\(hex) is not \(write ? "writable" : "readable") (\(vma))")
        }
        let page = addr & ~UInt64(PAGE_SIZE - 1)
        var pfn = pageTable.lookup(page)?.pfn
        if pfn == nil || (write && pfn == ZERO_PAGE_PFN) {
            guard !vma.isFile, vma.flags.isDisjoint(with: .special) else {
                throw KernelError(.EFAULT, "\(hex): no page is mapped there in \(vma), which has no fault handler")
            }
            let exec = vma.flags.contains(.exec)
            if !write, !vma.flags.contains(.shared) {
                do { try pageTable.map(page, ZERO_PAGE_PFN, writable: false, executable: exec) } catch {
                    throw KernelError(.EFAULT, "\(hex): the page fault failed: \(error.message)")
                }
                pfn = ZERO_PAGE_PFN
            } else {
                let new: Pfn
                do {
                    new = try machine.pageAllocator.allocPages([.highuser, .movable, .zero], order: 0)
                } catch {
                    throw KernelError(.EFAULT, "\(hex): the page fault failed: \(error.message)")
                }
                do {
                    try pageTable.map(page, new, writable: vma.flags.contains(.write), executable: exec)
                } catch {
                    // No page table for it: the page goes back (the kernel's
                    // do_anonymous_page releases it on its way out, too).
                    put(new)
                    throw KernelError(.EFAULT, "\(hex): the page fault failed: \(error.message)")
                }
                if !vma.flags.contains(.shared) {
                    machine.pageAllocator.markAnonymous(new)
                    if vma.anonVma == nil { vma.anonVma = findMergeableAnonVma(vma) ?? machine.newAnonVma() }
                }
                pfn = new
            }
        }
        guard let pfn, let base = machine.memory.address(of: pfn) else {
            throw KernelError(.EFAULT, "\(hex) maps a frame without memory")
        }
        // SAFETY: the offset is below PAGE_SIZE, inside the frame.
        return base + Int(addr - page)
    }

    /// `find_mergeable_anon_vma`: the anon_vma of the next VMA, else of the
    /// previous one, if that neighbour is compatible (`anon_vma_compatible`:
    /// adjacent, the same file, flags equal but for access, contiguous
    /// offsets), so that later merges are not stopped by distinct anon_vmas.
    private func findMergeableAnonVma(_ vma: VmArea) -> Int? {
        func compatible(_ a: VmArea, _ b: VmArea) -> Bool {
            let access: VmFlags = [.read, .write, .exec]
            return a.end == b.start && a.backing == b.backing
                && a.flags.subtracting(access) == b.flags.subtracting(access)
                && b.pgoff == a.pgoff + ((b.start - a.start) >> UInt64(PAGE_SHIFT))
        }
        guard let i = vmas.firstIndex(where: { $0 === vma }) else { return nil }
        if i + 1 < vmas.count, compatible(vma, vmas[i + 1]), let anonVma = vmas[i + 1].anonVma { return anonVma }
        if i > 0, compatible(vmas[i - 1], vma) { return vmas[i - 1].anonVma }
        return nil
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
