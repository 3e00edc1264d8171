/// A lock tasks contend for: a spinlock (`spinlock_t`) or a mutex
/// (`struct mutex`). Waiters are served in the order they came.
public class Lock: CustomStringConvertible {
    public let id: Int
    public let name: String?
    /// Where it was created.
    public let site: Site
    /// Its lockdep class.
    public let lockClass: LockClass
    public internal(set) var owner: Task?
    var waiters: [Task] = []
    public internal(set) var acquisitions = 0
    /// Acquisitions that had to wait.
    public internal(set) var contentions = 0

    init(id: Int, name: String?, site: Site, lockClass: LockClass) {
        self.id = id
        self.name = name
        self.site = site
        self.lockClass = lockClass
    }

    var kind: String { "Lock" }
    public var description: String { "\(kind){\(name ?? "#\(id)")}" }
    public var waiterCount: Int { waiters.count }
}

/// `spinlock_t`: taking it disables preemption; a contended one spins,
/// keeping its CPU busy.
public final class SpinLock: Lock {
    override var kind: String { "SpinLock" }
}

/// `struct mutex`: a contended one sleeps; taking one where sleeping is
/// not allowed is a bug.
public final class Mutex: Lock {
    override var kind: String { "Mutex" }
}

/// A held lock, owned by the task that took it (`SpinLockGuard`,
/// `MutexGuard`): dropping it unlocks. Guards are not `Send`: another task
/// may not drop it.
public final class LockGuard: Guard {
    public let lock: Lock

    init(lock: Lock, task: Task, site: Site) {
        self.lock = lock
        super.init(task: task, site: site)
    }

    override public var typeName: String { lock is SpinLock ? "SpinLockGuard" : "MutexGuard" }
    override public var description: String { "\(typeName){\(lock)}" }
    override public var takenWith: String { "lock:lock()" }
}

/// `CpuGuard`: preemption is off while it lives; only its task may drop it.
public final class CpuGuard: Guard {
    public let cpu: Int

    override init(task: Task, site: Site) {
        cpu = task.cpu
        super.init(task: task, site: site)
    }

    override public var typeName: String { "CpuGuard" }
    override public var description: String { "CpuGuard{cpu=\(cpu), task=\(task.name)}" }
    override public var takenWith: String { "kernel.percpu.CpuGuard()" }
}

extension Scheduler {
    /// Creates a lock of lockdep class `className`, or by default of the
    /// class of its creation site (the `lock_class_key` of an init site).
    public func makeLock(spin: Bool, name: String?, site: Site, className: String? = nil) -> Lock {
        lockCount += 1
        let cls = lockClass(className, site: site, lock: name ?? "#\(lockCount)")
        return spin ? SpinLock(id: lockCount, name: name, site: site, lockClass: cls)
                    : Mutex(id: lockCount, name: name, site: site, lockClass: cls)
    }

    /// The class named `name`, or the class of `site`; a lock made where no
    /// site is known (from Swift) is a class of its own, named as the lock.
    func lockClass(_ name: String?, site: Site, lock: String) -> LockClass {
        if let name { return lockdep.lockClass(key: "class " + name, name: name) }
        if site == .unknown { return lockdep.lockClass(key: "lock \(lockCount)", name: lock) }
        return lockdep.lockClass(key: "site \(site.id)", name: sites.name(site))
    }

    /// The `preempt_enable` of a spinlock's release (or of a failed spin).
    /// The count the lock took is gone only if the script's own
    /// `preempt_enable` took it (a CpuGuard's share first): the kernel's
    /// preempt count underflow (DEBUG_PREEMPT), a bug once the release is done.
    private func spinUnlockPreemption(_ task: Task, _ lock: Lock) -> KernelError? {
        guard task.preemptCount > 0 else {
            return .bug("preempt count underflow: \(lock) released in task '\(task.name)' with preempt_count 0 (an unmatched preempt_enable took the count the lock took)")
        }
        task.preemptCount -= 1
        return nil
    }

