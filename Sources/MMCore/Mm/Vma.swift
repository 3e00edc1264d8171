/// VMA flags (`vm_flags_t`), with the values of include/linux/mm.h.
public struct VmFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let read = VmFlags(rawValue: 0x1)
    public static let write = VmFlags(rawValue: 0x2)
    public static let exec = VmFlags(rawValue: 0x4)
    public static let shared = VmFlags(rawValue: 0x8)
    public static let mayread = VmFlags(rawValue: 0x10)
    public static let maywrite = VmFlags(rawValue: 0x20)
    public static let mayexec = VmFlags(rawValue: 0x40)
    public static let mayshare = VmFlags(rawValue: 0x80)
    public static let growsdown = VmFlags(rawValue: 0x100)
    public static let pfnmap = VmFlags(rawValue: 0x400)
    public static let locked = VmFlags(rawValue: 0x2000)
    public static let io = VmFlags(rawValue: 0x4000)
    public static let dontcopy = VmFlags(rawValue: 0x20000)
    public static let dontexpand = VmFlags(rawValue: 0x40000)
    public static let account = VmFlags(rawValue: 0x100000)
    public static let noreserve = VmFlags(rawValue: 0x200000)
    public static let dontdump = VmFlags(rawValue: 0x400_0000)
    public static let mixedmap = VmFlags(rawValue: 0x1000_0000)

    /// `VM_SPECIAL`: never merged.
    public static let special: VmFlags = [.io, .dontexpand, .pfnmap, .mixedmap]

    /// The flags under their kernel names, `VM_` dropped.
    public static let named: [(String, VmFlags)] = [
        ("NONE", []), ("READ", .read), ("WRITE", .write), ("EXEC", .exec), ("SHARED", .shared),
        ("MAYREAD", .mayread), ("MAYWRITE", .maywrite), ("MAYEXEC", .mayexec), ("MAYSHARE", .mayshare),
        ("GROWSDOWN", .growsdown), ("PFNMAP", .pfnmap), ("LOCKED", .locked), ("IO", .io),
        ("DONTCOPY", .dontcopy), ("DONTEXPAND", .dontexpand), ("ACCOUNT", .account),
        ("NORESERVE", .noreserve), ("DONTDUMP", .dontdump), ("MIXEDMAP", .mixedmap),
    ]
}

/// A virtual memory area (`struct vm_area_struct`): `[start, end)` of an
/// mm, with its flags and what it maps.
public final class VmArea: CustomStringConvertible {
    public internal(set) var start: UInt64
    public internal(set) var end: UInt64
    public internal(set) var flags: VmFlags
    /// `vm_pgoff`: for anonymous memory, the start's page number.
    public internal(set) var pgoff: UInt64
    /// What it maps.
    public let backing: Backing
    public internal(set) weak var mm: MmStruct?
    /// Its anon_vma (by id), once a fault put anonymous pages in it.
    public internal(set) var anonVma: Int?
    /// Per-VMA read locks held (`lock_vma_under_rcu`).
    var readers = 0
    /// `vm_lock_seq`: the mm's `mm_lock_seq` when a writer last
    /// write-locked it (`vma_start_write`); locked while they are equal.
    var lockSeq = -1
    /// A writer waiting in `vma_start_write` for the readers to leave.
    var writer: Task?
    /// Unmapped (or torn down): refs to it are dead.
    public internal(set) var isDetached = false

    init(mm: MmStruct, start: UInt64, end: UInt64, flags: VmFlags, pgoff: UInt64, backing: Backing) {
        self.mm = mm
        self.start = start
        self.end = end
        self.flags = flags
        self.pgoff = pgoff
        self.backing = backing
    }

    /// What a VMA maps: private anonymous memory, a shmem object (shared
    /// anonymous memory), or a driver's file, whose mmap handler set it up
    /// and which has no fault handler: only what the driver inserts is there.
    public enum Backing: Equatable, Sendable {
        case anonymous
        case shmem(Int)
        case file(Int)
    }

