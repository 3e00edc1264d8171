/// Controlled scheduling: the scheduler's choices made by someone else (an
/// exploration strategy, a schedule file) instead of the machine's seed.
///
/// A controlled run has a *scheduling point* at every binding call and
/// every quantum of instructions of the running task (`preempt`: it could
/// go on), and wherever it cannot go on (`block`, `yield`, `exit`). At each
/// the controller picks the next task among the candidates. Points are
/// numbered per task (`step`), so a decision names where it happens by the
/// task's own path: the same script takes the same decisions at the same
/// places whatever the other tasks did before.
///
/// There is no migration in a controlled run: a task stays on the CPU it
/// was spawned on, and picking a task of another CPU lets time pass there
/// while the running one keeps its own.
public struct SchedulePoint {
    public enum Kind: String, Sendable, CaseIterable {
        /// The running task could go on: candidates[0] is it, and any other
        /// choice is a preemption.
        case preempt
        /// It blocked (a lock, a wait, a join).
        case block
        /// It gave its CPU up (`sched.yield`), or it spins: a failed
        /// `try_lock` since its last point. Not a preemption, and the
        /// default hands over, as loom's and CHESS's fairness do.
        case yield
        /// It ended.
        case exit
    }

    public let kind: Kind
    public let task: Task
    /// `task`'s n-th scheduling point.
    public let step: Int
    /// The scheduling points of the whole run so far, this one included.
    public let globalStep: Int
    /// The script line the task is at (`binder.lua:88`).
    public let site: String
    public let candidates: [Task]
    /// The choice when nobody says otherwise: go on at a preemption
    /// point, else the next runnable task in spawn order after `task`.
    public var defaultChoice: Int { 0 }
}

/// A choice that differs from the default: the line a schedule file holds.
/// `preempt worker2 at binder.lua:88 (step 14 of worker2) -> shrinker`.
public struct Decision: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var kind: SchedulePoint.Kind
    public var task: String
    public var step: Int
    public var site: String
    public var next: String

    public init(kind: SchedulePoint.Kind, task: String, step: Int, site: String, next: String) {
        self.kind = kind
        self.task = task
        self.step = step
        self.site = site
        self.next = next
    }

    public var isPreemption: Bool { kind == .preempt }

    public var description: String { "\(kind) \(task) at \(site) (step \(step) of \(task)) -> \(next)" }

    /// Parses a line as `description` writes it; nil if it is not one.
    public init?(line: String) {
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        // kind task at site (step N of task) -> next
        guard words.count == 10, let kind = SchedulePoint.Kind(rawValue: words[0]), words[2] == "at",
              words[4] == "(step", let step = Int(words[5]), step > 0, words[6] == "of", words[7] == words[1] + ")",
              words[8] == "->" else { return nil }
        self.init(kind: kind, task: words[1], step: step, site: words[3], next: words[9])
    }
}

/// Who chooses at a controlled run's scheduling points.
public protocol ScheduleController: AnyObject {
    /// The index in `point.candidates` of the task that runs next.
    func choose(_ point: SchedulePoint) -> Int
    /// A scheduling point where nothing else could run: step `step` of `task`.
    func uncontested(_ task: Task, step: Int)
}

extension ScheduleController {
    public func uncontested(_ task: Task, step: Int) {}
}
