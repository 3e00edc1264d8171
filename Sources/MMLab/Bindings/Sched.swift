import CLua
import LuaShim
import MMCore

/// `kernel.sched`, `kernel.current` and `kernel.sync` (MMCore/Sched).
extension Runtime {
    func openSched(_ lua: Lua) {
        lua.newTable()
        lua.setFunctions([
            ("spawn", SchedBindings.spawn),
            ("run", SchedBindings.run),
            ("tasks", SchedBindings.tasks),
            ("yield", SchedBindings.yield),
            ("cond_resched", SchedBindings.condResched),
            ("nr_cpu_ids", SchedBindings.nrCpuIds),
            ("smp_processor_id", SchedBindings.smpProcessorId),
            ("raw_smp_processor_id", SchedBindings.rawSmpProcessorId),
            ("on_each_cpu", SchedBindings.onEachCpu),
            ("preempt_disable", SchedBindings.preemptDisable),
            ("preempt_enable", SchedBindings.preemptEnable),
            ("preempt_count", SchedBindings.preemptCount),
            ("WaitQueue", WaitBindings.waitQueue),
            ("Completion", WaitBindings.completion),
        ])
        lua.setField(-2, "sched")
        lua.setFunctions([("current", SchedBindings.current)])
        lua.newTable()
        lua.setFunctions([("SpinLock", SchedBindings.spinLock), ("Mutex", SchedBindings.mutex)])
        lua.setField(-2, "sync")
    }

    /// Gives `task` a thread that will call the function at `function`
    /// with the `arguments` values above it.
    func startThread(_ lua: Lua, for task: Task, function: Int32, arguments: [Int32] = []) throws(KernelError) {
        guard let co = lua_newthread(lua.L) else { throw KernelError(.ENOMEM, "no memory for a task's thread") }
        mmlab_inherithook(lua.L, co)
        let ref = luaL_ref(lua.L, mmlab_registryindex())
        lua_pushcclosure(lua.L, mmlab_taskbody, 0)
        lua_pushvalue(lua.L, function)
        for argument in arguments { lua_pushvalue(lua.L, argument) }
        lua_xmove(lua.L, co, Int32(arguments.count) + 2)
        mmlab_marktask(co)
        threads[task.id] = TaskThread(L: co, ref: ref, arguments: Int32(arguments.count) + 1)  // the function is the body's argument
    }
}

extension Lua {
    /// The machine's scheduler.
    func scheduler() throws(KernelError) -> Scheduler { try machine().scheduler }
}

enum SchedBindings {
    /// `spawn(fn, {name=, cpu=, mm=})` → Task: runnable now, on `cpu`
    /// (bound) or the least busy CPU; with `mm` (an MmWithUser), using that
    /// address space, holding an `mm_users` reference until it exits.
    static let spawn: Binding = { L in
        bind(L) { lua in
            try lua.checkFunction(1)
            var name: String?, cpu: Int?, mm: MmStruct?, adj = 0
            if !lua.isNoneOrNil(2) {
                let o = try lua.options(2, arg: 2, ["name", "cpu", "mm", "oom_score_adj"])
                name = try o.string("name")
                cpu = try o.integer("cpu", default: nil)
                adj = try o.integer("oom_score_adj", default: 0) ?? 0
                let at = o.index("mm")
                if !lua.isNoneOrNil(at) {
                    guard let h = mmlab_tohandle(L, at),
                          h.pointee.type == HandleType.mmWithUser.rawValue || h.pointee.type == HandleType.mmWithUserAsync.rawValue else {
                        throw o.error("mm", "MmWithUser", at: at)
                    }
                    mm = try lua.mmReference(at, users: true).mm
                }
            }
            let runtime = lua.runtime
            let task = try lua.scheduler().spawn(name: name, cpu: cpu, mm: mm, oomScoreAdj: adj, site: lua.site())
            try runtime.startThread(lua, for: task, function: 1)
            lua.pushHandle(task, .task)
            return 1
        }
    }

