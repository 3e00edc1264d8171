/// An address space (`struct mm_struct`): its VMAs, page tables and mmap
/// lock, and the two counts that keep it alive.
///
/// `users` (`mm_users`) counts those using the address space; when it
/// reaches zero, `exit_mmap` tears every mapping down. `count`
/// (`mm_count`) counts references to the structure itself, the users
/// holding one together; at zero the structure is freed.
///
/// # Invariants
///
/// `users > 0` implies `count > 0` and not `exited`. VMAs are sorted and
/// disjoint. After `exited` there are no VMAs and no tables below the PGD;
/// after `freed`, no PGD either.
public final class MmStruct: CustomStringConvertible {
    public let id: Int
    public let machine: Machine
    public internal(set) var users = 1
    public internal(set) var count = 1
    public internal(set) var vmas: [VmArea] = []
    public let mmapLock: RwSemaphore
    let pageTable: PageTable
    public internal(set) var exited = false
    public internal(set) var freed = false
    /// `MMF_OOM_SKIP`: the OOM killer reaped it; it is no candidate any more.
    public internal(set) var oomSkip = false
    /// The last shmem object id handed out.
    var nextShmem = 0
    /// `mm_lock_seq`: the write-lock epoch. A VMA is write-locked while its
    /// `lockSeq` equals it; `mmap_write_unlock` ends them all at once
    /// (`vma_end_write_all`).
    var lockSeq = 0

    init(machine: Machine, id: Int, site: Site) throws(KernelError) {
        self.id = id
        self.machine = machine
        pageTable = try PageTable(allocator: machine.pageAllocator, memory: machine.memory)
        pageTable.log = { [unowned machine] in machine.pageAllocator.onLog?($0) }
        mmapLock = machine.scheduler.makeRwSemaphore(name: "mmap_lock of mm \(id)", site: site, className: "mmap_lock")
    }

    public var description: String { "mm \(id)" }
    /// VMAs (`map_count`).
    public var mapCount: Int { vmas.count }
    /// Page-table pages it holds, the PGD included.
    public var pageTables: Int { pageTable.tables }

    /// `mmput` at zero: `exit_mmap`, then the users' `mm_count`.
    func put(async: Bool) {
        users -= 1
        guard users == 0 else { return }
        if async {
            machine.scheduler.queueWork("mmput_async(\(self))") { [self] in
                exitMmap()
                drop()
            }
        } else {
            exitMmap()
            drop()
        }
    }

    /// `mmdrop`: at zero the structure and its PGD are freed.
    func drop() {
        count -= 1
        guard count == 0 else { return }
        pageTable.freeAll()
        freed = true
    }

    /// `exit_mmap`: every VMA unmapped, PTEs zapped (dropping their page
    /// references), page tables below the PGD freed.
    func exitMmap() {
        machine.trace?.emit(.instant, "exit_mmap", category: "mm", track: .machine,
                            args: [.init("mm", id), .init("vmas", vmas.count)])
        for vma in vmas {
            zap(vma.start..<vma.end)
            vma.isDetached = true
        }
        vmas = []
        pageTable.freeTables()
        exited = true
    }
}

/// A reference to an mm: `Mm` holds an `mmgrab` count, `MmWithUser` an
/// `mmget` one (the address space stays usable), `MmWithUserAsync` an
/// `mmget` one released with `mmput_async`. A borrowed view (`owns` false)
/// holds nothing, as `&MmWithUser` from `CurrentTask::mm()`.
public class MmReference: NativeObject {
    public let mm: MmStruct
    let owns: Bool
    public internal(set) var isReleased = false

    init(mm: MmStruct, site: Site, owns: Bool = true) {
        self.mm = mm
        self.owns = owns
        super.init(site: site)
    }

    override public var description: String { "\(typeName){id=\(mm.id), users=\(mm.users), count=\(mm.count)}" }

    /// `mmget_not_zero`: a new `MmWithUser`, or nil once `mm_users` is zero.
    public func mmgetNotZero(site: Site) throws(KernelError) -> MmWithUser? {
        try checkLive()
        guard mm.users > 0 else { return nil }
        mm.users += 1
        return mm.machine.track(MmWithUser(mm: mm, site: site))
    }