    public var isAnonymous: Bool { backing == .anonymous }
    public var isFile: Bool { if case .file = backing { true } else { false } }

    /// `rw-p`, as /proc/PID/maps shows it.
    public var perms: String {
        (flags.contains(.read) ? "r" : "-") + (flags.contains(.write) ? "w" : "-")
            + (flags.contains(.exec) ? "x" : "-") + (flags.contains(.mayshare) ? "s" : "p")
    }

    /// `Vma{0x7f0000000000-0x7f0000002000 rw-p}`.
    public var description: String { "Vma{0x\(String(start, radix: 16))-0x\(String(end, radix: 16)) \(perms)}" }

    func contains(_ addr: UInt64) -> Bool { addr >= start && addr < end }
}

/// What keeps a VmaRef valid: a held mmap lock guard, a VMA read lock, or
/// an mmap in progress.
public protocol VmaProtector: AnyObject, CustomStringConvertible {
    var protects: Bool { get }
}

/// Read access to a VMA (`VmaRef`), valid while its protector is held.
public class VmaRef: CustomStringConvertible {
    public let vma: VmArea
    let protector: any VmaProtector

    init(_ vma: VmArea, protector: any VmaProtector) {
        self.vma = vma
        self.protector = protector
    }

    public var typeName: String { "VmaRef" }
    public var description: String { "\(typeName){0x\(String(vma.start, radix: 16))-0x\(String(vma.end, radix: 16))}" }

    /// Its guard is held and its VMA mapped.
    public var isValid: Bool { protector.protects && !vma.isDetached }

    /// Using a VmaRef after its guard is gone, or after its VMA was
    /// unmapped, is a bug (the borrow checker's job in Rust).
    public func check() throws(KernelError) {
        guard protector.protects else {
            throw .bug("use of \(self) after its \(protector) was released: the VMA is no longer protected")
        }
        if vma.isDetached { throw .bug("use of \(self) after its VMA was unmapped") }
    }

    public func vmStart() throws(KernelError) -> UInt64 { try check(); return vma.start }
    public func vmEnd() throws(KernelError) -> UInt64 { try check(); return vma.end }
    public func flags() throws(KernelError) -> VmFlags { try check(); return vma.flags }
    /// Its anon_vma's id, or nil before an anonymous fault gave it one.
    public func anonVma() throws(KernelError) -> Int? { try check(); return vma.anonVma }

    /// The mm, borrowed.
    public func mm() throws(KernelError) -> MmWithUser {
        try check()
        guard let mm = vma.mm else { throw .bug("\(self) outlived its mm") }
        return MmWithUser.view(mm)
    }

    /// `zap_vma_range`: clears the PTEs of `[address, address + size)`,
    /// dropping their page references; nothing at all when the range
    /// overflows or is not inside the VMA.
    public func zapVmaRange(_ address: UInt64, _ size: UInt64) throws(KernelError) {
        try check()
        let (end, overflow) = address.addingReportingOverflow(size)
        guard !overflow, address >= vma.start, end <= vma.end, let mm = vma.mm else { return }
        mm.zap(address..<end)
    }

    /// A VmaMixedMap when `VM_MIXEDMAP` is set.
    public func asMixedMap() throws(KernelError) -> VmaMixedMap? {
        try check()
        return vma.flags.contains(.mixedmap) ? VmaMixedMap(vma, protector: protector) : nil
    }
}

/// A VMA with `VM_MIXEDMAP` set (`VmaMixedMap`): pages can be inserted.
public final class VmaMixedMap: VmaRef {
    override public var typeName: String { "VmaMixedMap" }

    /// `vm_insert_page`: maps `page` at `address`, taking a reference.
    /// EFAULT outside the VMA, EBUSY if a page is mapped there already,
    /// EINVAL for a page `validate_page_before_insert` refuses.
    public func vmInsertPage(_ address: UInt64, _ page: any PageAccess) throws(KernelError) {
        try check()
        guard let mm = vma.mm else { throw .bug("\(self) outlived its mm") }
        try validatePageBeforeInsert(page)
        try page.checkAccess()
        try mm.insertPage(into: vma, at: address, pfn: page.pfn)
    }

