/// The machine's CPUs and its scheduler: which task runs where, and when
/// one is preempted, migrated, blocked or woken. Every choice comes from the
/// machine's seed, so a run replays exactly.
///
/// Each CPU has a task on it (or is idle) and a queue of runnable tasks
/// waiting for it. The engine runs one task at a time and, at each switch
/// point (a binding call, or every few hundred instructions), asks whether
/// to switch: time passes on another CPU, whose task resumes. A task whose
/// `preemptCount` is zero may also be preempted then: it leaves its CPU for
/// another task of that CPU's queue, and an unbound one may migrate. With
/// preemption off (a spinlock, a CpuGuard) it keeps its CPU, while other
/// CPUs go on.
///
/// # Invariants
///
/// A runnable task is either on a CPU (`running`) or on exactly one queue.
/// A task spinning on a spinlock stays on its CPU, blocked: nothing else
/// runs there until it has the lock. `runnable` counts runnable tasks.
public final class Scheduler {
    public let cpuCount: Int
    /// Every task, in spawn order; `main` first.
    public private(set) var tasks: [Task] = []
    public let main: Task
    /// The task the engine is running.
    /// Read on every binding call; changed only by the switch itself.
    @exclusivity(unchecked) public private(set) var current: Task
    /// Called when the running task or its CPU changes: the page allocator
    /// serves that CPU's lists.
    public var onSwitch: ((Task) -> Void)?
    /// Called with whether more than one task is runnable, when that
    /// changes: the engine skips switch points while nothing else could run.
    public var onContention: ((Bool) -> Void)?
    /// Called when the OOM killer kills a task: the engine makes sure its
    /// next scheduling point comes.
    public var onKill: ((Task) -> Void)?
    /// Runnable tasks, on CPUs or queued.
    public private(set) var runnable = 0 {
        didSet { if (oldValue > 1) != (runnable > 1) { onContention?(runnable > 1) } }
    }
    public let lockdep = Lockdep()

    private var queues: [[Task]]
    private var running: [Task?]
    private var keptCpu: Task?
    private var random: Random
    private var nextId = 2
    var lockCount = 0
    /// Where the model records an invariant it broke where it could not throw.
    var onBrokenInvariant: ((String) -> Void)?
    /// Wait queues and completions made, for their default names.
    var waitObjects = 0
    /// Where each waiting task asked for its lock, and with which subclass.
    var pending: [ObjectIdentifier: (site: Site, subclass: Int)] = [:]
    /// The trace being recorded, if any.
    var trace: TraceLog?
    /// Deferred work (`schedule_work` on the system workqueue), in order.
    private var work: [(name: String, run: () -> Void)] = []
    let sites: SiteTable
    let accounting: Accounting

    /// One in `migrationOdds` preemptions moves an unbound task to a CPU
    /// drawn from the seed.
    public var migrationOdds: UInt64 = 4
    /// Binding calls between switch points: drawn from 1 ... this.
    public var bindingBudget: UInt64 = 8

    /// Who makes the choices of a controlled run (Schedule.swift); nil:
    /// the machine's seed makes them.
    public var controller: ScheduleController?
    /// Where the running Lua code is (`x.lua:12`), for scheduling points.
    public var whereNow: (() -> String)?
    /// The controlled run's choices that differ from the default, in order:
    /// its schedule.
    public private(set) var decisions: [Decision] = []
    /// Scheduling points of the controlled run so far.
    public private(set) var points = 0
    /// Tasks spawned, `main` included.
    public var spawned: Int { nextId - 1 }
    /// What the controller picked at a preemption point, to run next.
    private var chosen: Task?

    init(cpus: Int, seed: UInt64, sites: SiteTable, accounting: Accounting) {
        self.sites = sites
        self.accounting = accounting
        cpuCount = cpus
        queues = Array(repeating: [], count: cpus)
        running = Array(repeating: nil, count: cpus)
        random = Random(seed: seed ^ 0x7363_6865_645f_7271)
        main = Task(id: 1, name: "main", cpu: 0, boundCpu: nil, site: .unknown)
        main.state = .done  // until the engine runs a chunk
        current = main
        tasks.append(main)
    }

    /// Tasks left blocked point at their locks and locks at their owners and
    /// waiters (a task's mm at its mmap lock, too): cycles the machine's end
    /// must cut, or it keeps them all.
    deinit {
        for task in tasks {
            task.held = []
            task.waiting = nil
            task.handoff = nil
            task.mm = nil
        }
    }

    // MARK: Tasks

