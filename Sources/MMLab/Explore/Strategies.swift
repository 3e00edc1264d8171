import MMCore

/// `random`: at each preemption point, one chance in four of running
/// another candidate, drawn from the run's seed; a free choice (a task
/// blocked, yielded or ended) is drawn among all.
final class RandomStrategy: ScheduleController {
    private var random: Random

    init(seed: UInt64) { random = Random(seed: seed ^ 0x7261_6e64_6f6d) }

    func choose(_ point: SchedulePoint) -> Int {
        let n = UInt64(point.candidates.count)
        if point.kind == .preempt {
            return random.below(4) == 0 ? 1 + Int(random.below(n - 1)) : 0
        }
        return Int(random.below(n))
    }
}

/// `pct`: Burckhardt et al.'s Probabilistic Concurrency Testing. Each task
/// gets a random priority above `depth`; the highest-priority candidate
/// always runs. At d − 1 change points, drawn among the run's first `k`
/// scheduling points, the running task's priority drops to d − 1, ..., 1.
/// A bug of depth d is then found with probability ≥ 1/(n·k^(d−1)) per run.
/// A task that yields or spins drops below every other, so a spin-wait
/// cannot starve the task it waits for.
final class PctStrategy: ScheduleController {
    private var random: Random
    private var priorities: [Int: Int] = [:]
    /// Change point (a global scheduling point) → the priority it sets.
    private var changes: [Int: Int] = [:]
    private var lowest = 0

    init(seed: UInt64, depth: Int, steps k: Int) {
        random = Random(seed: seed ^ 0x7063_74)
        for i in 1..<max(1, depth) {
            var point = 1 + Int(random.below(UInt64(max(1, k))))
            while changes[point] != nil && changes.count < k { point = 1 + Int(random.below(UInt64(max(1, k)))) }
            changes[point] = depth - i
        }
    }

    private func priority(_ task: Task) -> Int {
        if let p = priorities[task.id] { return p }
        let p = 1_000 + Int(random.below(1 << 30))
        priorities[task.id] = p
        return p
    }

    func choose(_ point: SchedulePoint) -> Int {
        if let p = changes[point.globalStep] { priorities[point.task.id] = p }
        if point.kind == .yield {
            lowest -= 1
            priorities[point.task.id] = lowest
        }
        var best = 0
        for (i, task) in point.candidates.enumerated() where i > 0 {
            let (p, q) = (priority(task), priority(point.candidates[best]))
            if p > q || p == q && task.id < point.candidates[best].id { best = i }
        }
        return best
    }
}

/// One scheduling point of a `dfs` run, as the search sees it.
struct TrailPoint: Equatable {
    let count: Int
    let chosen: Int
    /// A choice other than 0 here is a preemption.
    let preemptive: Bool
}

/// `dfs`: replays `prefix` (a choice per scheduling point), then takes the
/// default everywhere; records every point for the search to branch at.
final class DfsStrategy: ScheduleController {
    let prefix: [Int]
    private(set) var trail: [TrailPoint] = []
    /// A prefix choice that does not fit the point it replays: the script
    /// is not deterministic.
    private(set) var divergence: String?

    init(prefix: [Int]) { self.prefix = prefix }

    func choose(_ point: SchedulePoint) -> Int {
        var choice = point.defaultChoice
        if trail.count < prefix.count {
            choice = prefix[trail.count]
            if choice >= point.candidates.count {
                divergence = divergence ?? "scheduling point \(trail.count + 1) (step \(point.step) of \(point.task.name) at \(point.site)) has \(point.candidates.count) choices, fewer than an earlier run found"
                choice = point.defaultChoice
            }
        }
        trail.append(TrailPoint(count: point.candidates.count, chosen: choice, preemptive: point.kind == .preempt))
        return choice
    }
}

/// Replays a schedule file: each decision is taken at its task's step; a
/// decision that does not apply there is reported, not skipped in silence.
final class ReplayStrategy: ScheduleController {
    let schedule: ScheduleFile
    private var next = 0
    /// What did not go as the file says, each with the file's line.
    private(set) var divergences: [String] = []

    init(_ schedule: ScheduleFile) { self.schedule = schedule }

    private func report(_ entry: ScheduleFile.Entry, _ why: String) {
        divergences.append("\(schedule.name):\(entry.line): \(entry.decision): \(why)")
    }