    /// `run()`: waits until every other task is done and the queued work
    /// has run; re-raises the first
    /// failure nobody joined; EDEADLK when every task is blocked.
    static let run: Binding = { L in
        bind(L) { lua in
            let runtime = lua.runtime
            let scheduler = try lua.scheduler()
            let me = scheduler.current
            try scheduler.mightSleep("kernel.sched.run")
            return try lua.blocking { lua in
                if let error = me.takeWakeError() { throw error }
                guard scheduler.tasks.contains(where: { $0 !== me && !$0.isSettled }) else {
                    // Nothing to wait for but the work queued (mmput_async):
                    // it is done when run returns, as after flush_scheduled_work.
                    scheduler.runWork()
                    if let failed = scheduler.tasks.first(where: { $0 !== me && $0.state == .failed && !$0.failureReported }) {
                        runtime.pushFailure(lua, failed)
                        return MMLAB_RAISE
                    }
                    return 0
                }
                try lua.checkCanWait(true, "kernel.sched.run")
                scheduler.block(on: .all)
                return nil
            }
        }
    }

    /// `tasks()` → a row per task not reaped, in spawn order: `{pid=,
    /// name=, state=, cpu=, kthread=, oom_score=, oom_score_adj=}`, as ps
    /// shows them (kswapd0 among them once started).
    static let tasks: Binding = { L in
        bind(L) { lua in
            let machine = try lua.machine()
            let tasks = machine.scheduler.tasks
            lua.newTable(array: Int32(tasks.count))
            for (i, task) in tasks.enumerated() {
                lua.newTable(hash: 7)
                lua.set("pid", task.id)
                lua.push(task.name)
                lua.setField(-2, "name")
                lua.push(task.state.rawValue)
                lua.setField(-2, "state")
                lua.set("cpu", task.cpu)
                lua_pushboolean(L, task.isKernelThread ? 1 : 0)
                lua.setField(-2, "kthread")
                lua.set("oom_score", machine.oomScore(task))
                lua.set("oom_score_adj", task.oomScoreAdj)
                lua_rawseti(L, -2, lua_Integer(i + 1))
            }
            return 1
        }
    }

    /// `yield()`: gives the CPU up (`schedule()`); a bug with preemption off.
    static let yield: Binding = { L in
        bind(L) { lua in
            let scheduler = try lua.scheduler()
            let me = scheduler.current
            guard me.preemptCount == 0 else {
                throw KernelError.bug("scheduling while atomic: task '\(me.name)' yielded with preempt_count \(me.preemptCount)")
            }
            guard lua.runtime.canBlock(lua) else { return 0 }
            scheduler.yieldCurrent()
            var yielded = false
            return try lua.blocking { _ in
                defer { yielded = true }
                return yielded ? 0 : nil  // back on a CPU: done
            }
        }
    }

    /// `cond_resched()`: a preemption point, where sleeping must be allowed.
    static let condResched: Binding = { L in
        bind(L) { lua in
            try lua.scheduler().mightSleep("cond_resched")
            lua.runtime.state.pointee.budget = 1  // the trampoline offers the point as this returns
            return 0
        }
    }

    static let nrCpuIds: Binding = { L in
        bind(L) { lua in
            lua.push(try lua.scheduler().cpuCount)
            return 1
        }
    }

    static let smpProcessorId: Binding = { L in
        bind(L) { lua in
            lua.push(try lua.scheduler().smpProcessorId())
            return 1
        }
    }

    static let rawSmpProcessorId: Binding = { L in
        bind(L) { lua in
            lua.push(try lua.scheduler().current.cpu)
            return 1
        }
    }

    static let preemptDisable: Binding = { L in
        bind(L) { lua in
            try lua.scheduler().preemptDisable()
            return 0
        }
    }

    static let preemptEnable: Binding = { L in
        bind(L) { lua in
            try lua.scheduler().preemptEnableByScript()
            return 0
        }
    }

    static let preemptCount: Binding = { L in
        bind(L) { lua in
            lua.push(try lua.scheduler().current.preemptCount)
            return 1
        }
    }

    /// `kernel.current()` → the running Task (borrowed).
    static let current: Binding = { L in
        bind(L) { lua in
            lua.pushHandle(try lua.scheduler().current, .task, state: .borrowed)
            return 1
        }
    }

