/// A task (`struct task_struct`): a thread of execution on one of the
/// machine's CPUs. The engine runs each as a coroutine; the model keeps its
/// state, its CPU, its preemption count, the locks it holds and what it
/// waits for.
public final class Task: CustomStringConvertible {
    public let id: Int
    public let name: String
    /// Where it was spawned.
    public let site: Site
    /// The CPU it runs on now, or last ran on.
    public internal(set) var cpu: Int
    /// The CPU it is bound to (`kthread_bind`), if any: it never migrates.
    public let boundCpu: Int?
    public internal(set) var state: TaskState = .runnable
    /// `preempt_count()`: preemption is off while it is above zero.
    /// Read by every might_sleep; changed only by plain increments.
    @exclusivity(unchecked) public internal(set) var preemptCount = 0
    /// Locks held, in the order taken, with where each was taken.
    public internal(set) var held: [HeldLock] = []
    /// What it is blocked on.
    public internal(set) var waiting: Wait?
    /// The address space it uses (`current->mm`), if any.
    public internal(set) var mm: MmStruct?
    /// Its kmap_local mappings (`current->kmap_ctrl`).
    public let kmap = KmapLocal()
    /// Set when a lock it waited for was handed to it.
    var handoff: Lock?
    /// Set when the scheduler wakes it to fail its wait (a deadlock).
    public internal(set) var wakeError: KernelError?
    /// Whether `kernel.sched.run` reported its failure already, or it was joined.
    public var failureReported = false
    /// Whether it sits on a run queue.
    public internal(set) var isQueued = false
    /// It runs with preemption off from the start and must end that way
    /// (an `on_each_cpu` function, as in interrupt context).
    public internal(set) var atomic = false
    /// Its scheduling points so far, in a controlled run (`SchedulePoint.step`).
    public internal(set) var steps = 0
    /// A `try_lock` failed since its last scheduling point: it spins.
    var spinning = false
    /// `oom_score_adj`: -1000 (never killed) ... 1000.
    public internal(set) var oomScoreAdj = 0
    /// The OOM killer killed it: its next scheduling point ends it.
    public internal(set) var oomKilled = false
    /// A thread of the machine itself (`kswapd0`): it never ends, and
    /// nobody waits for it while it sleeps.
    public internal(set) var isKernelThread = false
    /// Where it last blocked or yielded, in a controlled run.
    var pointSite = ""

    init(id: Int, name: String, cpu: Int, boundCpu: Int?, site: Site) {
        self.id = id
        self.name = name
        self.cpu = cpu
        self.boundCpu = boundCpu
        self.site = site
    }

    public var description: String { "Task{\(name), cpu=\(cpu), \(state.rawValue)}" }
    public var isFinished: Bool { state == .done || state == .failed || state == .killed }
    /// Finished, or a kernel thread asleep: nothing to wait for.
    public var isSettled: Bool { isFinished || (isKernelThread && state == .blocked) }

    /// Forgets its latest hold of `lock` (a reader may hold a semaphore twice).
    func release(_ lock: Lock) {
        if let i = held.lastIndex(where: { $0.lock === lock }) { held.remove(at: i) }
    }

    /// Takes the error a wakeup left, if any.
    public func takeWakeError() -> KernelError? {
        defer { wakeError = nil }
        return wakeError
    }
}

public enum TaskState: String, Sendable {
    case runnable, blocked, done, failed
    /// The OOM killer ended it.
    case killed
}

/// What a blocked task waits for.
public enum Wait: CustomStringConvertible {
    case lock(Lock)
    case task(Task)
    /// `kernel.sched.run`: every other task to finish.
    case all
    /// Every one of these tasks to finish (`on_each_cpu` waiting).
    case tasks([Task])
    /// The per-VMA read locks of a VMA to go (`vma_start_write`).
    case vmaReaders(VmArea)
    /// A wake-up of a wait queue (`wait_event`).
    case waitQueue(WaitQueueHead)
    /// A `complete` (`wait_for_completion`).
    case completion(Completion)

    public var description: String {
        switch self {
        case .lock(let lock):
            if let owner = lock.owner { "\(lock) (held by '\(owner.name)')" }
            else if let sem = lock as? RwSemaphore, !sem.readers.isEmpty {
                "\(lock) (held for reading by " + sem.readers.map { "'\($0.name)'" }.joined(separator: ", ") + ")"
            } else { "\(lock)" }
        case .task(let task): "task '\(task.name)' to finish"
        case .all: "every other task to finish"
        case .tasks(let tasks): "tasks " + tasks.map { "'\($0.name)'" }.joined(separator: ", ") + " to finish"
        case .vmaReaders(let vma): "the \(vma.readers) VMA read lock(s) of \(vma) to go (vma_start_write)"
        case .waitQueue(let wq): "a wake-up of \(wq) (wait_event)"
        case .completion(let x): "\(x) (wait_for_completion)"
        }
    }
}
