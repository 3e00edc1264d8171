/// The mmap lock of an mm and the guards on it: `MmapReadGuard`,
/// `MmapWriteGuard` (both not `Send`), and the per-VMA read lock
/// `VmaReadGuard` of `lock_vma_under_rcu`.
public final class MmapGuard: RwGuard, VmaProtector {
    public let mm: MmStruct

    init(mm: MmStruct, task: Task, write: Bool, site: Site) {
        self.mm = mm
        super.init(sem: mm.mmapLock, task: task, write: write, site: site)
    }

    override public var typeName: String { isWrite ? "MmapWriteGuard" : "MmapReadGuard" }
    override public var description: String { "\(typeName){mm=\(mm.id)}" }
    override public var takenWith: String { isWrite ? "mm:mmap_write_lock()" : "mm:mmap_read_lock()" }
    public var protects: Bool { !isReleased }

    /// `vma_lookup`: the VMA holding `addr`, valid while this guard is held.
    public func vmaLookup(_ addr: UInt64) throws(KernelError) -> VmaRef? {
        guard !isReleased else { throw .bug("use of \(self) after it was released") }
        return mm.find(addr).map { VmaRef($0, protector: self) }
    }
}

/// A per-VMA read lock (`VmaReadGuard`): derefs to the VMA.
public final class VmaReadGuard: Guard, VmaProtector {
    public let vma: VmArea

    init(vma: VmArea, task: Task, site: Site) {
        self.vma = vma
        super.init(task: task, site: site)
    }

    override public var typeName: String { "VmaReadGuard" }
    override public var description: String { "VmaReadGuard{0x\(String(vma.start, radix: 16))-0x\(String(vma.end, radix: 16))}" }
    public var protects: Bool { !isReleased }
    /// The VMA, as a VmaRef valid while this guard lives.
    public var vmaRef: VmaRef { VmaRef(vma, protector: self) }
    override public var takenWith: String { "mm:lock_vma_under_rcu(addr)" }
}

extension MmStruct {
    /// `mmap_read_lock` / `mmap_write_lock`: a guard, or nil when the task
    /// must wait (it is then blocked; call again when it wakes).
    public func mmapLock(write: Bool, subclass: Int = 0, site: Site) throws(KernelError) -> MmapGuard? {
        let scheduler = machine.scheduler
        guard try scheduler.down(mmapLock, write: write, subclass: subclass, site: site) else { return nil }
        return machine.track(MmapGuard(mm: self, task: scheduler.current, write: write, site: site))
    }

    /// `mmap_read_trylock` / `mmap_write_trylock`.
    public func mmapTryLock(write: Bool, site: Site) -> MmapGuard? {
        let scheduler = machine.scheduler
        guard scheduler.tryDown(mmapLock, write: write, site: site) else { return nil }
        return machine.track(MmapGuard(mm: self, task: scheduler.current, write: write, site: site))
    }

    /// Drops a guard: unlocks. Only its task may, unless the collector does.
    public func unlock(_ guard_: MmapGuard, byCollector: Bool = false) throws(KernelError) {
        guard !guard_.isReleased else { return }
        let scheduler = machine.scheduler
        if !byCollector, scheduler.current !== guard_.task {
            throw .bug("\(guard_) released by task '\(scheduler.current.name)'; it was taken by task '\(guard_.task.name)': guards are not Send")
        }
        guard_.markReleased()
        machine.accounting.untrack(guard_)
        if guard_.isWrite { lockSeq += 1 }  // vma_end_write_all
        scheduler.up(mmapLock, task: guard_.task, write: guard_.isWrite)
    }

    /// `mmap_write_downgrade`: the write guard becomes a read guard (moved).
    public func downgrade(_ guard_: MmapGuard, site: Site) throws(KernelError) -> MmapGuard {
        let scheduler = machine.scheduler
        guard !guard_.isReleased, guard_.isWrite else { throw .bug("downgrade of \(guard_), which is not a held write guard") }
        guard scheduler.current === guard_.task else {
            throw .bug("\(guard_) downgraded by task '\(scheduler.current.name)'; it was taken by task '\(guard_.task.name)'")
        }
        guard_.markReleased()
        machine.accounting.untrack(guard_)
        lockSeq += 1  // vma_end_write_all
        scheduler.downgrade(mmapLock, task: guard_.task)
        return machine.track(MmapGuard(mm: self, task: guard_.task, write: false, site: site))
    }

    /// `lock_vma_under_rcu`: the VMA at `addr` read-locked (`vma_start_read`),
    /// or nil when there is none, or when that VMA was write-locked in the
    /// current mmap write-lock epoch (its `vm_lock_seq` equals the mm's
    /// `mm_lock_seq`), or a writer waits for its readers (the trylock of
    /// its `vm_lock` fails): the optimistic path fails, take the mmap read
    /// lock instead. A writer holding the mmap lock stops nothing else.
    public func lockVmaUnderRcu(_ addr: UInt64, site: Site) -> VmaReadGuard? {
        guard let vma = find(addr), vma.lockSeq != lockSeq, vma.writer == nil else { return nil }
        vma.readers += 1
        return machine.track(VmaReadGuard(vma: vma, task: machine.scheduler.current, site: site))
    }

    /// `vma_end_read`: a writer waiting for the readers goes once the last
    /// one leaves. Only the guard's task may, unless the collector does.
    public func unlock(_ guard_: VmaReadGuard, byCollector: Bool = false) throws(KernelError) {
        guard !guard_.isReleased else { return }
        let current = machine.scheduler.current
        if !byCollector, current !== guard_.task {
            throw .bug("\(guard_) released by task '\(current.name)'; it was taken by task '\(guard_.task.name)': guards are not Send")
        }
        guard_.markReleased()
        machine.accounting.untrack(guard_)
        let vma = guard_.vma
        vma.readers -= 1
        if vma.readers == 0, let writer = vma.writer {
            vma.writer = nil
            machine.scheduler.wake(writer)
        }
    }

    /// `vma_start_write` of each of `vmas` by the running task, which holds
    /// the mmap write lock: each is write-locked for the rest of the epoch.
    /// False when one still has readers: the task is blocked until they go
    /// (call again when it wakes), and none was locked.
    func vmaStartWrite(_ vmas: [VmArea]) -> Bool {
        if let busy = vmas.first(where: { $0.readers > 0 && $0.lockSeq != lockSeq }) {
            let scheduler = machine.scheduler
            busy.writer = scheduler.current
            scheduler.block(on: .vmaReaders(busy))
            return false
        }
        for vma in vmas { vma.lockSeq = lockSeq }
        return true
    }
}

extension Scheduler {
    /// A reader-writer semaphore of lockdep class `className` (by default,
    /// the class of its creation site).
    public func makeRwSemaphore(name: String, site: Site, className: String? = nil) -> RwSemaphore {
        lockCount += 1
        return RwSemaphore(id: lockCount, name: name, site: site, lockClass: lockClass(className, site: site, lock: name))
    }
}