    /// `on_each_cpu(fn, wait)`: `fn(cpu)` on every CPU, with preemption off
    /// as in interrupt context; with `wait`, returns when all are done
    /// (re-raising a failure).
    static let onEachCpu: Binding = { L in
        bind(L) { lua in
            try lua.checkFunction(1)
            let wait = lua.boolean(2)
            let runtime = lua.runtime
            let scheduler = try lua.scheduler()
            let me = scheduler.current
            if wait {
                try lua.checkCanWait(true, "on_each_cpu(fn, true)")
                try scheduler.mightSleep("on_each_cpu(fn, true)")
            }
            lua_settop(L, 2)
            let site = lua.site()
            var group: [Task] = []
            for cpu in 0..<scheduler.cpuCount {
                let task = try scheduler.spawnAtomic(name: "ipi/\(cpu)", cpu: cpu, site: site)
                lua.push(cpu)
                try runtime.startThread(lua, for: task, function: 1, arguments: [3])
                lua.pop()
                runtime.detached.insert(task.id)
                group.append(task)
            }
            guard wait else { return 0 }
            return try lua.blocking { lua in
                if let error = me.takeWakeError() { throw error }
                guard group.allSatisfy(\.isFinished) else {
                    scheduler.block(on: .tasks(group))
                    return nil
                }
                let failures = group.filter { $0.state == .failed }
                if let failed = failures.first {
                    for other in failures.dropFirst() { other.failureReported = true }  // one call, one error
                    runtime.pushFailure(lua, failed)
                    return MMLAB_RAISE
                }
                return 0
            }
        }
    }

    static let spinLock: Binding = { L in newLock(L, spin: true) }
    static let mutex: Binding = { L in newLock(L, spin: false) }

    /// `SpinLock(name, {class=})`, `Mutex(name, {class=})`: the name shows
    /// in reports; lockdep's class is the one named, or this call's line.
    private static func newLock(_ L: OpaquePointer?, spin: Bool) -> Int32 {
        bind(L) { lua in
            let name = try lua.string(1, default: nil)
            var className: String?
            if !lua.isNoneOrNil(2) {
                try lua.checkTable(2)
                try lua.checkFields(2, arg: 2, known: ["class"])
                className = try lua.stringField(2, "class", arg: 2)
            }
            let lock = try lua.scheduler().makeLock(spin: spin, name: name, site: lua.site(), className: className)
            lua.pushHandle(lock, spin ? .spinLock : .mutex)
            return 1
        }
    }
}

extension HandleClass {
    static let task = HandleClass(.task, methods: [
        ("join", TaskMethods.join),
        ("name", { L in bind(L) { lua in lua.push(try lua.object(1, .task, as: Task.self).name); return 1 } }),
        ("cpu", { L in bind(L) { lua in lua.push(try lua.object(1, .task, as: Task.self).cpu); return 1 } }),
        ("state", { L in bind(L) { lua in lua.push(try lua.object(1, .task, as: Task.self).state.rawValue); return 1 } }),
        ("id", { L in bind(L) { lua in lua.push(try lua.object(1, .task, as: Task.self).id); return 1 } }),
        ("pid", { L in bind(L) { lua in lua.push(try lua.object(1, .task, as: Task.self).id); return 1 } }),  // Rust's Task::pid
        ("mm", TaskMethods.mm),
        ("oom_score", { L in bind(L) { lua in lua.push(try lua.machine().oomScore(try lua.object(1, .task, as: Task.self))); return 1 } }),
        ("oom_score_adj", { L in bind(L) { lua in lua.push(try lua.object(1, .task, as: Task.self).oomScoreAdj); return 1 } }),
    ], drop: { lua, object, _ in
        // A spawned task goes on without its handle; what it leaves is
        // forgotten once it has finished.
        let task = unsafeDowncast(object, to: Task.self)
        lua.runtime.detached.insert(task.id)
        lua.runtime.forgetIfDetached(task)
    })

    static let lockMethods: [(String, Binding)] = [
        ("lock", { L in LockMethods.lock(L, nested: false) }),
        ("lock_nested", { L in LockMethods.lock(L, nested: true) }),
        ("try_lock", LockMethods.tryLock),
        ("stats", LockMethods.stats),
        ("name", { L in bind(L) { lua in lua.push(try LockMethods.lock(lua).description); return 1 } }),
    ]
    static let spinLock = HandleClass(.spinLock, methods: lockMethods)
    static let mutex = HandleClass(.mutex, methods: lockMethods)

    /// Dropping a guard unlocks. The collector dropping one is a warning
    /// (guards are meant to be scoped); it unlocks on the owner's behalf.
    static let spinLockGuard = HandleClass(.spinLockGuard, methods: [], drop: dropLockGuard)
    static let mutexGuard = HandleClass(.mutexGuard, methods: [], drop: dropLockGuard)

