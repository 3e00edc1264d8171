#if canImport(Glibc)
import Glibc
#endif
import MMCore

/// What an exploration found: failures grouped by signature, in the order
/// runs first hit them. Chunks of a plan each write one as JSON; merging
/// them gives the report one process running every chunk would print.
public struct Report {
    var strategy: Explorer.Strategy
    var depth: Int
    var preemptionBound: Int
    var runs = 0
    /// Tasks and scheduling points of a run: PCT's n and k.
    var tasks = 0
    var steps = 0
    /// `dfs` ran every schedule within the bound.
    var exhaustive = false
    /// What ended the exploration before its runs were done.
    var stoppedEarly: String?
    var groups: [Group] = []
    /// Chunks that did not report (a worker that died), by what they were.
    var missing: [String] = []

    struct Group {
        var failure: Failure
        var count: Int
        var firstRun: Int
        var schedule: [Decision]
        var shrunk: [Decision]?
        /// Where the schedules were written.
        var path: String?
        var shrunkPath: String?
    }

    init(strategy: Explorer.Strategy, depth: Int, preemptionBound: Int) {
        self.strategy = strategy
        self.depth = depth
        self.preemptionBound = preemptionBound
    }

    mutating func add(_ run: Explorer.Run, number: Int) {
        runs += 1
        guard let failure = run.failure else { return }
        if let i = groups.firstIndex(where: { $0.failure.signature == failure.signature }) {
            groups[i].count += 1
        } else {
            groups.append(Group(failure: failure, count: 1, firstRun: number, schedule: run.decisions))
        }
    }

    /// Adds a later chunk's report, as if its runs had followed these.
    mutating func merge(_ other: Report) {
        runs += other.runs
        tasks = max(tasks, other.tasks)
        steps = max(steps, other.steps)
        exhaustive = exhaustive || other.exhaustive
        stoppedEarly = stoppedEarly ?? other.stoppedEarly
        missing += other.missing
        for group in other.groups {
            if let i = groups.firstIndex(where: { $0.failure.signature == group.failure.signature }) {
                guard group.firstRun != 0 || groups[i].firstRun != 0 else { continue }  // every chunk runs the default schedule
                groups[i].count += group.count
                if group.firstRun < groups[i].firstRun {
                    groups[i].firstRun = group.firstRun
                    groups[i].schedule = group.schedule
                }
            } else {
                groups.append(group)
            }
        }
        groups.sort { $0.firstRun < $1.firstRun }
    }

    /// PCT's guarantee for this script: 1/(n·k^(d−1)).
    var pctBound: Double {
        1 / (Double(max(1, tasks)) * pow(Double(max(1, steps)), Double(max(0, depth - 1))))
    }

    // MARK: Text

    func text(script: String, arguments: [String], options: Explorer.Options) -> String {
        var lines: [String] = []
        let seed = options.configuration.seed
        lines.append("mmlab explore \(script): \(strategy), \(runs) run\(runs == 1 ? "" : "s"), seed \(seed)")
        switch strategy {
        case .pct:
            let bound = pctBound
            lines.append("PCT: n=\(tasks) tasks, k=\(steps) scheduling points, depth \(depth): each run finds a depth-\(depth) bug with probability ≥ 1/(n·k^\(depth - 1)) = \(Report.scientific(bound))")
        case .dfs:
            if exhaustive {
                lines.append("dfs: all \(runs) schedules with ≤ \(preemptionBound) preemption\(preemptionBound == 1 ? "" : "s") explored")
            } else {
                lines.append("dfs: \(runs) schedules with ≤ \(preemptionBound) preemption\(preemptionBound == 1 ? "" : "s") explored; stopped by \(stoppedEarly ?? "--stop-at-first") before the space was exhausted")
            }
        case .random:
            break
        }
        if stoppedEarly == "the default schedule failing" {
            lines.append("the default schedule fails already: no interleaving is needed (fix this first)")
        } else if let stoppedEarly, strategy != .dfs {
            lines.append("stopped by \(stoppedEarly) after \(runs) runs")
        }
        for chunk in missing { lines.append("missing: \(chunk)") }
        if groups.isEmpty {
            lines.append("no failure found")
            return lines.joined(separator: "\n")
        }
        lines.append("\(groups.count) failure\(groups.count == 1 ? "" : "s"):")
        for group in groups {
            lines.append("  \(group.failure.signature)")
            lines.append(group.firstRun == 0 ? "    on the default schedule"
                         : "    hit by \(group.count) of \(runs) runs, first by run \(group.firstRun)")
            if let path = group.path {
                lines.append("    schedule: \(path) (\(Report.describe(group.schedule)))")
            }
            if let shrunk = group.shrunk, let path = group.shrunkPath {
                lines.append("    shrunk:   \(path) (\(Report.describe(shrunk)))")
                let args = arguments.isEmpty ? "" : " " + arguments.joined(separator: " ")
                lines.append("    replay:   mmlab --schedule \(path) \(script)\(args)")
            }
        }
        return lines.joined(separator: "\n")
    }

