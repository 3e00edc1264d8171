/// `struct rw_semaphore`: many readers or one writer; contended sleepers
/// queue in order, and a reader waits behind a waiting writer so that
/// writers are not starved (kernel/locking/rwsem.c). The mmap lock is one.
///
/// # Invariants
///
/// Either `owner` (the writer) is set and `readers` is empty, or there is no
/// writer.
public final class RwSemaphore: Lock {
    public internal(set) var readers: [Task] = []
    /// Who waits, and whether for writing.
    var queue: [(task: Task, write: Bool)] = []

    override var kind: String { "RwSemaphore" }
    /// A writer holds it, or waits for it.
    public var writerActive: Bool { owner != nil || queue.contains { $0.write } }

    func grantable(write: Bool) -> Bool {
        if write { return owner == nil && readers.isEmpty }
        return owner == nil && !queue.contains { $0.write }
    }
}

/// A held rw_semaphore, read or write, owned by the task that took it.
public class RwGuard: Guard {
    public let sem: RwSemaphore
    public internal(set) var isWrite: Bool

    init(sem: RwSemaphore, task: Task, write: Bool, site: Site) {
        self.sem = sem
        isWrite = write
        super.init(task: task, site: site)
    }

    override public var typeName: String { isWrite ? "RwSemWriteGuard" : "RwSemReadGuard" }
    override public var description: String { "\(typeName){\(sem)}" }
}

extension Scheduler {
    /// `down_read` / `down_write` (or `*_nested` with a `subclass`) for the
    /// running task: true once held, false when it must wait (it is then
    /// blocked, and this is called again when it wakes). Sleeping where it
    /// may not, taking it twice, and lock order inversions are bugs.
    public func down(_ sem: RwSemaphore, write: Bool, subclass: Int = 0, site: Site) throws(KernelError) -> Bool {
        let task = current
        if let error = task.takeWakeError() { throw error }
        if task.handoff === sem {
            task.handoff = nil
            return true
        }
        try mightSleep(write ? "down_write(\(sem))" : "down_read(\(sem))")
        try lockdep.acquire(sem, subclass: subclass, by: task, site: site, trylock: false, sites: sites)
        sem.acquisitions += 1
        if sem.grantable(write: write) {
            grant(sem, to: task, write: write, site: site, subclass: subclass)
            return true
        }
        sem.contentions += 1
        sem.queue.append((task, write))
        sem.waiters.append(task)
        pending[ObjectIdentifier(task)] = (site, subclass)
        block(on: .lock(sem))
        return false
    }

    /// Whether `down` would have to wait now.
    public func wouldWait(for sem: RwSemaphore, write: Bool) -> Bool {
        let task = current
        return task.wakeError == nil && task.handoff !== sem && !sem.grantable(write: write)
    }

    /// `down_read_trylock` / `down_write_trylock`: a reader gets it whenever
    /// no writer holds or waits for it, also a task that holds it for
    /// reading already (`rwsem_read_trylock`); lockdep checks no trylock.
    public func tryDown(_ sem: RwSemaphore, write: Bool, site: Site) -> Bool {
        guard sem.grantable(write: write) else {
            noProgress()
            return false
        }
        sem.acquisitions += 1
        grant(sem, to: current, write: write, site: site)
        return true
    }

    private func grant(_ sem: RwSemaphore, to task: Task, write: Bool, site: Site, subclass: Int = 0) {
        if write { sem.owner = task } else { sem.readers.append(task) }
        task.held.append(HeldLock(lock: sem, site: site, subclass: subclass))
        trace?.lock(write ? "hold" : "hold (read)", sem, task, begin: true)
    }

    /// `up_read` / `up_write` of `task`'s hold; waiters get the semaphore
    /// as `rwsem_mark_wake` hands it out.
    public func up(_ sem: RwSemaphore, task: Task, write: Bool) {
        task.release(sem)
        trace?.lock(write ? "hold" : "hold (read)", sem, task, begin: false)
        if write {
            if sem.owner === task { sem.owner = nil }
        } else if let i = sem.readers.firstIndex(where: { $0 === task }) {
            sem.readers.remove(at: i)
        }
        grantWaiters(sem)
    }

    /// `downgrade_write`: the writer becomes a reader; waiting readers join it.
    public func downgrade(_ sem: RwSemaphore, task: Task) {
        guard sem.owner === task else { return }
        sem.owner = nil
        sem.readers.append(task)
        trace?.lock("hold", sem, task, begin: false)
        trace?.lock("hold (read)", sem, task, begin: true)
        grantWaiters(sem)
    }

    /// `MAX_READERS_WAKEUP`: readers granted at once.
    public static var maxReadersWakeup: Int { 256 }

    /// Hands the semaphore to waiters as `rwsem_mark_wake` does: a writer
    /// at the head of the queue gets it alone once it is free; a reader at
    /// the head means a reader phase, in which up to 256 waiting readers
    /// from anywhere in the queue get it together (phase-fair), while the
    /// writers keep their places.
    public func grantWaiters(_ sem: RwSemaphore) {
        guard let first = sem.queue.first else { return }
        if first.write {
            guard sem.grantable(write: true) else { return }
            sem.queue.removeFirst()
            hand(sem, to: first.task, write: true)
            return
        }
        guard sem.owner == nil else { return }
        var woken = 0, i = 0
        while i < sem.queue.count, woken < Scheduler.maxReadersWakeup {
            guard !sem.queue[i].write else {
                i += 1
                continue
            }
            let reader = sem.queue.remove(at: i).task
            hand(sem, to: reader, write: false)
            woken += 1
        }
    }

    /// A waiter is granted the semaphore and woken.
    private func hand(_ sem: RwSemaphore, to task: Task, write: Bool) {
        sem.waiters.removeAll { $0 === task }
        let (site, subclass) = pending.removeValue(forKey: ObjectIdentifier(task)) ?? (.unknown, 0)
        grant(sem, to: task, write: write, site: site, subclass: subclass)
        task.handoff = sem
        wake(task)
    }

    /// A task woken with an error stops waiting on `sem`.
    func forget(_ task: Task, waitingOn sem: RwSemaphore) {
        sem.queue.removeAll { $0.task === task }
        pending[ObjectIdentifier(task)] = nil
    }
}
