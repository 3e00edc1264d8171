#if canImport(Glibc)
import Glibc
#endif
import MMCore

/// `mmlab explore`: runs a script many times, each on a fresh machine under
/// a different schedule, and groups what failed (SPEC §12).
public struct Explorer {
    public enum Strategy: String, CaseIterable, Sendable {
        case random, pct, dfs
    }

    public struct Options {
        public var strategy = Strategy.pct
        public var runs = 100
        public var depth = 3
        public var preemptions = 2
        /// Each run's machine; its seed is the exploration's seed too.
        public var configuration = Engine.Configuration()
        public var stopAtFirst = false
        public var timeLimit: Double?
        public var script = ""
        public var arguments: [String] = []
        /// The runs this process does, of `runs` (a chunk of a plan).
        public var range: Range<Int>?
        public init() {}
    }

    public var options: Options
    public init(options: Options) { self.options = options }

    // MARK: One run

    /// What one run did.
    struct Run {
        var failure: Failure?
        var decisions: [Decision]
        var tasks: Int
        var points: Int
        var divergences: [String] = []
    }

    /// Runs the script once under `controller`, its output silenced.
    func execute(_ controller: ScheduleController) -> Run {
        var configuration = options.configuration
        configuration.outputDirectory = nil
        configuration.resultsPath = nil
        configuration.tracePath = nil
        if configuration.limits.maxInstructions == nil && configuration.limits.timeout == nil {
            configuration.limits.maxInstructions = Self.defaultInstructions  // a run that never ends is a failure, not a hang
        }
        let silence = Silence()
        defer { silence.end() }
        let engine: Engine
        do { engine = try Engine(configuration: configuration) } catch {
            return Run(failure: Failure(error), decisions: [], tasks: 0, points: 0)
        }
        defer { engine.close() }
        engine.quiet = true
        engine.runtime.state.pointee.contained = 1
        engine.scheduleController = controller
        engine.setArgTable([options.script] + options.arguments, scriptIndex: 0)
        var failure: Failure?
        do {
            // A regression file explores too: its cases run in order, and a failing one fails the run.
            try engine.run(string: TestRunner.helpers + "\nfunction test(name, fn) fn() end", name: "=[explore]")
            try engine.run(file: options.script, arguments: options.arguments)
            if let broken = engine.brokenInvariant() {
                failure = Failure(kind: "check", message: Failure.normalize(broken), site: "")
            } else if configuration.strict {
                if let leaks = engine.leakReport() {
                    failure = Failure(kind: "leak", message: leaks.split(separator: "\n").dropFirst().first.map { String($0).trimmingSpaces } ?? leaks, site: "")
                } else if engine.strictViolations > 0 {
                    failure = Failure(kind: "strict", message: "a warning under --strict (a guard dropped by the collector, or tasks blocked at exit)", site: "")
                }
            }
        } catch {
            failure = Failure(error)
        }
        let scheduler = engine.runtime.booted?.scheduler
        return Run(failure: failure, decisions: scheduler?.decisions ?? [], tasks: scheduler?.spawned ?? 1,
                   points: scheduler?.points ?? 0)
    }

    /// VM instructions a run may take when no limit is given.
    static let defaultInstructions: UInt64 = 50_000_000

    // MARK: Exploring

    /// Runs the strategy over this process's runs; the report, unshrunk.
    public func explore() -> Report {
        var report = Report(strategy: options.strategy, depth: options.depth, preemptionBound: options.preemptions)
        let clock = Stopwatch()
        let range = options.range ?? 0..<options.runs
        func outOfTime() -> Bool { options.timeLimit.map { clock.seconds >= $0 } ?? false }
        switch options.strategy {
        case .random, .pct:
            // The default schedule first: PCT draws its change points among its k steps,
            // and a script that fails there needs no interleaving to fail (it is said at once).
            let calibration = execute(DfsStrategy(prefix: []))
            let k = max(1, calibration.points)
            report.tasks = calibration.tasks
            report.steps = k
            if calibration.failure != nil {
                report.add(calibration, number: 0)
                report.runs = 0
                report.stoppedEarly = "the default schedule failing"
                return report
            }
            for i in range {
                if outOfTime() { report.stoppedEarly = "the --time-limit"; break }
                let seed = Self.runSeed(options.configuration.seed, i)
                let controller: ScheduleController = options.strategy == .pct
                    ? PctStrategy(seed: seed, depth: options.depth, steps: k) : RandomStrategy(seed: seed)
                let run = execute(controller)
                report.add(run, number: i + 1)
                if options.strategy == .random {
                    report.tasks = max(report.tasks, run.tasks)
                    report.steps = max(report.steps, run.points)
                }
                if options.stopAtFirst && run.failure != nil { break }
            }
        case .dfs:
            exploreDepthFirst(&report, outOfTime: outOfTime)
        }
        return report
    }