    /// Spawns a runnable task, bound to `cpu` if given, else on the CPU with
    /// the fewest tasks. With `mm`, the task uses that address space and
    /// holds an `mm_users` reference to it until it exits.
    public func spawn(name: String?, cpu: Int?, mm: MmStruct? = nil, oomScoreAdj: Int = 0, site: Site) throws(KernelError) -> Task {
        if let cpu, !(0..<cpuCount).contains(cpu) {
            throw KernelError(.EINVAL, "cpu \(cpu) is not one of the machine's \(cpuCount) CPUs")
        }
        guard Machine.oomScoreAdjRange.contains(oomScoreAdj) else {
            throw KernelError(.EINVAL, "oom_score_adj \(oomScoreAdj) is outside -1000 ... 1000")
        }
        if let mm {
            guard mm.users > 0 else { throw .bug("spawn with \(mm), whose mm_users is zero: the address space is gone") }
            mm.users += 1
        }
        let id = nextId
        nextId += 1
        let load = { (c: Int) in self.queues[c].count + (self.running[c] == nil ? 0 : 1) }
        let home = cpu ?? (0..<cpuCount).min { load($0) < load($1) } ?? 0
        let task = Task(id: id, name: name ?? "task\(id)", cpu: home, boundCpu: cpu, site: site)
        task.mm = mm
        task.oomScoreAdj = oomScoreAdj
        tasks.append(task)
        trace?.name(task)
        runnable += 1
        enqueue(task)
        return task
    }

    /// Spawns a kernel thread of the machine (`kthread_run`): it runs
    /// like any task, but never ends, and a sleeping one keeps nobody waiting.
    public func spawnKernelThread(name: String, site: Site) throws(KernelError) -> Task {
        let task = try spawn(name: name, cpu: nil, site: site)
        task.isKernelThread = true
        return task
    }

    /// The OOM killer's `SIGKILL`: the task ends at its next scheduling
    /// point; a blocked one wakes for it.
    public func kill(_ task: Task) {
        guard !task.isFinished, !task.oomKilled else { return }
        task.oomKilled = true
        trace?.emit(.instant, "killed", category: "sched", track: .task(task.id))
        if task.state == .blocked { wake(task, error: KernelError(.EINTR, "task '\(task.name)' was killed by the OOM killer")) }
        onKill?(task)
    }

    /// Spawns a task bound to `cpu` that runs with preemption off, as an
    /// `on_each_cpu` function does.
    public func spawnAtomic(name: String, cpu: Int, site: Site) throws(KernelError) -> Task {
        let task = try spawn(name: name, cpu: cpu, site: site)
        task.preemptCount = 1
        task.atomic = true
        return task
    }

    /// Puts a runnable task on its CPU's queue.
    func enqueue(_ task: Task) {
        task.isQueued = true
        queues[task.cpu].append(task)
    }

    /// Runs `main` again for a new chunk.
    public func restartMain() {
        if main.state != .runnable { runnable += 1 }
        main.state = .runnable
        main.waiting = nil
        if !main.isQueued && running[main.cpu] !== main { enqueue(main) }
    }

    /// Whether CPU `c` has something to run: its task, if runnable, or the
    /// head of its queue when idle.
    private func ready(_ c: Int) -> Bool {
        if let task = running[c] { return task.state == .runnable }
        return !queues[c].isEmpty
    }

    /// Picks what runs next: a CPU with something to run, drawn from the
    /// seed, and its task (the head of its queue if it was idle). Nil when
    /// nothing can run.
    public func pickNext() -> Task? {
        if controller != nil { return controlledNext() }
        let ready = (0..<cpuCount).filter(ready)
        guard !ready.isEmpty else { return nil }
        let cpu = ready[Int(random.below(UInt64(ready.count)))]
        let task: Task
        if let on = running[cpu] {
            task = on
        } else {
            task = queues[cpu].removeFirst()
            task.isQueued = false
            setRunning(cpu, task)
        }
        switchTo(task)
        return task
    }

    /// Makes `task` the running task (the engine resumes it).
    public func switchTo(_ task: Task) {
        current = task
        onSwitch?(task)
    }