    private static func dropLockGuard(_ lua: Lua, _ object: AnyObject, _ context: DropContext) throws {
        let guard_ = unsafeDowncast(object, to: LockGuard.self)
        guard let scheduler = lua.runtime.booted?.scheduler else { return }
        lua.runtime.warnIfCollected(guard_, context)
        try scheduler.unlock(guard_, byCollector: context.reason == .gc)
    }
}

enum TaskMethods {
    /// `t:mm()` → its address space as a borrowed MmWithUser (no count
    /// taken, as `CurrentTask::mm()`), or nil: a kernel thread, or a task
    /// that has exited.
    static let mm: Binding = { L in
        bind(L) { lua in
            let mm = try lua.object(1, .task, as: Task.self).mm
            return lua.pushOptionalHandle(mm.map(MmWithUser.view), .mmWithUser, state: .borrowed, keepAlive: 1)
        }
    }

    /// `t:join()` → the task's results, or its error re-raised.
    static let join: Binding = { L in
        bind(L) { lua in
            let target = try lua.object(1, .task, as: Task.self)
            let runtime = lua.runtime
            let scheduler = try lua.scheduler()
            let me = scheduler.current
            guard target !== me else { throw KernelError(.EDEADLK, "task '\(me.name)' cannot join itself") }
            try scheduler.mightSleep("join of task '\(target.name)'")
            return try lua.blocking { lua in
                if let error = me.takeWakeError() { throw error }
                if target.state == .failed || target.state == .killed {
                    runtime.pushFailure(lua, target)
                    return MMLAB_RAISE
                }
                if target.state == .done {
                    guard let ref = runtime.taskResults[target.id] else { return 0 }
                    lua_settop(L, 0)
                    lua_rawgeti(L, mmlab_registryindex(), lua_Integer(ref))
                    lua.getField(1, "n")
                    let n = Int32(lua_tointegerx(L, -1, nil))
                    lua.pop()
                    if n > 0 { for i in 1...n { lua_rawgeti(L, 1, lua_Integer(i)) } }
                    return n
                }
                try lua.checkCanWait(true, "join")
                scheduler.block(on: .task(target))
                return nil
            }
        }
    }
}

enum LockMethods {
    static func lock(_ lua: Lua) throws -> Lock {
        lua.object(try lua.handle(1, .spinLock, or: .mutex), as: Lock.self)
    }

    static func pushGuard(_ lua: Lua, _ guard_: LockGuard) {
        lua.pushHandle(guard_, guard_.lock is SpinLock ? .spinLockGuard : .mutexGuard, lender: 1)
    }

    /// `l:lock()`, `l:lock_nested(subclass)` → guard; waits (spinning or
    /// sleeping) while another task holds it.
    static func lock(_ L: OpaquePointer?, nested: Bool) -> Int32 {
        bind(L) { lua in
            let lock = try lock(lua)
            let subclass = nested ? try lua.integer(2) : 0
            let scheduler = try lua.scheduler()
            let site = lua.site()
            try lua.checkCanWait(scheduler.wouldWait(for: lock), "\(lock).lock()")
            return try lua.blocking { lua in
                guard let guard_ = try scheduler.lock(lock, subclass: subclass, site: site) else { return nil }
                pushGuard(lua, guard_)
                return 1
            }
        }
    }

    /// `l:try_lock()` → guard or nil.
    static let tryLock: Binding = { L in
        bind(L) { lua in
            let lock = try lock(lua)
            guard let guard_ = try lua.scheduler().tryLock(lock, site: lua.site()) else { return 0 }
            pushGuard(lua, guard_)
            return 1
        }
    }

    /// `l:stats()` → `{acquisitions=, contentions=, waiters=, owner=}`.
    static let stats: Binding = { L in
        bind(L) { lua in
            let lock = try lock(lua)
            lua.newTable(hash: 4)
            lua.set("acquisitions", lock.acquisitions)
            lua.set("contentions", lock.contentions)
            lua.set("waiters", lock.waiterCount)
            if let owner = lock.owner { lua.set("owner", owner.name) }
            return 1
        }
    }
}

/// `kernel.sched.WaitQueue` and `kernel.sched.Completion` (MMCore/Sched/WaitQueue.swift, Completion.swift).
enum WaitBindings {
    /// `WaitQueue(name)` → a wait queue head (`init_waitqueue_head`).
    static let waitQueue: Binding = { L in
        bind(L) { lua in
            let name = try lua.string(1, default: nil)
            lua.pushHandle(try lua.scheduler().makeWaitQueue(name: name, site: lua.site()), .waitQueue)
            return 1
        }
    }