    /// Iterative preemption bounding (CHESS): every schedule with no
    /// preemption, then those with one, ... up to the bound; branches that
    /// need more preemptions wait for their round instead of running twice.
    private func exploreDepthFirst(_ report: inout Report, outOfTime: () -> Bool) {
        let bound = options.preemptions
        var rounds: [[(prefix: [Int], preemptions: Int)]] = Array(repeating: [], count: bound + 1)
        rounds[0] = [([], 0)]
        var number = 0
        for round in 0...bound {
            var stack = rounds[round]
            while let (prefix, _) = stack.popLast() {
                if number >= options.runs { report.stoppedEarly = "--runs \(options.runs)"; return }
                if outOfTime() { report.stoppedEarly = "the --time-limit"; return }
                let dfs = DfsStrategy(prefix: prefix)
                var run = execute(dfs)
                number += 1
                if let divergence = dfs.divergence {
                    run.failure = Failure(kind: "nondeterministic", message: "the script took another path on the same schedule: \(divergence)", site: "")
                }
                report.add(run, number: number)
                report.tasks = max(report.tasks, run.tasks)
                report.steps = max(report.steps, run.points)
                if options.stopAtFirst && run.failure != nil { return }
                // Branch at every point past the prefix, deepest first on the stack.
                var preemptions = 0
                let trail = dfs.trail
                for (i, point) in trail.enumerated() {
                    if i >= prefix.count {
                        for alternative in 0..<point.count where alternative != point.chosen {
                            let cost = preemptions + (point.preemptive && alternative != 0 ? 1 : 0)
                            guard cost <= bound else { continue }
                            let branch = (trail[..<i].map(\.chosen) + [alternative], cost)
                            if cost == round { stack.append(branch) } else { rounds[cost].append(branch) }
                        }
                    }
                    if point.preemptive && point.chosen != 0 { preemptions += 1 }
                }
            }
        }
        report.exhaustive = true
    }

    /// Run `i`'s strategy seed: the exploration's seed and the run number mixed.
    static func runSeed(_ seed: UInt64, _ i: Int) -> UInt64 {
        var random = Random(seed: seed &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15)
        return random.next()
    }

    // MARK: Replay and shrinking

    /// Replays `decisions` once.
    func replay(_ decisions: [Decision]) -> Run {
        let strategy = ReplayStrategy(ScheduleFile(decisions: decisions))
        var run = execute(strategy)
        strategy.finish()
        run.divergences = strategy.divergences
        return run
    }

    /// Delta debugging over a failing schedule's decisions: the smallest
    /// schedule found that still fails with `signature`, preferring fewest
    /// preemptions, then fewest tasks switched to, then fewest decisions.
    func shrink(_ decisions: [Decision], signature: String, budget: Int = 400) -> [Decision] {
        var best = decisions
        var left = budget
        func cost(_ d: [Decision]) -> (Int, Int, Int) {
            (d.filter(\.isPreemption).count, Set(d.map(\.next)).count, d.count)
        }
        /// The run's own schedule if removing `drop` still fails the same way and costs no more.
        func attempt(_ drop: Set<Int>) -> Bool {
            guard left > 0 else { return false }
            left -= 1
            let candidate = best.enumerated().filter { !drop.contains($0.offset) }.map(\.element)
            let run = replay(candidate)
            guard run.failure?.signature == signature, cost(run.decisions) < cost(best) else { return false }
            best = run.decisions
            return true
        }
        for preemptionsOnly in [true, false] {
            var n = 2
            while left > 0 {
                let indices = best.indices.filter { !preemptionsOnly || best[$0].isPreemption }
                guard !indices.isEmpty else { break }
                n = min(n, indices.count)
                let size = (indices.count + n - 1) / n
                var reduced = false
                for start in stride(from: 0, to: indices.count, by: size) {
                    if attempt(Set(indices[start..<min(start + size, indices.count)])) {
                        reduced = true
                        break
                    }
                }
                if reduced {
                    n = max(n - 1, 2)
                } else if n >= indices.count {
                    break
                } else {
                    n = min(indices.count, n * 2)
                }
            }
        }
        return best
    }
}