    /// A switch point in the running task: whether to let something else
    /// run now. Another CPU's task may run while this one stays on its
    /// CPU; with preemption on, this one may also be preempted (and an
    /// unbound one migrated), which never happens while preemption is off.
    public func preemptionPoint(hook: Bool) -> Bool {
        let task = current
        if task.oomKilled, task.state == .runnable {
            if controller == nil { keptCpu = nil }  // afterYield takes it off its CPU: the engine ends it when it runs
            return true
        }
        if controller != nil { return controlledPoint() }
        guard task.state == .runnable, runnable > 1, !hook || random.below(2) == 0 else { return false }
        let cpu = task.cpu
        let otherCpus = (0..<cpuCount).contains { $0 != cpu && ready($0) }
        let preemptible = task.preemptCount == 0
        if preemptible, !queues[cpu].isEmpty || (otherCpus && random.below(2) == 0) {
            trace?.emit(.instant, "preempt", category: "sched", track: .cpu(cpu), args: [.init("task", task.name)])
            setRunning(cpu, nil)
            if task.boundCpu == nil, cpuCount > 1, random.below(migrationOdds) == 0 {
                task.cpu = Int(random.below(UInt64(cpuCount)))
                if task.cpu != cpu {
                    trace?.emit(.instant, "migrate", category: "sched", track: .task(task.id),
                                args: [.init("from", cpu), .init("to", task.cpu)])
                }
            }
            enqueue(task)
            return true
        }
        if otherCpus { keptCpu = task }
        return otherCpus
    }

    /// After the running task yielded to the engine: unless it only let
    /// another CPU run (it keeps its own), a runnable task gives up its CPU,
    /// as a plain yield does.
    public func afterYield() {
        if controller != nil { return }  // the point placed everyone
        if keptCpu === current {
            keptCpu = nil
            return
        }
        yieldCurrent()
    }

    /// The machine booted while `main` was already running a chunk.
    public func adoptMain() {
        guard main.state != .runnable else { return }
        main.state = .runnable
        runnable += 1
        setRunning(main.cpu, main)
        switchTo(main)
    }

    /// Switch points to wait before the next: drawn from the seed.
    public func nextBudget() -> Int { controller != nil ? 1 : 1 + Int(random.below(bindingBudget)) }

    /// The running task gives its CPU up willingly (`schedule`, `yield`).
    public func yieldCurrent() {
        let task = current
        guard task.state == .runnable, !task.isQueued else { return }
        if controller != nil { task.pointSite = whereNow?() ?? "?" }
        if running[task.cpu] === task { setRunning(task.cpu, nil) }
        enqueue(task)
    }

    /// A switch point the task did not take preemption at: it stays on its
    /// CPU (the engine yielded only to let another CPU run).
    public func isOnCpu(_ task: Task) -> Bool { running[task.cpu] === task }

    /// Blocks the running task on `wait`; it runs again once woken. A
    /// spinner keeps its CPU; a sleeper leaves it.
    public func block(on wait: Wait) {
        let task = current
        task.state = .blocked
        task.waiting = wait
        runnable -= 1
        if controller != nil { task.pointSite = whereNow?() ?? "?" }
        if case .lock(let lock) = wait {
            trace?.lock("wait", lock, task, begin: true)
            if lock is SpinLock { return }
        }
        if running[task.cpu] === task { setRunning(task.cpu, nil) }
        if task.isKernelThread { wakeSettledWaiters() }
    }

    /// Makes a blocked task runnable: a spinner resumes on its CPU, a
    /// sleeper joins its CPU's queue.
    public func wake(_ task: Task, error: KernelError? = nil) {
        guard task.state == .blocked else { return }
        task.state = .runnable
        task.wakeError = error
        runnable += 1
        if running[task.cpu] !== task { enqueue(task) }
        if case .lock(let lock) = task.waiting { trace?.lock("wait", lock, task, begin: false) }
        if error != nil { leaveQueue(task) }
        task.waiting = nil
    }

    /// `task` stops waiting without getting what it waited for: it leaves
    /// the queue of its lock, wait queue or completion.
    private func leaveQueue(_ task: Task) {
        switch task.waiting {
        case .lock(let lock):
            lock.waiters.removeAll { $0 === task }
            if let sem = lock as? RwSemaphore { forget(task, waitingOn: sem) }
        case .waitQueue(let wq): wq.finishWait(task)
        case .completion(let x): x.remove(task)
        default: break
        }
    }

    /// The running task finished; everything waiting for it wakes. Its
    /// address space loses the task's user (`exit_mm`).
    public func finish(_ task: Task, failed: Bool, killed: Bool = false) {
        if task.state == .runnable { runnable -= 1 }
        task.state = killed ? .killed : failed ? .failed : .done
        // A task can end while it waits (its thread failed or went): it
        // leaves the lock's queue, which would otherwise hand the lock to it.
        leaveQueue(task)
        task.waiting = nil
        task.handoff = nil
        if running[task.cpu] === task { setRunning(task.cpu, nil) }
        if let mm = task.mm {
            task.mm = nil
            mm.put(async: false)
        }
        for other in tasks where other.state == .blocked {
            switch other.waiting {
            case .task(let target) where target === task: wake(other)
            case .tasks(let group) where group.allSatisfy(\.isFinished): wake(other)
            default: break
            }
        }
        wakeSettledWaiters()
    }