    /// `mmgrab` (an `MmWithUser` method): a reference to the structure.
    public func mmgrab(site: Site) throws(KernelError) -> Mm {
        try checkUsers()
        mm.count += 1
        return mm.machine.track(Mm(mm: mm, site: site))
    }

    /// `mmget` (an `MmWithUser` method): another user.
    public func mmget(site: Site) throws(KernelError) -> MmWithUser {
        try checkUsers()
        mm.users += 1
        return mm.machine.track(MmWithUser(mm: mm, site: site))
    }

    public func checkLive() throws(KernelError) {
        if isReleased { throw .bug("use of \(self) after it was released") }
    }

    /// What needs `mm_users > 0` (every `MmWithUser` method): a bug once the
    /// users are gone, which only a borrowed view can see.
    public func checkUsers() throws(KernelError) {
        try checkLive()
        guard mm.users > 0 else {
            throw .bug("use of \(self) after mm_users reached zero: the address space is gone")
        }
    }

    /// Drops the reference; the last ones tear down and free the mm. The
    /// collector (`byCollector`) drops from wherever it runs: no context check.
    public func release(byCollector: Bool = false) throws(KernelError) {
        guard !isReleased else { return }
        try releaseCount(byCollector: byCollector)
        isReleased = true
        if owns { mm.machine.accounting.untrack(self) }
    }

    func releaseCount(byCollector: Bool) throws(KernelError) {}

    /// A consuming operation took the count: released without dropping it.
    func markMoved() {
        isReleased = true
        if owns { mm.machine.accounting.untrack(self) }
    }
}

/// An `mmgrab` reference: keeps the structure, not the address space.
public final class Mm: MmReference {
    override public var typeName: String { "Mm" }
    override func releaseCount(byCollector: Bool) throws(KernelError) { if owns { mm.drop() } }

    /// Another `mmgrab` reference.
    public func clone(site: Site) throws(KernelError) -> Mm {
        try checkLive()
        mm.count += 1
        return mm.machine.track(Mm(mm: mm, site: site))
    }
}

/// An `mmget` reference: the address space is usable while it lives.
public final class MmWithUser: MmReference {
    override public var typeName: String { "MmWithUser" }

    /// `mmput` may sleep (`exit_mmap`).
    override func releaseCount(byCollector: Bool) throws(KernelError) {
        guard owns else { return }
        if !byCollector { try mm.machine.scheduler.mightSleep("mmput(\(mm))") }
        mm.put(async: false)
    }

    /// Moves this reference into one released with `mmput_async`.
    public func intoMmputAsync(site: Site) throws(KernelError) -> MmWithUserAsync {
        try checkUsers()
        guard owns else { throw .bug("into_mmput_async of a borrowed \(self): it holds no count to move") }
        markMoved()
        return mm.machine.track(MmWithUserAsync(mm: mm, site: site))
    }

    /// A borrowed view, holding no count.
    public static func view(_ mm: MmStruct) -> MmWithUser { MmWithUser(mm: mm, site: .unknown, owns: false) }
}

/// An `mmget` reference whose drop defers `exit_mmap` to the work queue
/// (`mmput_async`): safe where sleeping is not.
public final class MmWithUserAsync: MmReference {
    override public var typeName: String { "MmWithUserAsync" }
    override func releaseCount(byCollector: Bool) throws(KernelError) { mm.put(async: true) }

    /// Another `mmget` reference, also released with `mmput_async`.
    public func clone(site: Site) throws(KernelError) -> MmWithUserAsync {
        try checkUsers()
        mm.users += 1
        return mm.machine.track(MmWithUserAsync(mm: mm, site: site))
    }
}

extension Machine {
    /// `mm_alloc`: a new, empty address space (`mm_users` 1, `mm_count` 1).
    public func mmAlloc(site: Site) throws(KernelError) -> MmWithUser {
        mmIds += 1
        let mm = try MmStruct(machine: self, id: mmIds, site: site)
        return track(MmWithUser(mm: mm, site: site))
    }

    func track<T: NativeObject>(_ object: T) -> T {
        accounting.track(object)
        return object
    }
}
