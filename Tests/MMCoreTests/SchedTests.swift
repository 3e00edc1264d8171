import Testing
@testable import MMCore

@Suite("Scheduler")
struct SchedulerTests {
    func machine(cpus: Int = 4, seed: UInt64 = 0) throws -> Machine {
        try Machine(MachineConfig(memory: 16 << 20, cpus: cpus, seed: seed))
    }

    @Test("spawned tasks spread over the least busy CPUs; a bound one stays")
    func spawn() throws {
        let s = try machine().scheduler
        let tasks = try (0..<4).map { _ in try s.spawn(name: nil, cpu: nil, site: .unknown) }
        #expect(tasks.map(\.cpu) == [0, 1, 2, 3])
        #expect(tasks.map(\.name) == ["task2", "task3", "task4", "task5"])
        let bound = try s.spawn(name: "b", cpu: 2, site: .unknown)
        #expect(bound.boundCpu == 2)
        #expect(throws: KernelError.self) { try s.spawn(name: nil, cpu: 4, site: .unknown) }
        #expect(s.runnable == 5)
    }

    @Test("the same seed picks the same order")
    func deterministic() throws {
        func order(seed: UInt64) throws -> [Int] {
            let s = try machine(seed: seed).scheduler
            for _ in 0..<6 { _ = try s.spawn(name: nil, cpu: nil, site: .unknown) }
            var picked: [Int] = []
            while let t = s.pickNext() {
                picked.append(t.id)
                s.finish(t, failed: false)
            }
            return picked
        }
        #expect(try order(seed: 3) == order(seed: 3))
        #expect(try Set(order(seed: 3)) == Set(2...7))
    }

    @Test("a task with preemption off is never preempted; it may let other CPUs run")
    func preemptOff() throws {
        let s = try machine(cpus: 2).scheduler
        let a = try s.spawn(name: "a", cpu: 0, site: .unknown)
        _ = try s.spawn(name: "b", cpu: 0, site: .unknown)
        _ = try s.spawn(name: "c", cpu: 1, site: .unknown)
        var task = s.pickNext()
        while task !== a { s.afterYield(); task = s.pickNext() }
        s.preemptDisable()
        for _ in 0..<200 {
            _ = s.preemptionPoint(hook: false)
            #expect(s.isOnCpu(a), "a keeps CPU 0")
            s.afterYield()
            #expect(a.cpu == 0)
        }
        try s.preemptEnable()
        var preempted = false
        for _ in 0..<50 where !preempted {
            preempted = s.preemptionPoint(hook: false) && !s.isOnCpu(a)
        }
        #expect(preempted, "with preemption on, b gets CPU 0")
    }

    @Test("might_sleep and smp_processor_id follow the preemption count")
    func checks() throws {
        let s = try machine().scheduler
        s.restartMain()
        _ = s.pickNext()
        #expect(throws: KernelError.bug("using smp_processor_id() in preemptible [00000000] code: main/1")) {
            try s.smpProcessorId()
        }
        s.preemptDisable()
        #expect(try s.smpProcessorId() == 0)
        #expect(throws: KernelError.self) { try s.mightSleep("mutex_lock") }
        try s.preemptEnable()
        try s.mightSleep("mutex_lock")
        #expect(throws: KernelError.self) { try s.preemptEnable() }
    }
}

/// A machine's scheduler with main running.
func scheduler() throws -> Scheduler {
    let s = try Machine(MachineConfig(memory: 16 << 20)).scheduler
    s.restartMain()
    _ = s.pickNext()
    return s
}

