/// A completion (`struct completion`, kernel/sched/completion.c): `done`
/// counts the completions not yet waited for, `UINT_MAX` once
/// `complete_all` ran; waiters sleep on a simple wait queue in FIFO order
/// (`__prepare_to_swait` adds at the tail, `swake_up_locked` wakes the
/// first). A `complete` before the wait is not lost: `done` keeps it.
public final class Completion: CustomStringConvertible {
    /// `x->done` after `complete_all`.
    public static let all = UInt32.max
    public let id: Int
    public let name: String?
    public let site: Site
    public internal(set) var done: UInt32 = 0
    /// The sleepers, first to wake first.
    public private(set) var waiters: [Task] = []

    init(id: Int, name: String?, site: Site) {
        self.id = id
        self.name = name
        self.site = site
    }

    public var description: String { "Completion{\(name ?? "#\(id)")}" }

    /// `completion_done`: whether a wait would not sleep.
    public var isDone: Bool { done != 0 }

    func enqueue(_ task: Task) {
        if !waiters.contains(where: { $0 === task }) { waiters.append(task) }
    }

    func remove(_ task: Task) { waiters.removeAll { $0 === task } }

    func takeFirst() -> Task? { waiters.isEmpty ? nil : waiters.removeFirst() }
}

extension Scheduler {
    public func makeCompletion(name: String?, site: Site) -> Completion {
        waitObjects += 1
        return Completion(id: waitObjects, name: name, site: site)
    }

    /// `complete`: one more done (unless all are), and the first sleeper wakes.
    public func complete(_ x: Completion) {
        if x.done != Completion.all { x.done += 1 }
        if let task = x.takeFirst() { wake(task) }
    }

    /// `complete_all`: every wait, now and later, returns at once.
    public func completeAll(_ x: Completion) {
        x.done = Completion.all
        while let task = x.takeFirst() { wake(task) }
    }

    /// `try_wait_for_completion`: takes a done without sleeping, if there is one.
    public func tryWaitForCompletion(_ x: Completion) -> Bool {
        guard x.done != 0 else { return false }
        if x.done != Completion.all { x.done -= 1 }
        return true
    }

    /// One pass of `do_wait_for_common` for the running task: true when it
    /// took a done; false when it sleeps on `x` (at the tail, again if
    /// another task took the done it was woken for).
    public func waitForCompletion(_ x: Completion) -> Bool {
        if tryWaitForCompletion(x) { return true }
        x.enqueue(current)
        block(on: .completion(x))
        return false
    }
}