    /// `Completion(name)` → a completion (`init_completion`), not done.
    static let completion: Binding = { L in
        bind(L) { lua in
            let name = try lua.string(1, default: nil)
            lua.pushHandle(try lua.scheduler().makeCompletion(name: name, site: lua.site()), .completion)
            return 1
        }
    }

    /// `wq:wait_event(fn)`, as the macro: `might_sleep()`; if `fn()` is
    /// true, done; else loop { `prepare_to_wait_event`; if `fn()`, break;
    /// `schedule()` } and `finish_wait`. `fn` runs in the task, and may be
    /// preempted; an error in it leaves the queue and propagates.
    static let waitEvent: Binding = { L in
        bind(L) { lua in
            let wq = try lua.object(1, .waitQueue, as: WaitQueueHead.self)
            try lua.checkFunction(2)
            let scheduler = try lua.scheduler()
            try scheduler.mightSleep("wait_event on \(wq)")
            lua_settop(L, 2)
            let me = scheduler.current
            func check(_ lua: Lua, queued: Bool) -> Int32 {
                if queued { wq.prepareToWait(me) }
                lua_pushvalue(lua.L, 2)
                return lua.pcall(arguments: 0) { lua, status, first in
                    let holds = status == LUA_OK && lua_toboolean(lua.L, first) != 0
                    guard status == LUA_OK, !holds else {
                        wq.finishWait(me)
                        return status == LUA_OK ? 0 : MMLAB_RAISE
                    }
                    lua_settop(lua.L, 2)
                    guard queued else { return check(lua, queued: true) }
                    do { try lua.checkCanWait(true, "wait_event on \(wq)") } catch {
                        wq.finishWait(me)
                        throw error
                    }
                    // A wake-up while fn ran took the task off: recheck at once.
                    guard scheduler.sleep(on: wq) else { return check(lua, queued: true) }
                    return lua.wait { lua in
                        if let error = me.takeWakeError() { throw error }
                        return check(lua, queued: true)
                    }
                }
            }
            return check(lua, queued: false)
        }
    }

    /// `wq:wake_up()`, `wq:wake_up_all()`: the same for wait_event's sleepers.
    static let wakeUp: Binding = { L in
        bind(L) { lua in
            let wq = try lua.object(1, .waitQueue, as: WaitQueueHead.self)
            try lua.scheduler().wakeUp(wq)
            return 0
        }
    }

    /// `c:wait_for_completion()`: takes a done, sleeping until there is one.
    static let waitForCompletion: Binding = { L in
        bind(L) { lua in
            let x = try lua.object(1, .completion, as: Completion.self)
            let scheduler = try lua.scheduler()
            try scheduler.mightSleep("wait_for_completion on \(x)")
            let me = scheduler.current
            return try lua.blocking { lua in
                if let error = me.takeWakeError() { throw error }
                try lua.checkCanWait(!x.isDone, "wait_for_completion on \(x)")
                return scheduler.waitForCompletion(x) ? 0 : nil
            }
        }
    }

    /// A completion method that cannot wait: `body`'s result (if any) is pushed.
    static func completionMethod(_ L: OpaquePointer?, _ body: (Scheduler, Completion) -> Bool?) -> Int32 {
        bind(L) { lua in
            let x = try lua.object(1, .completion, as: Completion.self)
            guard let result = body(try lua.scheduler(), x) else { return 0 }
            lua.push(result)
            return 1
        }
    }
}

extension HandleClass {
    static let waitQueue = HandleClass(.waitQueue, methods: [
        ("wait_event", WaitBindings.waitEvent),
        ("wake_up", WaitBindings.wakeUp),
        ("wake_up_all", WaitBindings.wakeUp),
    ])
    static let completion = HandleClass(.completion, methods: [
        ("wait_for_completion", WaitBindings.waitForCompletion),
        ("complete", { L in WaitBindings.completionMethod(L) { s, x in s.complete(x); return nil } }),
        ("complete_all", { L in WaitBindings.completionMethod(L) { s, x in s.completeAll(x); return nil } }),
        ("try_wait_for_completion", { L in WaitBindings.completionMethod(L) { s, x in s.tryWaitForCompletion(x) } }),
        ("completion_done", { L in WaitBindings.completionMethod(L) { _, x in x.isDone } }),
    ])
}