@Suite("Locks and lockdep")
struct LockTests {
    @Test("a contended mutex blocks its task and hands over in order")
    func handoff() throws {
        let s = try scheduler()
        let m = s.makeLock(spin: false, name: "m", site: .unknown)
        let held = try #require(try s.lock(m, site: .unknown))
        let a = try s.spawn(name: "a", cpu: nil, site: .unknown)
        s.switchTo(a)
        #expect(try s.lock(m, site: .unknown) == nil)
        #expect(a.state == .blocked)
        s.switchTo(s.main)
        try s.unlock(held)
        #expect(m.owner === a)
        #expect(a.state == .runnable)
        s.switchTo(a)
        let got = try #require(try s.lock(m, site: .unknown), "the handed-over lock")
        #expect(m.contentions == 1 && m.acquisitions == 2)
        #expect(throws: KernelError.self) {
            s.switchTo(s.main)
            try s.unlock(got)
        }
        s.switchTo(a)
        try s.unlock(got)
        #expect(m.owner == nil)
    }

    @Test("a task that ends while it waits leaves the queue: the lock is not handed to it")
    func endWhileWaiting() throws {
        let s = try scheduler()
        let m = s.makeLock(spin: false, name: "m", site: .unknown)
        let sem = s.makeRwSemaphore(name: "sem", site: .unknown)
        let held = try #require(try s.lock(m, site: .unknown))
        #expect(try s.down(sem, write: true, site: .unknown))
        let a = try s.spawn(name: "a", cpu: nil, site: .unknown)
        let b = try s.spawn(name: "b", cpu: nil, site: .unknown)
        s.switchTo(a)
        #expect(try s.lock(m, site: .unknown) == nil)
        s.switchTo(b)
        #expect(try s.down(sem, write: false, site: .unknown) == false)
        s.finish(a, failed: true)
        s.finish(b, failed: true)
        #expect(m.waiters.isEmpty && sem.queue.isEmpty)
        s.switchTo(s.main)
        try s.unlock(held)
        s.up(sem, task: s.main, write: true)
        #expect(m.owner == nil && sem.readers.isEmpty, "nobody holds them")
    }

    @Test("a spinlock disables preemption; a mutex under it is a bug")
    func spin() throws {
        let s = try scheduler()
        let spin = s.makeLock(spin: true, name: "s", site: .unknown)
        let mutex = s.makeLock(spin: false, name: "m", site: .unknown)
        let g = try #require(try s.lock(spin, site: .unknown))
        #expect(s.current.preemptCount == 1)
        #expect(throws: KernelError.self) { try s.lock(mutex, site: .unknown) }
        try s.unlock(g)
        #expect(s.current.preemptCount == 0)
    }

    @Test("lockdep reports an inversion with both chains, and recursion")
    func lockdep() throws {
        let s = try scheduler()
        let a = s.makeLock(spin: false, name: "A", site: .unknown)
        let b = s.makeLock(spin: false, name: "B", site: .unknown)
        let ga = try #require(try s.lock(a, site: .unknown))
        let gb = try #require(try s.lock(b, site: .unknown))
        #expect(throws: KernelError.bug("possible recursive locking detected: task 'main' is trying to acquire Mutex{A} at ?, which it already holds (locked at ?)")) {
            try s.lock(a, site: .unknown)
        }
        try s.unlock(gb)
        try s.unlock(ga)
        let gb2 = try #require(try s.lock(b, site: .unknown))
        #expect(throws: KernelError.bug("""
            possible circular locking dependency detected: task 'main' is trying to acquire Mutex{A} (class A) at ? while holding Mutex{B} (class B), locked at ?; which lock already depends on the new lock.
            the existing dependency chain (in reverse order) is:
            -> #1 (class B): Mutex{B} taken at ? by task 'main' while holding Mutex{A}, locked at ?
            -> #0 (class A): Mutex{A} taken at ? by task 'main'
            """)) { try s.lock(a, site: .unknown) }
        #expect(a.owner == nil, "the reported acquisition did not happen")
        try s.unlock(gb2)
        #expect(s.lockdep.count == 1)
    }

    @Test("lockdep classes: a site's locks share one, every mmap lock is mmap_lock, subclasses nest (lockdep.c check_deadlock)")
    func lockClasses() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20))
        let s = machine.scheduler
        let site = machine.sites.intern("x.lua:3")
        let m1 = s.makeLock(spin: false, name: "m1", site: site)
        let m2 = s.makeLock(spin: false, name: "m2", site: site)
        #expect(m1.lockClass === m2.lockClass)
        let g1 = try #require(try s.lock(m1, site: .unknown))
        #expect(throws: KernelError.self) { try s.lock(m2, site: .unknown) }
        let g2 = try #require(try s.lock(m2, subclass: 1, site: .unknown))
        try s.unlock(g2)
        try s.unlock(g1)
        let u = try machine.mmAlloc(site: .unknown), v = try machine.mmAlloc(site: .unknown)
        #expect(u.mm.mmapLock.lockClass === v.mm.mmapLock.lockClass)
        #expect(u.mm.mmapLock.lockClass.name == "mmap_lock")
        let gu = try #require(try u.mm.mmapLock(write: true, site: .unknown))
        #expect(throws: KernelError.self) { try v.mm.mmapLock(write: false, site: .unknown) }
        let gv = try #require(try v.mm.mmapLock(write: false, subclass: 1, site: .unknown))
        try v.mm.unlock(gv)
        try u.mm.unlock(gu)
    }

    @Test("down_read_trylock succeeds with no writer holding or waiting, for a reader too (rwsem_read_trylock)")
    func readTrylock() throws {
        let s = try scheduler()
        let sem = s.makeRwSemaphore(name: "sem", site: .unknown)
        #expect(try s.down(sem, write: false, site: .unknown))
        #expect(s.tryDown(sem, write: false, site: .unknown), "a second read hold by the same task")
        #expect(!s.tryDown(sem, write: true, site: .unknown))
        let w = try s.spawn(name: "w", cpu: nil, site: .unknown)
        s.switchTo(w)
        #expect(try s.down(sem, write: true, site: .unknown) == false)
        s.switchTo(s.main)
        #expect(!s.tryDown(sem, write: false, site: .unknown), "a writer waits")
        s.up(sem, task: s.main, write: false)
        #expect(sem.readers.count == 1, "one of the two holds is gone")
        #expect(s.main.held.count == 1)
        s.up(sem, task: s.main, write: false)
        #expect(sem.owner === w, "the last reader leaving hands it to the writer")
    }

    @Test("waking readers is phase-fair (rwsem_mark_wake): up to 256 readers from anywhere in the queue; writers keep their place")
    func phaseFair() throws {
        let s = try scheduler()
        let sem = s.makeRwSemaphore(name: "sem", site: .unknown)
        #expect(try s.down(sem, write: true, site: .unknown))
        // Queue: r1, w1, r2, w2, then 300 readers.
        func waiter(_ name: String, write: Bool) throws -> Task {
            let t = try s.spawn(name: name, cpu: nil, site: .unknown)
            s.switchTo(t)
            #expect(try s.down(sem, write: write, site: .unknown) == false)
            return t
        }
        let r1 = try waiter("r1", write: false), w1 = try waiter("w1", write: true)
        let r2 = try waiter("r2", write: false), w2 = try waiter("w2", write: true)
        let many = try (0..<300).map { try waiter("r\($0 + 3)", write: false) }
        s.switchTo(s.main)
        s.up(sem, task: s.main, write: true)
        #expect(sem.readers.count == 256)
        #expect(sem.readers.first === r1 && sem.readers.contains { $0 === r2 })
        #expect(sem.readers.last === many[253], "r1, r2 and 254 of the rest")
        #expect(sem.queue.map(\.task.name).prefix(3) == ["w1", "w2", "r257"], "the writers keep their place")
        #expect(sem.queue.count == 2 + 46)
        _ = (w1, w2)
    }
}

@Suite("Per-CPU variables")
struct PerCpuTests {
    @Test("each type wraps as the kernel's arithmetic does", arguments: [
        (PerCpuType.i8, Int64(128), Int64(-128)), (.i8, -129, 127), (.u8, 256, 0), (.u8, -1, 255),
        (.i16, 32768, -32768), (.u16, -1, 65535), (.i32, 1 << 31, -(1 << 31)), (.u32, -1, 4_294_967_295),
        (.u32, 1 << 32, 0), (.i64, Int64.max, Int64.max), (.u64, -1, -1), (.usize, -1, -1), (.isize, -1, -1),
    ])
    func wrap(type: PerCpuType, value: Int64, wrapped: Int64) {
        #expect(type.wrap(value) == wrapped)
    }

    @Test("operations, remote access and a second token")
    func operations() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20, cpus: 2))
        let s = machine.scheduler
        s.restartMain()
        _ = s.pickNext()
        let area = machine.percpu.alloc(.u8, site: .unknown) { cpu in Int64(cpu + 254) }
        #expect(area.values == [254, 255])
        #expect(try area.add(1, 1) == 0)
        #expect(try area.exchange(0, 300) == 254)
        #expect(try area.read(0) == 44)
        #expect(try area.compareExchange(0, old: 300, new: 7) == 44)
        #expect(try area.read(0) == 7)
        #expect(throws: KernelError.self) { try area.read(2) }
        let token = try machine.percpu.token(area, s.cpuGuard(site: .unknown), site: .unknown)
        #expect(throws: KernelError.self) { try machine.percpu.token(area, s.cpuGuard(site: .unknown), site: .unknown) }
        try token.set(9)
        #expect(try token.get() == 9)
        try machine.percpu.release(token)
        #expect(throws: KernelError.self) { try token.get() }
        #expect(s.current.preemptCount == 1, "the rejected guard is still held")
        let statics = machine.percpu
        _ = try statics.define("x", .i16, initial: 40000, site: .unknown)
        #expect(try statics.get("x")?.read(1) == 40000 - 65536)
        #expect(throws: KernelError.self) { try statics.define("x", .u8, initial: 0, site: .unknown) }
    }
}

@Suite("Wait queues and completions")
struct WaitTests {
    @Test("a wait queue: sleepers at the head, a wake-up takes every one off; one woken while running does not sleep")
    func waitQueue() throws {
        let s = try scheduler()
        let wq = s.makeWaitQueue(name: "q", site: .unknown)
        let a = try s.spawn(name: "a", cpu: nil, site: .unknown)
        let b = try s.spawn(name: "b", cpu: nil, site: .unknown)
        for t in [a, b] {
            s.switchTo(t)
            wq.prepareToWait(t)
            wq.prepareToWait(t)  // already on it: once
            #expect(s.sleep(on: wq))
        }
        #expect(wq.entries.map(\.name) == ["b", "a"], "__add_wait_queue adds at the head")
        s.switchTo(s.main)
        #expect(s.wakeUp(wq) == 2, "non-exclusive entries: wake_up wakes all")
        #expect(wq.entries.isEmpty && a.state == .runnable && b.state == .runnable)
        s.switchTo(a)
        wq.prepareToWait(a)
        s.wakeUp(wq)  // while a's condition runs
        #expect(!s.sleep(on: wq), "taken off the queue: recheck instead of sleeping")
        #expect(a.state == .runnable)
        wq.prepareToWait(a)
        #expect(s.sleep(on: wq))
        s.finish(a, failed: true)
        #expect(wq.entries.isEmpty, "a task that ends leaves the queue")
    }

    @Test("a completion counts dones, wakes its first waiter, and complete_all stays")
    func completion() throws {
        let s = try scheduler()
        let x = s.makeCompletion(name: "c", site: .unknown)
        #expect(!x.isDone && !s.tryWaitForCompletion(x))
        s.complete(x)
        #expect(x.done == 1 && s.waitForCompletion(x) && x.done == 0)
        let a = try s.spawn(name: "a", cpu: nil, site: .unknown)
        let b = try s.spawn(name: "b", cpu: nil, site: .unknown)
        for t in [a, b] {
            s.switchTo(t)
            #expect(!s.waitForCompletion(x))
        }
        #expect(x.waiters.map(\.name) == ["a", "b"], "FIFO, as swait")
        s.switchTo(s.main)
        s.complete(x)
        #expect(a.state == .runnable && b.state == .blocked && x.waiters.map(\.name) == ["b"])
        #expect(s.tryWaitForCompletion(x), "main takes the done a was woken for")
        s.switchTo(a)
        #expect(!s.waitForCompletion(x) && x.waiters.map(\.name) == ["b", "a"], "a sleeps again, at the tail")
        s.switchTo(s.main)
        s.completeAll(x)
        #expect(x.done == Completion.all && x.waiters.isEmpty && a.state == .runnable && b.state == .runnable)
        s.complete(x)
        #expect(x.done == Completion.all, "complete does not wrap UINT_MAX")
        #expect(s.waitForCompletion(x) && x.done == Completion.all)
    }
}
