/// The machine's CPUs and its scheduler: which task runs where, and when
/// one is preempted, migrated, blocked or woken. Every choice comes from the
/// machine's seed, so a run replays exactly.
///
/// The engine runs tasks as coroutines and asks the scheduler at each
/// preemption point (a binding call, or every few hundred instructions)
/// whether to switch. A task is preempted only while its `preemptCount` is
/// zero, which holding a spinlock or a `CpuGuard` prevents.
///
/// # Invariants
///
/// A runnable task is on exactly one CPU's queue, or is `current`. A task
/// spinning on a spinlock keeps its CPU: nothing else runs there until it
/// has the lock.
public final class Scheduler {
    public let cpuCount: Int
    /// Every task, in spawn order; `main` first.
    public private(set) var tasks: [Task] = []
    public let main: Task
    /// The running task.
    public private(set) var current: Task
    /// Called when the running task or its CPU changes: the page allocator
    /// serves that CPU's lists.
    public var onSwitch: ((Task) -> Void)?
    /// Called with the number of queued tasks whenever it changes: the
    /// engine skips preemption points while nothing else could run.
    public var onQueued: ((Int) -> Void)?
    /// Tasks on run queues.
    public private(set) var queued = 0 {
        didSet { onQueued?(queued) }
    }
    public let lockdep = Lockdep()

    private var queues: [[Task]]
    private var spinners: [Task?]
    private var random: Random
    private var nextId = 1
    var lockCount = 0
    /// Where each waiting task asked for its lock.
    var pendingSites: [ObjectIdentifier: Site] = [:]

    /// One in `migrationOdds` preemption points moves an unbound task to a
    /// CPU drawn from the seed.
    public var migrationOdds: UInt64 = 4
    /// Binding calls between preemption points: drawn from 1 ... this.
    public var bindingBudget: UInt64 = 8

    let sites: SiteTable
    let accounting: Accounting

    init(cpus: Int, seed: UInt64, sites: SiteTable, accounting: Accounting) {
        self.sites = sites
        self.accounting = accounting
        cpuCount = cpus
        queues = Array(repeating: [], count: cpus)
        spinners = Array(repeating: nil, count: cpus)
        random = Random(seed: seed ^ 0x7363_6865_645f_7271)
        main = Task(id: 1, name: "main", cpu: 0, boundCpu: nil, site: .unknown)
        nextId = 2
        current = main
        tasks.append(main)
    }

    // MARK: Tasks

    /// Spawns a runnable task, bound to `cpu` if given, else on the CPU with
    /// the fewest runnable tasks.
    public func spawn(name: String?, cpu: Int?, site: Site) throws(KernelError) -> Task {
        if let cpu, !(0..<cpuCount).contains(cpu) {
            throw KernelError(.EINVAL, "cpu \(cpu) is not one of the machine's \(cpuCount) CPUs")
        }
        let id = nextId
        nextId += 1
        let home = cpu ?? (0..<cpuCount).min { queues[$0].count < queues[$1].count } ?? 0
        let task = Task(id: id, name: name ?? "task\(id)", cpu: home, boundCpu: cpu, site: site)
        tasks.append(task)
        enqueue(task)
        return task
    }

    /// Spawns a task bound to `cpu` that runs with preemption off, as an
    /// `on_each_cpu` function does.
    public func spawnAtomic(name: String, cpu: Int, site: Site) throws(KernelError) -> Task {
        let task = try spawn(name: name, cpu: cpu, site: site)
        task.preemptCount = 1
        task.atomic = true
        return task
    }

    /// Puts a runnable task on its CPU's queue (at the front for a spinner
    /// that got its lock).
    func enqueue(_ task: Task, front: Bool = false) {
        task.isQueued = true
        queued += 1
        if front { queues[task.cpu].insert(task, at: 0) } else { queues[task.cpu].append(task) }
    }

    /// Runs `main` again for a new chunk.
    public func restartMain() {
        main.state = .runnable
        main.waiting = nil
        if !main.isQueued { enqueue(main) }
    }

