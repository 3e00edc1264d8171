#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim
import MMCore

/// A task's Lua thread: its body runs there.
struct TaskThread {
    let L: OpaquePointer
    /// Keeps the thread alive (a registry reference).
    let ref: Int32
    /// Values on its stack for its first resume.
    var arguments: Int32
}

/// How a task failed: the message and traceback, and the error value.
struct TaskFailure {
    let message: String
    let traceback: String
    /// The error value (a registry reference).
    let error: Int32
}

/// The driver: every chunk runs as task `main`, a coroutine, and the
/// scheduler picks which task resumes next. Only this loop resumes task
/// threads; a binding that must wait returns MMLAB_WAIT (Wait.swift), its
/// trampoline yields, and its step runs again when the task resumes.
extension Runtime {
    /// The scheduler's preemption point, called from C (a binding call at
    /// the end of its budget, or the instruction-count hook).
    static let preempt: @convention(c) (OpaquePointer?, Int32) -> Int32 = { L, hook in
        let runtime = Lua(L).runtime
        guard let scheduler = runtime.booted?.scheduler else {
            runtime.state.pointee.budget = Int32.max
            return 0
        }
        let yes = scheduler.preemptionPoint(hook: hook != 0)
        runtime.state.pointee.budget = Int32(scheduler.nextBudget())
        return yes ? 1 : 0
    }

    /// Whether the running code may block: it runs in the current task's
    /// own thread, or in script coroutines inside it, where a yield reaches
    /// the driver (coroutines.c).
    func canBlock(_ lua: Lua) -> Bool {
        mmlab_canwait(lua.L) != 0
    }

    /// The bug for waiting where the Lua stack cannot yield.
    func cannotBlock(_ what: String) -> KernelError {
        .bug("\(what) would wait here, but this code cannot yield to the scheduler (it runs inside a metamethod, a callback from native code, or a coroutine resumed outside a task)")
    }

    /// Runs the function below `arguments` values on top of L's stack as
    /// task `main`, running other tasks while main waits or is preempted;
    /// leaves `results` results (all with LUA_MULTRET).
    func runAsMain(arguments: Int32, results: Int32) throws(EngineError) {
        guard !driving else { throw EngineError(message: "a chunk is running already") }
        driving = true
        defer { driving = false }
        guard let co = lua_newthread(L) else { throw EngineError(message: "cannot create a thread") }
        let ref = luaL_ref(L, mmlab_registryindex())
        lua_pushcclosure(co, mmlab_taskbody, 0)  // below what it calls
        lua_xmove(L, co, arguments + 1)
        mmlab_marktask(co)
        threads[1] = TaskThread(L: co, ref: ref, arguments: arguments + 1)  // the function is the body's argument
        mainFinished = false
        booted?.scheduler.restartMain()
        defer {
            threads[1] = nil
            luaL_unref(L, mmlab_registryindex(), ref)
        }
        if let report = schedule(until: { self.mainFinished }) {
            throw EngineError(message: "EDEADLK: \(report)", kernelError: KernelError(.EDEADLK, report))
        }
        if let failure = taskFailures.removeValue(forKey: 1) {
            throw engineError(failure)
        }
        var n = mainResultCount
        lua_xmove(co, L, n)
        if results != LUA_MULTRET {
            while n < results { lua_pushnil(L); n += 1 }
            if n > results { lua_settop(L, results - n - 1) }
        }
    }

    /// Runs every task to its end (what a program does before it exits).
    /// Tasks left blocked are a warning; the first failure nobody joined is
    /// the error.
    func finishTasks() throws(EngineError) {
        guard let scheduler = booted?.scheduler, !driving else { return }
        driving = true
        defer { driving = false }
        if let report = schedule(until: { scheduler.unfinished.allSatisfy { $0 === scheduler.main } }),
           report != blockedAtExit {  // said once: the program's end asks again
            blockedAtExit = report
            warn("tasks still blocked at exit:\n" + report.split(separator: "\n").dropFirst().joined(separator: "\n"))
        }
        if let failed = scheduler.tasks.first(where: { $0.state == .failed && !$0.failureReported }),
           let failure = taskFailures[failed.id] {
            failed.failureReported = true
            let error = engineError(failure)
            // A kernel.Error names its task in its message already.
            let message = error.kernelError == nil ? "task '\(failed.name)': \(error.message)" : error.message
            throw EngineError(message: message, traceback: error.traceback, kernelError: error.kernelError)
        }
    }

