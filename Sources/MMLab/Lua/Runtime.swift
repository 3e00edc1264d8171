#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim
import MMCore

/// Counts of handle drops by how they happened (`kernel.debug.stats()`).
struct DropStats {
    var byDrop = 0, byClose = 0, byGC = 0

    mutating func count(_ reason: DropReason) {
        switch reason {
        case .drop: byDrop += 1
        case .close: byClose += 1
        case .gc: byGC += 1
        }
    }
}

/// How the machine's callbacks (collector, pressure, contention, Lua
/// shrinkers, color_adjust) reach the runtime. Not a weak reference: one
/// gives the runtime a side table, and every retain of it then takes
/// Swift's slow path.
final class RuntimeLink {
    // SAFETY: the runtime clears the link in its deinit, so a runtime read
    // through it is alive.
    unowned(unsafe) private var target: Runtime?

    init(_ runtime: Runtime) { target = runtime }

    var runtime: Runtime? { target }
    func clear() { target = nil }
}

/// The engine's core: one Lua state, its machine, and what the bindings
/// share. The state's extra space points here; `close` ends the state
/// before the runtime goes.
final class Runtime {
    let L: OpaquePointer
    /// What the C side shares with us through every thread's extra space.
    let state: UnsafeMutablePointer<mmlab_State>
    let configuration: Engine.Configuration
    let sites = SiteTable()
    // The fields every binding call reads or bumps are changed only in
    // place, never across a call out: no dynamic exclusivity check.
    @exclusivity(unchecked) var stats = DropStats()
    /// The live borrowers and views of each lender handle, for the
    /// "dropped while borrowed" message (a borrower keeps where it was taken).
    var borrowers: [HandlePointer: [HandlePointer]] = [:]
    /// `__close`, `__tostring`, `__eq` and the methods' `__index`, as registry references.
    var sharedMetamethods: [(String, Int32)] = []
    /// Registry references of each handle type's metatable, by raw type.
    @exclusivity(unchecked) var metatables: [Int32]
    /// Each handle type's class, by raw type: static lets, so unretained.
    @exclusivity(unchecked) var classes: [Unmanaged<HandleClass>?]
    var errorMetatable: Int32 = LUA_NOREF
    /// The machine `kernel.boot` or first use created.
    private(set) var booted: Machine?
    private var closed = false
    /// The thread that last entered the machine: the collector runs on it.
    @exclusivity(unchecked) var activeL: OpaquePointer
    /// Where `test(name, fn)` reports, under `mmlab test`.
    var testCase: TestRunner.CaseRun?

    // The driver's state (Driver.swift).
    /// The Lua thread of each task with a body to run, by task id.
    var threads: [Int: TaskThread] = [:]
    /// What finished tasks returned (a packed table), by task id.
    var taskResults: [Int: Int32] = [:]
    /// How failed tasks failed, by task id.
    var taskFailures: [Int: TaskFailure] = [:]
    /// Tasks whose handles are gone: forgotten once finished.
    var detached: Set<Int> = []
    /// The step each waiting thread runs when it is woken (Wait.swift).
    var steps: [OpaquePointer: Step] = [:]
    /// What runs after each protected call a binding asked for, by thread, innermost last.
    var finishers: [OpaquePointer: [PcallFinisher]] = [:]
    /// Each `value` per-CPU variable's values: a table by CPU, a registry
    /// reference per area.
    var perCpuValues: [ObjectIdentifier: Int32] = [:]
    /// The registry table of mmap hooks' driver files (Mm.swift).
    var files: Int32 = LUA_NOREF
    /// Each drm_mm's color_adjust function, a registry reference (DrmMm.swift).
    var colorAdjusters: [ObjectIdentifier: Int32] = [:]
    /// What `kernel.results.record` kept.
    let results = Results()
    /// `kernel.progress`'s line on a terminal.
    let progress = Progress()
    var driving = false
    /// The blocked tasks last warned of at exit.
    var blockedAtExit: String?
    var mainFinished = false
    var mainResultCount: Int32 = 0
    /// Guards the collector dropped, and tasks left blocked at exit: each a
    /// warning, and a failure under `--strict`.
    var strictViolations = 0
    /// Warnings are counted but not printed (the fuzzer's engines).
    var quiet = false
    /// The spans `kernel.trace.begin` opened, by task id, innermost last.
    var spans: [Int: [String]] = [:]
    /// `--trace-accesses`: per-CPU variable and page accesses go on the trace.
    @exclusivity(unchecked) var traceAccesses = false
    /// Who makes the scheduler's choices (a controlled run), set before the machine boots.
    var controller: ScheduleController?