    /// Picks the next task to run: a CPU with work, drawn from the seed, and
    /// the task at the head of its queue. Nil when nothing can run.
    public func pickNext() -> Task? {
        let ready = (0..<cpuCount).filter { !queues[$0].isEmpty && spinners[$0] == nil }
        guard !ready.isEmpty else { return nil }
        let cpu = ready[Int(random.below(UInt64(ready.count)))]
        let task = queues[cpu].removeFirst()
        task.isQueued = false
        queued -= 1
        switchTo(task)
        return task
    }

    /// Makes `task` the running task (the engine resumes it).
    public func switchTo(_ task: Task) {
        current = task
        onSwitch?(task)
    }

    /// Whether any task other than the running one could run now.
    public var othersRunnable: Bool {
        (0..<cpuCount).contains { !queues[$0].isEmpty && spinners[$0] == nil }
    }

    /// A preemption point in the running task: says whether to switch to
    /// another task now (migrating an unbound one, sometimes). Never while
    /// preemption is disabled, and never when nothing else could run.
    public func preemptionPoint(hook: Bool) -> Bool {
        let task = current
        guard task.preemptCount == 0, task.state == .runnable, othersRunnable,
              !hook || random.below(2) == 0 else { return false }
        // A preempted task may wake up elsewhere; a task alone stays put.
        if task.boundCpu == nil, cpuCount > 1, random.below(migrationOdds) == 0 {
            task.cpu = Int(random.below(UInt64(cpuCount)))
        }
        enqueue(task)
        return true
    }

    /// Binding calls until the next preemption point.
    public func nextBudget() -> Int { 1 + Int(random.below(bindingBudget)) }

    /// The running task gave up its CPU willingly (`schedule`, `yield`).
    public func yieldCurrent() {
        let task = current
        guard task.state == .runnable, !task.isQueued else { return }
        enqueue(task)
    }

    /// Blocks the running task on `wait`; it runs again once woken.
    public func block(on wait: Wait) {
        let task = current
        task.state = .blocked
        task.waiting = wait
        if case .lock(let lock) = wait, lock is SpinLock { spinners[task.cpu] = task }
    }

    /// Makes a blocked task runnable; a spinner goes first on its CPU.
    public func wake(_ task: Task, error: KernelError? = nil) {
        guard task.state == .blocked else { return }
        task.state = .runnable
        task.wakeError = error
        let spinning = spinners[task.cpu] === task
        if spinning { spinners[task.cpu] = nil }
        enqueue(task, front: spinning)
        if case .lock(let lock) = task.waiting, error != nil { lock.waiters.removeAll { $0 === task } }
        task.waiting = nil
    }

    /// The running task finished; everything waiting for it wakes.
    public func finish(_ task: Task, failed: Bool) {
        task.state = failed ? .failed : .done
        task.waiting = nil
        for other in tasks where other.state == .blocked {
            switch other.waiting {
            case .task(let target) where target === task: wake(other)
            case .all where tasks.allSatisfy({ $0 === other || $0.isFinished }): wake(other)
            case .tasks(let group) where group.allSatisfy(\.isFinished): wake(other)
            default: break
            }
        }
    }

    /// Tasks not finished.
    public var unfinished: [Task] { tasks.filter { !$0.isFinished } }

    /// Forgets finished tasks nobody needs any more.
    public func reap(_ task: Task) {
        if task !== main, task.isFinished { tasks.removeAll { $0 === task } }
    }

    // MARK: Checks

    /// `might_sleep`: sleeping with preemption disabled (a spinlock, a
    /// CpuGuard) is a bug.
    public func mightSleep(_ what: String) throws(KernelError) {
        let task = current
        guard task.preemptCount == 0 else {
            throw .bug("sleeping function called from invalid context: \(what) in task '\(task.name)' with preempt_count \(task.preemptCount)\(heldDescription(task))")
        }
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