    /// `validate_page_before_insert`: EINVAL for a page whose refcount is
    /// 0, for anonymous memory, and for the zero page unless the mapping
    /// may hold it (`vm_mixed_zeropage_allowed`: a COW mapping, or one
    /// without VM_WRITE and VM_MAYWRITE).
    private func validatePageBeforeInsert(_ page: any PageAccess) throws(KernelError) {
        let allocator = page.machine.pageAllocator, pfn = page.pfn
        if pfn == ZERO_PAGE_PFN {
            let cow = vma.flags.intersection([.shared, .maywrite]) == .maywrite
            guard cow || vma.flags.isDisjoint(with: [.write, .maywrite]) else {
                throw KernelError(.EINVAL, "vm_insert_page of the zero page into \(vma), a shared writable mapping")
            }
            return
        }
        // Reserved frames are the kernel's: their refcount never drops to 0.
        if page.machine.memory.isManaged(pfn), allocator.refcount(pfn) == 0 {
            throw KernelError(.EINVAL, "vm_insert_page of pfn \(pfn), whose refcount is 0")
        }
        if allocator.isAnonymous(pfn) {
            throw KernelError(.EINVAL, "vm_insert_page of pfn \(pfn), an anonymous page")
        }
    }
}

extension MmStruct {
    /// `vm_insert_page` of frame `pfn` at `address` of `vma`, taking a
    /// reference: EFAULT outside the VMA, EBUSY where a page is mapped.
    func insertPage(into vma: VmArea, at address: UInt64, pfn: Pfn) throws(KernelError) {
        let hex = "0x" + String(address, radix: 16)
        guard vma.contains(address) else {
            throw KernelError(.EFAULT, "vm_insert_page at \(hex), outside \(vma)")
        }
        // As the kernel, an unaligned address maps the page that holds it.
        let at = address & ~UInt64(PAGE_SIZE - 1)
        guard pageTable.lookup(at) == nil else {
            throw KernelError(.EBUSY, "vm_insert_page at \(hex): a page is mapped there already")
        }
        // The zero page is the kernel image's: no reference to take.
        let counted = pfn != ZERO_PAGE_PFN
        if counted { try machine.pageAllocator.getPage(pfn) }
        do {
            try pageTable.map(at, pfn, writable: vma.flags.contains(.write) && counted,
                              executable: vma.flags.contains(.exec))
        } catch {
            if counted { put(pfn) }
            throw error
        }
    }
}

/// A VMA being set up by a driver's mmap handler (`VmaNew`): its flags
/// may still change.
public final class VmaNew: VmaRef {
    override public var typeName: String { "VmaNew" }

    private func update(set: VmFlags = [], clear: VmFlags = []) throws(KernelError) {
        try check()
        vma.flags.formUnion(set)
        vma.flags.subtract(clear)
    }

    /// `set_mixedmap`: returns the VmaMixedMap it makes possible.
    public func setMixedmap() throws(KernelError) -> VmaMixedMap {
        try update(set: .mixedmap)
        return VmaMixedMap(vma, protector: protector)
    }

    public func setIo() throws(KernelError) { try update(set: .io) }
    public func setDontexpand() throws(KernelError) { try update(set: .dontexpand) }
    public func setDontcopy() throws(KernelError) { try update(set: .dontcopy) }
    public func setDontdump() throws(KernelError) { try update(set: .dontdump) }
    public func readable() throws(KernelError) -> Bool { try flags().contains(.read) }
    public func writable() throws(KernelError) -> Bool { try flags().contains(.write) }
    public func executable() throws(KernelError) -> Bool { try flags().contains(.exec) }

    /// `try_clear_mayread` and friends: EINVAL while the matching access is on.
    public func tryClear(_ may: VmFlags, unless access: VmFlags) throws(KernelError) {
        guard try !flags().contains(access) else {
            throw KernelError(.EINVAL, "cannot clear the may-flag of an access the mapping has")
        }
        try update(clear: may)
    }
}