    init(configuration: Engine.Configuration) throws(EngineError) {
        guard let L = luaL_newstate() else { throw EngineError(message: "cannot create a Lua state: out of memory") }
        self.L = L
        activeL = L
        self.configuration = configuration
        state = .allocate(capacity: 1)
        state.initialize(to: mmlab_State())
        state.pointee.budget = Int32.max
        state.pointee.preempt = Runtime.preempt
        state.pointee.resumed = Runtime.resumed
        state.pointee.finished = Runtime.finishPcall
        state.pointee.release = { object in
            // SAFETY: a handle's `object` holds the retain pushHandle took; __gc cleared it first.
            Unmanaged<AnyObject>.fromOpaque(object.unsafelyUnwrapped).release()
        }
        // The limits' allocator, counting from what the state holds already.
        mmlab_useallocator(L, state)
        let limits = configuration.limits
        state.pointee.max_heap = limits.maxMemory ?? 0
        traceAccesses = configuration.traceAccesses && configuration.tracePath != nil
        let interval = configuration.quantum ?? Int(MMLAB_HOOK_INTERVAL)
        state.pointee.hook_interval = Int32(clamping: interval)
        state.pointee.max_hook_ticks = limits.maxInstructions.map { max(1, ($0 + UInt64(interval) - 1) / UInt64(interval)) } ?? 0
        if let timeout = limits.timeout {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            state.pointee.deadline_ns = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec) + UInt64(timeout * 1e9)
        }
        let count = Int((HandleType.allCases.map(\.rawValue).max() ?? 0) + 1)
        metatables = Array(repeating: LUA_NOREF, count: count)
        classes = Array(repeating: nil, count: count)
        state.pointee.runtime = Unmanaged.passUnretained(self).toOpaque()
        mmlab_setstate(L, state)
        let lua = Lua(L)
        if configuration.ignoreEnvironment {
            lua.push(true)
            lua_setfield(L, mmlab_registryindex(), "LUA_NOENV")
        }
        // Raises only when the host is out of memory, which ends us anyway.
        luaL_openlibs(L)
        mmlab_openhooks(L)
        mmlab_guardupvalues(L)
        mmlab_opencoroutines(L)
        mmlab_opennext(L)
        mmlab_openos(L)
        mmlab_watchcollections(L)
        _ = mmlab_checkcallsite(L)
        _ = mmlab_opensitecache(state)
        _ = mmlab_checkmethodcalls(L)
        mmlab_gcgenerational(L)  // as lua.c runs its scripts
        mmlab_synchook(L, L)
        if configuration.warnings { lua_warning(L, "@on", 0) }
        openKernel(lua)
    }

    /// What outlives the runtime uses this to reach it.
    private(set) lazy var link = RuntimeLink(self)

    deinit {
        link.clear()
        close()
        mmlab_closesitecache(state)
        state.deallocate()
    }

    /// Closes the state: every live handle is dropped by its `__gc`.
    func close() {
        guard !closed else { return }
        closed = true
        // The finalizers run whatever stopped the script.
        state.pointee.stopped = nil
        state.pointee.max_hook_ticks = 0
        state.pointee.deadline_ns = 0
        state.pointee.max_heap = 0
        lua_close(L)
        // Steps of tasks left waiting hold what they wait on (and this runtime).
        steps = [:]
        finishers = [:]
    }

    /// The machine, booted with the configured defaults on first use.
    func machine() throws(KernelError) -> Machine {
        if let booted { return booted }
        return try boot(configuration.machine)
    }

    /// `kernel.reboot`: the old machine goes, once nothing of it is alive
    /// (the collector runs first), and a new one boots. Only the main chunk
    /// reboots, with every other task finished.
    func reboot(_ config: MachineConfig) throws(KernelError) {
        guard let old = booted else {
            try boot(config)
            return
        }
        let scheduler = old.scheduler
        guard scheduler.current === scheduler.main else {
            throw KernelError(.EBUSY, "kernel.reboot in task '\(scheduler.current.name)': only the main chunk reboots the machine")
        }
        let running = scheduler.unfinished.filter { $0 !== scheduler.main }
        guard running.isEmpty else {
            throw KernelError(.EBUSY, "kernel.reboot with tasks still running: " + running.map { "'\($0.name)' (\($0.state.rawValue))" }.joined(separator: ", "))
        }
        _ = mmlab_gc(activeL, LUA_GCCOLLECT, 0)
        // Deferred work runs between tasks, never inside one (it may take locks main holds).
        guard scheduler.pendingWork.isEmpty else {
            throw KernelError(.EBUSY, "kernel.reboot with deferred work pending (\(scheduler.pendingWork.joined(separator: ", "))): let it run first (kernel.sched.yield())")
        }
        let alive = old.accounting.leaks()
        let handles = state.pointee.live_handles
        if alive.isEmpty, handles > 0 {
            // Locks, tasks, per-CPU variables: handles the accounting does not list, bound to the old scheduler.
            throw KernelError(.EBUSY, "kernel.reboot with \(handles) handle\(handles == 1 ? "" : "s") of the old machine still reachable (locks, tasks, kernel.current() and the like): drop them or let them go out of scope")
        }
        guard alive.isEmpty else {
            let shown = alive.prefix(5).map { "\($0) created at \(sites.name($0.site))" }.joined(separator: ", ")
            throw KernelError(.EBUSY, "kernel.reboot with \(alive.count) native object\(alive.count == 1 ? "" : "s") of the old machine alive: \(shown)\(alive.count > 5 ? ", ..." : "")")
        }
        for ref in taskResults.values { luaL_unref(L, mmlab_registryindex(), ref) }
        for failure in taskFailures.values { luaL_unref(L, mmlab_registryindex(), failure.error) }
        taskResults = [:]
        taskFailures = [:]
        detached = []
        booted = nil
        try boot(config)
    }

    /// `kernel.boot`: EBUSY once a machine is in use.
    @discardableResult
    func boot(_ config: MachineConfig) throws(KernelError) -> Machine {
        guard booted == nil else { throw KernelError(.EBUSY, "the machine is already booted and in use") }
        let machine = try Machine(config, sites: sites)
        // Native memory reaches the collector: pressure steps it as pages are
        // allocated, and an allocation that would fail runs it in full first.
        machine.pageAllocator.collector = { [link] in
            guard let self = link.runtime, !self.closed else { return }
            _ = mmlab_gc(self.activeL, LUA_GCCOLLECT, 0)
        }
        machine.pageAllocator.pressure = { [link] pages in
            guard let self = link.runtime, !self.closed else { return }
            _ = mmlab_gc(self.activeL, LUA_GCSTEP, Int32(clamping: pages * PAGE_SIZE / 1024))
        }
        machine.pageAllocator.onLog = { [link] line in link.runtime?.kernelLog(line) }
        machine.pageAllocator.onWarning = { [link] message in link.runtime?.warn("WARNING: " + message) }
        machine.pageAllocator.spawnKswapd = { [link, unowned machine] in link.runtime?.startKswapd(machine) }
        machine.scheduler.onKill = { [link, unowned machine] task in
            guard task === machine.scheduler.current, let state = link.runtime?.state else { return }
            // Its next binding call or quantum is a scheduling point, which ends it.
            state.pointee.budget = 1
            state.pointee.contended = 1
            state.pointee.hooks_dirty = 1
        }
        booted = machine
        startTraceIfAsked(machine)
        if driving { machine.scheduler.adoptMain() }
        state.pointee.budget = 1
        if let controller { control(machine.scheduler, with: controller) }
        machine.scheduler.onContention = { [link] contended in
            guard let state = link.runtime?.state else { return }
            // Another task became runnable: the running one gets a short budget.
            if contended, state.pointee.budget > 8 { state.pointee.budget = 8 }
            if (state.pointee.contended != 0) != contended, link.runtime?.controller == nil {
                state.pointee.contended = contended ? 1 : 0
                state.pointee.hooks_dirty = 1  // the count hook comes and goes with contention
            }
        }
        return machine
    }

    /// A controlled run: every binding call and quantum is a scheduling
    /// point, whether or not another task could run, so that each task's
    /// points are numbered by its own path (Schedule.swift).
    private func control(_ scheduler: Scheduler, with controller: ScheduleController) {
        scheduler.controller = controller
        scheduler.whereNow = { [link] in
            guard let self = link.runtime else { return "?" }
            return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { buffer in
                guard let base = buffer.baseAddress else { return "?" }
                // SAFETY: mmlab_where writes at most 256 bytes, NUL-terminated, into the buffer.
                mmlab_where(self.activeL, base, 256)
                return String(cString: base)
            }
        }
        state.pointee.contended = 1
        state.pointee.hooks_dirty = 1
    }

    /// Registers a handle type's metatable: `__name`, `__index` (its
    /// methods), `__gc`, `__close`, `__tostring`, `__eq`.
    func register(_ cls: HandleClass, in lua: Lua) {
        // The metamethods every type shares are made once (each binding is
        // three allocations, at every start-up).
        if sharedMetamethods.isEmpty {
            for (name, fn) in [("__close", HandleMetamethods.close), ("__tostring", HandleMetamethods.tostring),
                               ("__eq", HandleMetamethods.eq), ("__index", MissingMethod.index)] {
                lua.pushBinding(fn, name: name)
                sharedMetamethods.append((name, luaL_ref(L, mmlab_registryindex())))
            }
        }
        lua.newTable(hash: 5)
        lua.push(cls.type.name)
        lua.setField(-2, "__name")
        lua.newTable(hash: Int32(cls.methods.count))
        for (name, fn) in cls.methods {
            lua.pushBinding(fn, name: name)
            lua.setField(-2, name)
        }
        // A miss in the methods is an error naming the type (MissingMethod).
        lua.newTable(hash: 2)
        lua.push(Int(cls.type.rawValue))
        lua.setField(-2, "type")
        for (name, ref) in sharedMetamethods where name == "__index" {
            lua_rawgeti(L, mmlab_registryindex(), lua_Integer(ref))
            lua.setField(-2, "__index")
        }
        lua_setmetatable(L, -2)
        lua.setField(-2, "__index")
        mmlab_pushgc(L, HandleMetamethods.gc)
        lua.setField(-2, "__gc")
        for (name, ref) in sharedMetamethods where name != "__index" {
            lua_rawgeti(L, mmlab_registryindex(), lua_Integer(ref))
            lua.setField(-2, name)
        }
        metatables[Int(cls.type.rawValue)] = luaL_ref(L, mmlab_registryindex())
        classes[Int(cls.type.rawValue)] = Unmanaged.passUnretained(cls)
    }

    /// Names the call site `pc` at stack `level` that `Lua.site` found
    /// uncached (no `pc`: the first Lua frame's line, the slow way), and
    /// caches it.
    func nameSite(_ lua: Lua, pc: UnsafeRawPointer?, level: Int32) -> Site {
        guard let pc else { return lua.slowSite() }
        var ar = lua_Debug()
        guard lua_getstack(lua.L, level, &ar) != 0, lua_getinfo(lua.L, "Sl", &ar) != 0, ar.currentline > 0 else {
            return .unknown
        }
        let site = sites.intern("\(Lua.shortSource(&ar)):\(ar.currentline)")
        mmlab_cachesite(state, pc, site.id)
        return site
    }

    /// Pushes a `kernel.Error` for `error`, saying where it was raised.
    func pushError(_ lua: Lua, _ error: KernelError) {
        lua.newTable(hash: 6)
        if let errno = error.errno {
            lua.set("errno", errno.name)
            lua.set("code", Int(errno.rawValue))
        }
        lua.set("bug", error.isBug)
        lua.set("message", error.message)
        if let position = lua.position() { lua.set("where", "\(position.shortSource):\(position.line):") }
        if let task = booted?.scheduler.current { lua.set("task", task.name) }
        lua_rawgeti(lua.L, mmlab_registryindex(), lua_Integer(errorMetatable))
        lua_setmetatable(lua.L, -2)
    }
}