/// Why a run failed, and the signature that groups it with others.
struct Failure: Equatable {
    /// `bug`, `lockdep`, an errno name (`EDEADLK`), `error`, `limit`,
    /// `check`, `leak`, `strict`, `nondeterministic`.
    let kind: String
    /// The first line of the message, addresses taken out.
    let message: String
    /// The script line it names (`abba.lua:14`), or "".
    let site: String

    var signature: String { site.isEmpty ? "\(kind): \(message)" : "\(kind) at \(site): \(message)" }

    init(kind: String, message: String, site: String) {
        self.kind = kind
        self.message = message
        self.site = site
    }

    init(_ error: EngineError) {
        let first = String(error.message.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
        let kind: String
        if let k = error.kernelError {
            if let errno = k.errno { kind = errno.name }
            else if k.message.contains("locking") { kind = "lockdep" }
            else if k.message.hasPrefix("kernel.debug.check") { kind = "check" }
            else { kind = "bug" }
        } else if first.hasSuffix("--max-instructions limit") || first.hasSuffix("--timeout") {
            kind = "limit"
        } else {
            kind = "error"
        }
        self.init(kind: kind, message: Failure.normalize(first), site: Failure.site(in: first))
    }

    /// Takes hexadecimal addresses out (`0x7f3a000` → `0x…`) and shortens
    /// script paths to their file names, as schedules name them.
    static func normalize(_ message: String) -> String {
        var out = ""
        var chars = Array(message)
        var i = 0
        while i < chars.count {
            if chars[i] == "0", i + 2 < chars.count, chars[i + 1] == "x", chars[i + 2].isHexDigit {
                out += "0x…"
                i += 2
                while i < chars.count, chars[i].isHexDigit { i += 1 }
                continue
            }
            out.append(chars[i])
            i += 1
        }
        chars = Array(out)
        // "/a/b/x.lua:3" → "x.lua:3"
        var result = ""
        var word = ""
        for c in chars + [" "] {
            if c == " " || c == "(" || c == ")" || c == "," || c == ";" || c == "'" {
                if word.contains(".lua"), let slash = word.lastIndex(of: "/") { word = String(word[word.index(after: slash)...]) }
                result += word
                word = ""
                result.append(c)
            } else {
                word.append(c)
            }
        }
        return String(result.dropLast())
    }

    /// The first `file.lua:N` the message names, by file name.
    static func site(in message: String) -> String {
        for word in normalize(message).split(whereSeparator: { " ()',;".contains($0) }) {
            let parts = word.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count >= 2, parts[0].hasSuffix(".lua"), Int(parts[1]) != nil { return "\(parts[0]):\(parts[1])" }
        }
        return ""
    }
}

/// A wall-clock stopwatch, for `--time-limit` only (never the model's).
struct Stopwatch {
    private let start = Stopwatch.now()
    private static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
    var seconds: Double { Stopwatch.now() - start }
}

/// Standard output goes to /dev/null while it lives: the runs' prints.
final class Silence {
    private var saved: Int32 = -1

    init() {
        fflush(stdout)
        let null = open("/dev/null", O_WRONLY)
        guard null >= 0 else { return }
        saved = dup(1)
        dup2(null, 1)
        close(null)
    }

    func end() {
        guard saved >= 0 else { return }
        fflush(stdout)
        dup2(saved, 1)
        close(saved)
        saved = -1
    }
}