    func choose(_ point: SchedulePoint) -> Int {
        while next < schedule.entries.count {
            let entry = schedule.entries[next]
            let d = entry.decision
            guard d.task == point.task.name else { return point.defaultChoice }
            if d.step > point.step { return point.defaultChoice }
            next += 1
            if d.step < point.step {
                report(entry, "\(d.task) passed step \(d.step) elsewhere (it is at step \(point.step), \(point.site))")
                continue
            }
            guard d.kind == point.kind else {
                report(entry, "step \(d.step) of \(d.task) is a \(point.kind) point at \(point.site) in this run")
                return point.defaultChoice
            }
            if d.site != point.site {
                report(entry, "step \(d.step) of \(d.task) is at \(point.site) in this run (the script changed?); taken anyway")
            }
            guard let i = point.candidates.firstIndex(where: { $0.name == d.next }) else {
                let names = point.candidates.map(\.name).joined(separator: ", ")
                report(entry, "\(d.next) cannot run there (it could be: \(names))")
                return point.defaultChoice
            }
            return i
        }
        return point.defaultChoice
    }

    func uncontested(_ task: Task, step: Int) {
        guard next < schedule.entries.count else { return }
        let entry = schedule.entries[next]
        guard entry.decision.task == task.name, entry.decision.step == step else { return }
        next += 1
        report(entry, "nothing else could run at step \(step) of \(task.name) in this run")
    }

    /// Decisions the run never reached, reported once it ended.
    func finish() {
        while next < schedule.entries.count {
            let entry = schedule.entries[next]
            report(entry, "never reached: the run ended first")
            next += 1
        }
    }
}

/// A schedule file: `#` comments (the header names the script and the
/// machine it was recorded on), then one decision per line.
public struct ScheduleFile: Equatable {
    struct Entry: Equatable {
        let decision: Decision
        /// Its line in the file.
        let line: Int
    }

    var name = "schedule"
    var entries: [Entry] = []
    /// `# key: value` lines of the header.
    var header: [(String, String)] = []

    public static func == (a: ScheduleFile, b: ScheduleFile) -> Bool {
        a.entries.map(\.decision) == b.entries.map(\.decision)
    }

    init(decisions: [Decision], header: [(String, String)] = []) {
        entries = decisions.enumerated().map { Entry(decision: $1, line: $0 + 1 + header.count + 2) }
        self.header = header
    }

    var decisions: [Decision] { entries.map(\.decision) }
    var preemptions: Int { decisions.filter(\.isPreemption).count }

    func value(_ key: String) -> String? { header.first { $0.0 == key }?.1 }

    /// Parses a schedule file's text; `name` is its path, for messages.
    static func parse(_ text: String, name: String) throws(UsageError) -> ScheduleFile {
        var file = ScheduleFile(decisions: [])
        file.name = name
        var n = 0
        var sawMagic = false
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            n += 1
            let line = raw.trimmingSpaces
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let body = line.dropFirst().trimmingSpaces
                if body == magic { sawMagic = true }
                if let colon = body.firstIndex(of: ":") {
                    file.header.append((String(body[..<colon]).trimmingSpaces, String(body[body.index(after: colon)...]).trimmingSpaces))
                }
                continue
            }
            guard sawMagic else { throw UsageError("\(name) is not an mmlab schedule (its first line must be '# \(magic)')") }
            guard let decision = Decision(line: line) else {
                throw UsageError("\(name):\(n): not a scheduling decision: '\(line)' (expected: preempt TASK at FILE:LINE (step N of TASK) -> TASK)")
            }
            file.entries.append(Entry(decision: decision, line: n))
        }
        guard sawMagic else { throw UsageError("\(name) is not an mmlab schedule (its first line must be '# \(magic)')") }
        return file
    }

    static let magic = "mmlab schedule 1"

    /// The file's text.
    var text: String {
        var lines = ["# \(Self.magic)"]
        for (key, value) in header { lines.append("# \(key): \(value)") }
        lines.append("# One decision per line; where none is written the running task goes on, and a task that blocks, yields or ends hands over to the next runnable one in spawn order.")
        lines += decisions.map(\.description)
        return lines.joined(separator: "\n") + "\n"
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces, tabs and line ends.
    public var trimmingSpaces: String {
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }
        return String(drop(while: blank).reversed().drop(while: blank).reversed())
    }
}