extension Lua {
    /// The machine, booted on first use; the collector runs on this thread
    /// if an allocation needs it.
    func machine() throws(KernelError) -> Machine {
        try withRuntime { (runtime) throws(KernelError) -> Machine in
            runtime.activeL = L
            return try runtime.machine()
        }
    }

    /// Fills `ar` for the first Lua frame above the running C function.
    func luaFrame(_ ar: inout lua_Debug) -> Bool {
        var level: Int32 = 1
        while lua_getstack(L, level, &ar) != 0 {
            lua_getinfo(L, "Sl", &ar)
            if ar.currentline > 0 { return true }
            level += 1
        }
        return false
    }

    /// The position of the first Lua frame, asked of Lua (where
    /// `mmlab_callsite` cannot tell).
    func slowSite() -> Site {
        var ar = lua_Debug()
        guard luaFrame(&ar) else { return .unknown }
        return runtime.sites.intern("\(Lua.shortSource(&ar)):\(ar.currentline)")
    }

    /// `exp.lua`, `[string "..."]`: the chunk name as messages show it.
    static func shortSource(_ ar: inout lua_Debug) -> String {
        withUnsafePointer(to: &ar.short_src) {
            $0.withMemoryRebound(to: CChar.self, capacity: Int(LUA_IDSIZE)) { String(cString: $0) }
        }
    }

    /// Where the running Lua code is: `("exp.lua", 12)`.
    func position() -> (shortSource: String, line: Int32)? {
        var ar = lua_Debug()
        guard luaFrame(&ar) else { return nil }
        return (Lua.shortSource(&ar), ar.currentline)
    }
}