    static func describe(_ decisions: [Decision]) -> String {
        let p = decisions.filter(\.isPreemption).count
        return "\(decisions.count) decision\(decisions.count == 1 ? "" : "s"), \(p) preemption\(p == 1 ? "" : "s")"
    }

    static func scientific(_ x: Double) -> String {
        guard x > 0, x.isFinite else { return "0" }
        var exponent = 0
        var m = x
        while m < 1 { m *= 10; exponent -= 1 }
        while m >= 10 { m /= 10; exponent += 1 }
        let rounded = (m * 100).rounded() / 100
        return exponent == 0 ? "\(rounded)" : "\(rounded)e\(exponent)"
    }

    // MARK: JSON

    /// `{"strategy":, "runs":, "failures": [{"signature":, "message":,
    /// "count":, "first_run":, "schedule":, "preemptions":}]}` (SPEC §12),
    /// with what merging needs besides.
    var json: String {
        var fields = [
            "\"strategy\": \(jsonString(strategy.rawValue))",
            "\"runs\": \(runs)",
            "\"tasks\": \(tasks)",
            "\"steps\": \(steps)",
            "\"depth\": \(depth)",
            "\"preemption_bound\": \(preemptionBound)",
            "\"exhaustive\": \(exhaustive)",
        ]
        if strategy == .pct { fields.append("\"pct_bound\": \(pctBound)") }
        if let stoppedEarly { fields.append("\"stopped_by\": \(jsonString(stoppedEarly))") }
        if !missing.isEmpty { fields.append("\"missing\": [\(missing.map(jsonString).joined(separator: ", "))]") }
        let failures = groups.map { g in
            let final = g.shrunk ?? g.schedule
            var f = [
                "\"signature\": \(jsonString(g.failure.signature))",
                "\"kind\": \(jsonString(g.failure.kind))",
                "\"site\": \(jsonString(g.failure.site))",
                "\"message\": \(jsonString(g.failure.message))",
                "\"count\": \(g.count)",
                "\"first_run\": \(g.firstRun)",
                "\"schedule\": \((g.shrunkPath ?? g.path).map(jsonString) ?? "null")",
                "\"preemptions\": \(final.filter(\.isPreemption).count)",
                "\"decisions\": [\(g.schedule.map { jsonString($0.description) }.joined(separator: ", "))]",
            ]
            if let shrunk = g.shrunk {
                f.append("\"shrunk\": [\(shrunk.map { jsonString($0.description) }.joined(separator: ", "))]")
            }
            return "    {" + f.joined(separator: ", ") + "}"
        }
        fields.append("\"failures\": [\n" + failures.joined(separator: ",\n") + (failures.isEmpty ? "]" : "\n  ]"))
        return "{\n  " + fields.joined(separator: ",\n  ") + "\n}\n"
    }

    /// Reads what `json` wrote; `name` is the file's, for messages.
    init(json text: String, name: String) throws(UsageError) {
        let value: Json
        switch Json.parse(text) {
        case .success(let v): value = v
        case .failure(let e): throw UsageError("\(name): not an explore report (byte \(e.offset): \(e.reason))")
        }
        guard let s = value["strategy"]?.string, let strategy = Explorer.Strategy(rawValue: s),
              let runs = value["runs"]?.int, let failures = value["failures"]?.array else {
            throw UsageError("\(name): not an explore report (it needs strategy, runs and failures)")
        }
        self.init(strategy: strategy, depth: value["depth"]?.int ?? 3, preemptionBound: value["preemption_bound"]?.int ?? 2)
        self.runs = runs
        tasks = value["tasks"]?.int ?? 0
        steps = value["steps"]?.int ?? 0
        if case .bool(let b)? = value["exhaustive"] { exhaustive = b }
        stoppedEarly = value["stopped_by"]?.string
        missing = value["missing"]?.array?.compactMap(\.string) ?? []
        for f in failures {
            guard let kind = f["kind"]?.string, let message = f["message"]?.string, let site = f["site"]?.string,
                  let count = f["count"]?.int, let first = f["first_run"]?.int, let lines = f["decisions"]?.array else {
                throw UsageError("\(name): a failure without kind, message, site, count, first_run and decisions")
            }
            var decisions: [Decision] = []
            for line in lines {
                guard let text = line.string, let d = Decision(line: text) else {
                    throw UsageError("\(name): not a scheduling decision: \(line)")
                }
                decisions.append(d)
            }
            groups.append(Group(failure: Failure(kind: kind, message: message, site: site), count: count,
                                firstRun: first, schedule: decisions))
        }
    }
}