    /// Resumes tasks until `done()`. Returns the deadlock report when
    /// nothing can run and main is not waiting (main's wait fails instead).
    func schedule(until done: () -> Bool) -> String? {
        while !done() {
            guard let scheduler = booted?.scheduler else {
                resume(id: 1)
                booted?.scheduler.runWork()  // main booted the machine and yielded: the workqueue runs, as between tasks
                continue
            }
            guard let task = scheduler.pickNext() else {
                let main = scheduler.main
                if main.state == .blocked {
                    scheduler.wake(main, error: KernelError(.EDEADLK, scheduler.deadlockReport()))
                    continue
                }
                return scheduler.unfinished.isEmpty || done() ? nil : scheduler.deadlockReport()
            }
            resume(id: task.id)
            scheduler.runWork()  // the workqueue runs between tasks
            sampleTrace()
        }
        return nil
    }

    /// Resumes one task's thread and records what became of it.
    private func resume(id: Int) {
        guard let thread = threads[id] else {
            if let task = booted?.scheduler.current, task.id == id { booted?.scheduler.finish(task, failed: false) }
            return
        }
        if let task = booted?.scheduler.current, task.id == id, task.oomKilled {
            return kill(task, thread)
        }
        state.pointee.current = thread.L
        if let scheduler = booted?.scheduler { state.pointee.budget = Int32(scheduler.nextBudget()) }
        activeL = thread.L
        var nres: Int32 = 0
        let status = mmlab_resume(thread.L, nil, thread.arguments, &nres)
        threads[id]?.arguments = 0
        state.pointee.current = nil
        activeL = L
        let scheduler = booted?.scheduler
        let task = scheduler?.current
        switch status {
        case LUA_YIELD:
            lua_settop(thread.L, -nres - 1)  // what a plain coroutine.yield passed
            if state.pointee.exiting != 0 { exit(closing: thread) }
            scheduler?.afterYield()
        case LUA_OK:
            if id == 1 {
                mainResultCount = nres
                mainFinished = true
                if let scheduler { scheduler.finish(scheduler.main, failed: false) }
            } else if let task {
                finish(task, thread, results: nres)
            }
        default:
            fail(id: id, task: task, thread)
        }
    }

    /// `os.exit(code, true)`: the task's to-be-closed variables close, as
    /// lua.c's lua_close closes the main chunk's, then the state, then the
    /// process ends.
    private func exit(closing thread: TaskThread) -> Never {
        let status = state.pointee.exit_status
        fflush(stdout)
        _ = lua_resetthread(thread.L)
        close()
        Glibc.exit(status)
    }

    /// A task returned: its results are kept for `join`, unless it ended
    /// holding locks or with preemption off, which is its failure.
    private func finish(_ task: Task, _ thread: TaskThread, results n: Int32) {
        let expected = task.atomic ? 1 : 0
        if !task.held.isEmpty || task.preemptCount != expected {
            let what = task.held.isEmpty ? "with preempt_count \(task.preemptCount)"
                : "holding " + task.held.map { "\($0.lock) (locked at \(sites.name($0.site)))" }.joined(separator: ", ")
            lua_settop(thread.L, 0)
            pushError(Lua(thread.L), .bug("task '\(task.name)' exited \(what)"))
            fail(id: task.id, task: task, thread)
            return
        }
        let lua = Lua(L)
        lua.newTable(array: n, hash: 1)
        let table = lua.top
        lua_xmove(thread.L, L, n)
        for i in stride(from: n, through: 1, by: -1) { lua_rawseti(L, table, lua_Integer(i)) }  // pops vi
        lua.set("n", Int(n))
        taskResults[task.id] = luaL_ref(L, mmlab_registryindex())
        release(thread, of: task.id)
        booted?.scheduler.finish(task, failed: false)
        forgetIfDetached(task)
    }

    /// A task raised: its message and traceback are kept for `join` and `run`.
    private func fail(id: Int, task: Task?, _ thread: TaskThread) {
        lua_pushcclosure(L, mmlab_taskerror, 0)
        lua_rawgeti(L, mmlab_registryindex(), lua_Integer(thread.ref))
        let lua = Lua(L)
        var failure = TaskFailure(message: "?", traceback: "", error: LUA_NOREF)
        if lua_pcallk(L, 1, 1, 0, 0, nil) == LUA_OK {
            lua.getField(-1, "message")
            let message = lua.string(at: -1) ?? "?"
            lua.getField(-2, "traceback")
            let traceback = lua.string(at: -1) ?? ""
            lua.pop(2)
            lua.getField(-1, "error")
            failure = TaskFailure(message: message, traceback: traceback, error: luaL_ref(L, mmlab_registryindex()))
        }
        lua.pop()
        taskFailures[id] = failure
        // Unwinding closes what the task had open (its guards, <close>
        // handles), as a pcall would; a dead coroutine would keep them.
        closeParked(thread.L)
        _ = lua_resetthread(thread.L)
        forgetWaits(of: thread.L)
        release(thread, of: id)
        if id == 1 { mainFinished = true }
        if let scheduler = booted?.scheduler, let task { scheduler.finish(task, failed: true) }
        if let task { forgetIfDetached(task) }
    }