    /// Wakes a `.all` waiter once every other task is finished or a
    /// sleeping kernel thread.
    private func wakeSettledWaiters() {
        for other in tasks where other.state == .blocked {
            if case .all = other.waiting, tasks.allSatisfy({ $0 === other || $0.isSettled }) { wake(other) }
        }
    }

    // MARK: Controlled runs

    /// A preemption point of a controlled run: the controller picks who
    /// runs next; true when that is not the running task.
    private func controlledPoint() -> Bool {
        let task = current
        guard task.state == .runnable else { return false }
        task.steps += 1
        points += 1
        let spinning = task.spinning
        task.spinning = false
        let others = runnable > 1 ? candidates(after: task, sameCpu: task.preemptCount == 0) : []
        guard !others.isEmpty else {
            controller?.uncontested(task, step: task.steps)
            return false
        }
        let site = whereNow?() ?? "?"
        let point = spinning
            ? SchedulePoint(kind: .yield, task: task, step: task.steps, globalStep: points, site: site, candidates: others)
            : SchedulePoint(kind: .preempt, task: task, step: task.steps, globalStep: points, site: site, candidates: [task] + others)
        let next = decide(point)
        guard next !== task else { return false }
        if next.cpu == task.cpu {  // it takes this CPU: the running task is preempted
            trace?.emit(.instant, "preempt", category: "sched", track: .cpu(task.cpu), args: [.init("task", task.name)])
            setRunning(task.cpu, nil)
            enqueue(task)
        }
        chosen = next
        return true
    }

    /// Who runs next in a controlled run: what the preemption point chose,
    /// else (the running task blocked, yielded or ended) the controller's
    /// pick among every task that can run.
    private func controlledNext() -> Task? {
        let from = current
        let next: Task
        if let chosen {
            self.chosen = nil
            next = chosen
        } else {
            let all = candidates(after: from, sameCpu: true) + (ready(task: from) ? [from] : [])
            guard !all.isEmpty else { return nil }
            from.steps += 1
            points += 1
            if all.count == 1 {
                next = all[0]
                controller?.uncontested(from, step: from.steps)
            } else {
                let kind: SchedulePoint.Kind = from.isFinished ? .exit : from.state == .blocked ? .block : .yield
                let site = from.isFinished ? "(end)" : from.pointSite
                next = decide(SchedulePoint(kind: kind, task: from, step: from.steps, globalStep: points, site: site, candidates: all))
            }
        }
        if running[next.cpu] !== next {
            queues[next.cpu].removeAll { $0 === next }
            next.isQueued = false
            setRunning(next.cpu, next)
        }
        switchTo(next)
        return next
    }

    /// Asks the controller, and records a choice that is not the default.
    private func decide(_ point: SchedulePoint) -> Task {
        let i = controller?.choose(point) ?? point.defaultChoice
        let next = point.candidates.indices.contains(i) ? point.candidates[i] : point.candidates[point.defaultChoice]
        if i != point.defaultChoice {
            let decision = Decision(kind: point.kind, task: point.task.name, step: point.step, site: point.site, next: next.name)
            decisions.append(decision)
            trace?.emit(.instant, "schedule: \(decision)", category: "schedule", track: .task(point.task.id))
        }
        return next
    }

    /// Whether `task` can run now: runnable, and on its CPU or queued for
    /// one that is idle.
    private func ready(task: Task) -> Bool {
        guard task.state == .runnable else { return false }
        if let on = running[task.cpu] { return on === task }
        return task.isQueued
    }

    /// The tasks other than `task` that could run next, in spawn order
    /// after it (round robin): each CPU's running task, or every task
    /// queued on an idle one; `task`'s own queue only when `sameCpu` (it
    /// may be preempted, or it has left its CPU).
    private func candidates(after task: Task, sameCpu: Bool) -> [Task] {
        var found: [Task] = []
        for c in 0..<cpuCount {
            let queued: Bool
            if let on = running[c] {
                if on !== task, on.state == .runnable { found.append(on) }
                queued = on === task && sameCpu && task.state == .runnable  // a spinner keeps its CPU
            } else {
                queued = c != task.cpu || sameCpu
            }
            if queued { found += queues[c].filter { $0 !== task } }
        }
        return found.sorted { ($0.id > task.id ? 0 : 1, $0.id) < ($1.id > task.id ? 0 : 1, $1.id) }
    }

