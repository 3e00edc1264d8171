/// A process's page tables: four levels (PGD, PUD, PMD, PTE) of 512
/// eight-byte entries over a 48-bit address space, as on x86-64. Tables are
/// pages from the page allocator, and entries live in their memory, in the
/// x86-64 format: `pfn << 12` with present, writable and user bits.
///
/// # Invariants
///
/// `pgd` is an allocated page while the tables exist; `owned` holds the
/// table pages this object allocated (`tables` counts them, the PGD
/// included), each flagged `pgtable`. A present non-leaf entry that
/// points elsewhere was written by something else (a script through a
/// raw page): the walk treats it as the kernel treats a bad pmd
/// (`pmd_clear_bad`), logging and clearing it; the tables it reached are
/// still freed with the rest.
final class PageTable {
    let allocator: PageAllocator
    let memory: PhysicalMemory
    private(set) var pgd: Pfn?
    /// Table pages allocated, the PGD included (`mm_pgtables_bytes / PAGE_SIZE`).
    private(set) var tables = 0
    private var owned: Set<UInt64> = []
    /// Where a line of the kernel log goes (the bad-entry reports).
    var log: ((String) -> Void)?

    static let present: UInt64 = 1 << 0
    static let writable: UInt64 = 1 << 1
    static let user: UInt64 = 1 << 2
    static let accessed: UInt64 = 1 << 5
    static let noExecute: UInt64 = 1 << 63
    static let addressMask: UInt64 = 0x000f_ffff_ffff_f000

    init(allocator: PageAllocator, memory: PhysicalMemory) throws(KernelError) {
        self.allocator = allocator
        self.memory = memory
        pgd = try allocateTable()
    }

    private func allocateTable() throws(KernelError) -> Pfn {
        let pfn = try allocator.allocPages([.kernel, .zero], order: 0)
        allocator.memory.existingPage(pfn)?.pointee.flags |= StructPage.Flag.pgtable
        owned.insert(pfn.rawValue)
        tables += 1
        return pfn
    }

    /// The table a present entry of level `level` (3: pgd ... 1: pmd)
    /// points at, or nil: a bad entry, reported and cleared.
    @inline(__always)
    private func child(_ e: UnsafeMutablePointer<UInt64>, level: Int) -> Pfn? {
        let pfn = Pfn((e.pointee & Self.addressMask) >> UInt64(PAGE_SHIFT))
        guard let page = allocator.memory.existingPage(pfn), page.pointee.has(StructPage.Flag.pgtable) else {
            let name = ["pmd", "pud", "pgd"][max(0, min(level - 1, 2))]
            log?("mm/pgtable-generic.c: bad \(name) (\(hex16(e.pointee)))")
            e.pointee = 0
            return nil
        }
        return pfn
    }

    /// The entry at `index` of the table at `table`.
    private func entry(_ table: Pfn, _ index: Int) -> UnsafeMutablePointer<UInt64>? {
        guard let base = memory.address(of: table) else { return nil }
        // SAFETY: a table is one page of 512 entries and `index` is below 512.
        return (base + index * 8).assumingMemoryBound(to: UInt64.self)
    }

    private static func index(_ addr: UInt64, level: Int) -> Int {
        Int((addr >> UInt64(PAGE_SHIFT + 9 * level)) & 511)
    }

    /// The leaf entry for `addr`, allocating the tables on the way (ENOMEM
    /// when that fails).
    func allocatingPte(_ addr: UInt64) throws(KernelError) -> UnsafeMutablePointer<UInt64>? {
        guard var table = pgd else { return nil }
        for level in stride(from: 3, to: 0, by: -1) {
            guard let e = entry(table, Self.index(addr, level: level)) else { return nil }
            if e.pointee & Self.present != 0, let next = child(e, level: level) {
                table = next
                continue
            }
            let next = try allocateTable()
            e.pointee = (next.rawValue << UInt64(PAGE_SHIFT)) | Self.present | Self.writable | Self.user
            table = next
        }
        return entry(table, Self.index(addr, level: 0))
    }