    /// The OOM killer's victim reached a scheduling point: its thread ends
    /// as an error would end it (what it had open closes), and the task
    /// is `killed`, which `join` raises. It is no failure of the run.
    private func kill(_ task: Task, _ thread: TaskThread) {
        closeParked(thread.L)
        _ = lua_resetthread(thread.L)
        forgetWaits(of: thread.L)
        release(thread, of: task.id)
        booted?.scheduler.finish(task, failed: false, killed: true)
        forgetIfDetached(task)
    }

    /// The script coroutines a task ended waiting in: closed innermost
    /// first, as unwinding would, and what they waited for forgotten.
    private func closeParked(_ T: OpaquePointer) {
        let n = mmlab_parked(L, T)
        for i in stride(from: n, through: 1, by: -1) {
            guard let co = lua_tothread(L, -n - 1 + i) else { continue }
            forgetWaits(of: co)
            _ = lua_resetthread(co)
        }
        lua_settop(L, -n - 1)
    }

    private func release(_ thread: TaskThread, of id: Int) {
        guard id != 1 else { return }  // runAsMain releases main's
        threads[id] = nil
        luaL_unref(L, mmlab_registryindex(), thread.ref)
    }

    /// A task nobody holds a handle to is forgotten once it has finished
    /// (a failure stays until it is reported).
    func forgetIfDetached(_ task: Task) {
        guard detached.contains(task.id), task.isFinished else { return }
        if let ref = taskResults.removeValue(forKey: task.id) { luaL_unref(L, mmlab_registryindex(), ref) }
        if task.state != .failed || task.failureReported {
            detached.remove(task.id)
            if let failure = taskFailures.removeValue(forKey: task.id) { luaL_unref(L, mmlab_registryindex(), failure.error) }
            booted?.scheduler.reap(task)
        }
    }

    /// The EngineError for a failure.
    func engineError(_ failure: TaskFailure) -> EngineError {
        lua_rawgeti(L, mmlab_registryindex(), lua_Integer(failure.error))
        let kernelError = self.kernelError(Lua(L), at: -1)
        lua_settop(L, -2)
        return EngineError(message: failure.message, traceback: failure.traceback, kernelError: kernelError)
    }

    /// Pushes a failed task's error for `join` or `run` to raise: a
    /// kernel.Error as it was (it names its task), anything else as a
    /// message naming the task.
    func pushFailure(_ lua: Lua, _ task: Task) {
        task.failureReported = true
        if task.state == .killed {
            lua.push("task '\(task.name)' was killed by the OOM killer")
            return
        }
        guard let failure = taskFailures[task.id] else {
            lua.push("task '\(task.name)' failed")
            return
        }
        lua_rawgeti(lua.L, mmlab_registryindex(), lua_Integer(failure.error))
        if kernelError(lua, at: -1) == nil {
            lua.pop()
            lua.push("task '\(task.name)': \(failure.message)")
        }
        forgetIfDetached(task)
    }

    /// A warning on stderr: it counts against `--strict`.
    /// The collector dropping a guard still held is a warning (and a
    /// `--strict` failure): guards are meant to be scoped.
    func warnIfCollected(_ guard_: Guard, _ context: DropContext) {
        if context.reason == .gc, !guard_.isReleased { warn(guard_.collectorWarning) }
    }

    /// A line of the kernel's log (the OOM killer's report) on stderr.
    func kernelLog(_ line: String) {
        guard !quiet else { return }
        fflush(stdout)
        fputs(line + "\n", stderr)
    }

    /// Starts `kswapd0`, the machine's reclaim thread: a kernel thread
    /// whose body is the `kswapd` binding's loop.
    func startKswapd(_ machine: Machine) {
        let lua = Lua(activeL)
        do {
            let task = try machine.scheduler.spawnKernelThread(name: "kswapd0", site: .unknown)
            machine.pageAllocator.kswapd.task = task
            lua.pushBinding(MemoryBindings.kswapd, name: "kswapd")
            defer { lua.pop() }
            try startThread(lua, for: task, function: lua.top)
            detached.insert(task.id)
        } catch {
            warn("kswapd0 could not start: \(error.message)")
        }
    }

    func warn(_ message: String) {
        strictViolations += 1
        guard !quiet else { return }
        fflush(stdout)
        fputs("mmlab: warning: \(message)\n", stderr)
    }
}