    /// A `try_lock` failed: in a controlled run, the task's next point is a
    /// yield, so that a task spinning on it never starves the holder.
    public func noProgress() { current.spinning = true }

    // MARK: Work

    /// `schedule_work`: `run` happens later, outside the running task, the
    /// next time the engine switches tasks (or `runWork` is called).
    public func queueWork(_ name: String, _ run: @escaping () -> Void) {
        work.append((name, run))
    }

    /// Names of the work items waiting to run.
    public var pendingWork: [String] { work.map(\.name) }

    /// Runs the queued work, in order, including work queued meanwhile.
    public func runWork() {
        while !work.isEmpty { work.removeFirst().run() }
    }

    /// Puts `task` (or nobody) on `cpu`, as the trace's sched_switch.
    private func setRunning(_ cpu: Int, _ task: Task?) {
        running[cpu] = task
        trace?.cpu(cpu, runs: task)
    }

    /// Tasks not finished, kernel threads asleep left out.
    public var unfinished: [Task] { tasks.filter { !$0.isSettled } }

    /// Forgets finished tasks nobody needs any more.
    public func reap(_ task: Task) {
        guard task !== main, task.isFinished else { return }
        tasks.removeAll { $0 === task }
        // A lock it exited holding still names it as its owner; the task
        // lets go of the lock, or the two keep each other.
        task.held = []
        task.waiting = nil
    }

    // MARK: Checks

    /// `might_sleep`: sleeping with preemption disabled (a spinlock, a
    /// CpuGuard) is a bug.
    public func mightSleep(_ what: String) throws(KernelError) {
        guard current.preemptCount != 0 else { return }
        let task = current
        throw .bug("sleeping function called from invalid context: \(what) in task '\(task.name)' with preempt_count \(task.preemptCount)\(heldDescription(task))")
    }

    /// `smp_processor_id()`: a bug in preemptible code of an unbound task
    /// (CONFIG_DEBUG_PREEMPT), where the CPU may change under it.
    public func smpProcessorId() throws(KernelError) -> Int {
        let task = current
        guard task.preemptCount > 0 || task.boundCpu != nil else {
            throw .bug("using smp_processor_id() in preemptible [00000000] code: \(task.name)/\(task.id)")
        }
        return task.cpu
    }

    /// `preempt_disable`.
    public func preemptDisable() { current.preemptCount += 1 }

    /// `preempt_enable`: below zero is a bug.
    public func preemptEnable(_ task: Task? = nil) throws(KernelError) {
        let task = task ?? current
        guard task.preemptCount > 0 else { throw .bug("preempt_enable with preempt_count 0 in task '\(task.name)'") }
        task.preemptCount -= 1
    }

    /// `preempt_enable()` called by the script: the count may not drop below
    /// what the held spinlocks took. The kernel lets it, and the task can then
    /// be preempted inside its critical section, while a task that wants the
    /// lock spins on the CPU it needs: a lockup, with no message.
    public func preemptEnableByScript() throws(KernelError) {
        let task = current
        let spins = task.held.filter { $0.lock is SpinLock }
        if let last = spins.last, task.preemptCount <= spins.count {
            throw .bug("preempt_enable without a matching preempt_disable in task '\(task.name)': the count left is what \(last.lock) (locked at \(sites.name(last.site))) took")
        }
        try preemptEnable(task)
    }

    /// `; holding SpinLock{a} (locked at x.lua:3), ...` or nothing.
    func heldDescription(_ task: Task) -> String {
        task.held.isEmpty ? "" : "; holding " + task.held.map { "\($0.lock) (locked at \(sites.name($0.site)))" }.joined(separator: ", ")
    }

    /// Every unfinished task with what it waits for and what it holds: the
    /// EDEADLK report when nothing can run.
    public func deadlockReport() -> String {
        var lines = ["deadlock: every task is blocked"]
        for task in unfinished {
            let waits = task.waiting.map { "waits for \($0)" } ?? "runnable"
            let holds = task.held.isEmpty ? "holds nothing"
                : "holds " + task.held.map { "\($0.lock) (locked at \(sites.name($0.site)))" }.joined(separator: ", ")
            lines.append("  task '\(task.name)' (cpu \(task.cpu)): \(waits); \(holds)")
        }
        return lines.joined(separator: "\n")
    }
}