    /// Takes `lock` for the running task: a guard, or nil when it must
    /// wait (it is then blocked, and this is called again when it wakes).
    /// Taking a mutex where sleeping is not allowed, taking a lock twice,
    /// and a lock-order inversion (lockdep) are bugs.
    public func lock(_ lock: Lock, subclass: Int = 0, site: Site) throws(KernelError) -> LockGuard? {
        let task = current
        if let error = task.takeWakeError() {
            if lock is SpinLock, let underflow = spinUnlockPreemption(task, lock) { throw underflow }
            throw error
        }
        if task.handoff === lock {
            task.handoff = nil
            return tracked(LockGuard(lock: lock, task: task, site: site))
        }
        if lock is Mutex { try mightSleep("mutex_lock(\(lock))") }
        try lockdep.acquire(lock, subclass: subclass, by: task, site: site, trylock: false, sites: sites)
        if lock is SpinLock { preemptDisable() }
        lock.acquisitions += 1
        guard lock.owner != nil else {
            take(lock, task, site, subclass: subclass)
            return tracked(LockGuard(lock: lock, task: task, site: site))
        }
        lock.contentions += 1
        lock.waiters.append(task)
        block(on: .lock(lock))
        pending[ObjectIdentifier(task)] = (site, subclass)
        return nil
    }

    /// `try_lock`: a guard, or nil when another task holds it.
    /// Lockdep neither checks nor records a trylock.
    public func tryLock(_ lock: Lock, site: Site) -> LockGuard? {
        let task = current
        guard lock.owner == nil else {
            noProgress()
            return nil
        }
        if lock is SpinLock { preemptDisable() }
        lock.acquisitions += 1
        take(lock, task, site)
        return tracked(LockGuard(lock: lock, task: task, site: site))
    }

    private func tracked<T: NativeObject>(_ object: T) -> T {
        accounting.track(object)
        return object
    }

    private func take(_ lock: Lock, _ task: Task, _ site: Site, subclass: Int = 0) {
        lock.owner = task
        task.held.append(HeldLock(lock: lock, site: site, subclass: subclass))
        trace?.lock("hold", lock, task, begin: true)
    }

    /// Drops a guard: unlocks, handing the lock to the first waiter. Only
    /// the task that took it may, unless the collector drops it
    /// (`byCollector`). Unlocking a spinlock re-enables preemption.
    public func unlock(_ guard_: LockGuard, byCollector: Bool = false) throws(KernelError) {
        let lock = guard_.lock, owner = guard_.task
        guard !guard_.isReleased else { return }
        if !byCollector, current !== owner {
            throw .bug("\(guard_) released by task '\(current.name)'; it was taken by task '\(owner.name)': guards are not Send")
        }
        guard_.markReleased()
        accounting.untrack(guard_)
        owner.release(lock)
        trace?.lock("hold", lock, owner, begin: false)
        let underflow = lock is SpinLock ? spinUnlockPreemption(owner, lock) : nil
        if let next = lock.waiters.first {
            lock.waiters.removeFirst()
            let (site, subclass) = pending.removeValue(forKey: ObjectIdentifier(next)) ?? (.unknown, 0)
            take(lock, next, site, subclass: subclass)
            next.handoff = lock
            wake(next)
        } else {
            lock.owner = nil
        }
        if let underflow { throw underflow }
    }

    /// A CpuGuard: preemption off for the running task until it is dropped.
    public func cpuGuard(site: Site) -> CpuGuard {
        preemptDisable()
        return tracked(CpuGuard(task: current, site: site))
    }

    /// Drops a CpuGuard; only its task may, unless the collector does.
    public func release(_ guard_: CpuGuard, byCollector: Bool = false) throws(KernelError) {
        guard !guard_.isReleased else { return }
        if !byCollector, current !== guard_.task {
            throw .bug("\(guard_) released by task '\(current.name)'; it was taken by task '\(guard_.task.name)': guards are not Send")
        }
        guard_.markReleased()
        accounting.untrack(guard_)
        // The script's own preempt_enable may have taken the guard's share
        // already: what is left belongs to the spinlocks the task holds.
        let task = guard_.task
        let spins = task.held.filter { $0.lock is SpinLock }
        if let last = spins.last, task.preemptCount <= spins.count {
            throw .bug("put_cpu of \(guard_) in task '\(task.name)': its preempt_count \(task.preemptCount) is what \(last.lock) (locked at \(sites.name(last.site))) took; an unmatched preempt_enable took the guard's share")
        }
        try preemptEnable(task)
    }

    /// Whether taking `lock` now would have to wait.
    public func wouldWait(for lock: Lock) -> Bool {
        let task = current
        return task.wakeError == nil && task.handoff !== lock && lock.owner != nil && lock.owner !== task
    }
}