    /// The leaf entry for `addr`, if its tables exist (a walk that allocates nothing).
    func pte(_ addr: UInt64) -> UnsafeMutablePointer<UInt64>? {
        guard var table = pgd else { return nil }
        for level in stride(from: 3, to: 0, by: -1) {
            guard let e = entry(table, Self.index(addr, level: level)), e.pointee & Self.present != 0,
                  let next = child(e, level: level) else { return nil }
            table = next
        }
        return entry(table, Self.index(addr, level: 0))
    }

    /// The frame mapped at `addr`, and whether writably.
    func lookup(_ addr: UInt64) -> (pfn: Pfn, writable: Bool)? {
        guard let e = pte(addr), e.pointee & Self.present != 0 else { return nil }
        return (Pfn((e.pointee & Self.addressMask) >> UInt64(PAGE_SHIFT)), e.pointee & Self.writable != 0)
    }

    /// Maps `pfn` at `addr` (the entry must be empty).
    func map(_ addr: UInt64, _ pfn: Pfn, writable: Bool, executable: Bool) throws(KernelError) {
        guard let e = try allocatingPte(addr) else { throw KernelError(.ENOMEM, "no page tables") }
        var value = (pfn.rawValue << UInt64(PAGE_SHIFT)) | Self.present | Self.user | Self.accessed
        if writable { value |= Self.writable }
        if !executable { value |= Self.noExecute }
        e.pointee = value
    }

    /// Clears the entry at `addr`; the frame it mapped, if any.
    func unmap(_ addr: UInt64) -> Pfn? {
        guard let e = pte(addr), e.pointee & Self.present != 0 else { return nil }
        let pfn = Pfn((e.pointee & Self.addressMask) >> UInt64(PAGE_SHIFT))
        e.pointee = 0
        return pfn
    }

    /// The mapped addresses in `[start, end)`, skipping absent tables.
    func mapped(in range: Range<UInt64>) -> [UInt64] {
        var found: [UInt64] = []
        guard let pgd else { return found }
        walk(pgd, level: 3, base: 0, range: range) { found.append($0) }
        return found
    }

    private func walk(_ table: Pfn, level: Int, base: UInt64, range: Range<UInt64>, _ visit: (UInt64) -> Void) {
        let span = UInt64(1) << UInt64(PAGE_SHIFT + 9 * level)
        for i in 0..<512 {
            let start = base + UInt64(i) * span
            guard start < range.upperBound, start + span > range.lowerBound,
                  let e = entry(table, i), e.pointee & Self.present != 0 else { continue }
            if level == 0 {
                visit(start)
            } else if let next = child(e, level: level) {
                walk(next, level: level - 1, base: start, range: range, visit)
            }
        }
    }

    /// `free_pgtables`: the tables below the PGD that span no address of
    /// `kept` (the VMAs that remain) go back to the allocator; with nothing
    /// kept, all of them. Their entries were zapped already.
    func freeTables(keeping kept: [Range<UInt64>] = []) {
        guard let pgd else { return }
        freeChildren(pgd, level: 3, base: 0, kept: kept)
    }

    private func freeChildren(_ table: Pfn, level: Int, base: UInt64, kept: [Range<UInt64>]) {
        guard level > 0 else { return }
        let span = UInt64(1) << UInt64(PAGE_SHIFT + 9 * level)
        for i in 0..<512 {
            guard let e = entry(table, i), e.pointee & Self.present != 0, let child = self.child(e, level: level),
                  owned.contains(child.rawValue) else { continue }  // another mm's table is not ours to free
            let start = base + UInt64(i) * span
            let used = kept.contains { $0.lowerBound < start + span && start < $0.upperBound }
            if used {
                freeChildren(child, level: level - 1, base: start, kept: kept)
                continue
            }
            freeChildren(child, level: level - 1, base: start, kept: [])
            e.pointee = 0
            owned.remove(child.rawValue)
            allocator.freeOwned(child, order: 0, by: "a page table")
            tables -= 1
        }
    }

    /// `pgd_free`: the PGD too (the mm itself goes).
    func freeAll() {
        freeTables()
        // The PGD, and tables only bad entries led to (pmd_clear_bad leaks them; mmlab does not).
        for pfn in owned.sorted() { allocator.freeOwned(Pfn(pfn), order: 0, by: "a page table") }
        tables -= owned.count
        owned = []
        pgd = nil
    }
}
