/// A wait queue (`struct wait_queue_head`, kernel/sched/wait.c): tasks
/// sleep on it in `wait_event` until a wake-up finds their condition true.
///
/// As `___wait_event`, a sleeper goes on the queue (`prepare_to_wait_event`)
/// *before* it evaluates its condition, and a wake-up takes it off
/// (`autoremove_wake_function`). A wake-up that comes while the condition
/// runs therefore leaves it off the queue and running: it rechecks instead
/// of sleeping, and no wake-up is lost.
public final class WaitQueueHead: CustomStringConvertible {
    public let id: Int
    public let name: String?
    /// Where it was made (`init_waitqueue_head`'s caller).
    public let site: Site
    /// The sleepers, head first. `wait_event`'s entries are not exclusive:
    /// `__add_wait_queue` puts each at the head, and `__wake_up_common`
    /// walks from the head, so the latest sleeper wakes first.
    public private(set) var entries: [Task] = []

    init(id: Int, name: String?, site: Site) {
        self.id = id
        self.name = name
        self.site = site
    }

    public var description: String { "WaitQueue{\(name ?? "#\(id)")}" }

    /// Whether `task` is on the queue (no wake-up took it off since it went on).
    public func isQueued(_ task: Task) -> Bool { entries.contains { $0 === task } }

    /// `prepare_to_wait_event`: `task` goes on the queue, unless already on it.
    public func prepareToWait(_ task: Task) {
        if !isQueued(task) { entries.insert(task, at: 0) }
    }

    /// `finish_wait`: `task` leaves the queue, if a wake-up did not take it off.
    public func finishWait(_ task: Task) {
        entries.removeAll { $0 === task }
    }

    /// Takes every entry off, head first: what a wake-up wakes.
    func takeAll() -> [Task] {
        defer { entries = [] }
        return entries
    }
}

extension Scheduler {
    public func makeWaitQueue(name: String?, site: Site) -> WaitQueueHead {
        waitObjects += 1
        return WaitQueueHead(id: waitObjects, name: name, site: site)
    }

    /// `wake_up` and `wake_up_all`: `__wake_up(wq, TASK_NORMAL,
    /// nr_exclusive, NULL)` wakes every non-exclusive entry and at most
    /// `nr_exclusive` exclusive ones. `wait_event`'s entries are all
    /// non-exclusive, so both wake every sleeper. Returns how many were on the queue.
    @discardableResult
    public func wakeUp(_ wq: WaitQueueHead) -> Int {
        let woken = wq.takeAll()
        // A task still evaluating its condition is not blocked: taken off
        // the queue, it is "running" again (try_to_wake_up) and rechecks.
        for task in woken { wake(task) }
        return woken.count
    }

    /// One pass of `___wait_event` after its condition was false: the
    /// running task sleeps on `wq` (true), or a wake-up came while the
    /// condition ran and it must recheck at once (false).
    public func sleep(on wq: WaitQueueHead) -> Bool {
        guard wq.isQueued(current) else { return false }
        block(on: .waitQueue(wq))
        return true
    }
}
