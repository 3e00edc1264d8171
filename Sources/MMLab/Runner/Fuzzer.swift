#if canImport(Glibc)
import Glibc
#endif
import MMCore

/// `mmlab fuzz`: calls every bound function, method and metamethod with
/// random and hostile arguments (the driver is fuzz.lua), in rounds of a
/// fresh engine each, seeded `seed`, `seed + 1`, ... A round fails when a
/// call raises something other than a string or a `kernel.Error`, or when,
/// once every handle is dropped, native objects are still alive, the
/// machine's invariants break, or pages are missing. The host crashing is
/// the failure the process running it sees.
public struct Fuzzer {
    public var seed: UInt64
    public var calls: Int
    /// The driver prints each call (FUZZ_TRACE).
    public var printCalls: Bool
    /// Calls per round: a failure replays with `--seed` of its round and
    /// `--calls` of at most this.
    public static let roundCalls = 5000

    public init(seed: UInt64 = 1, calls: Int = 10000, printCalls: Bool = false) {
        self.seed = seed
        self.calls = calls
        self.printCalls = printCalls
    }

    /// What the rounds did.
    public struct Report {
        public var calls = 0, returned = 0, kernelErrors = 0, bugs = 0, luaErrors = 0
        public var errnos: [String: Int] = [:]
        /// "seed N: what went wrong".
        public var failures: [String] = []
        public var rounds = 0
        /// Rounds whose tasks ended in a deadlock (EDEADLK), which leaves
        /// what they hold: the accounting of those is not checked.
        public var deadlocked = 0
    }

    /// Runs the rounds; `progress(done, total)` after each.
    public func run(progress: (Int, Int) -> Void = { _, _ in }) -> Report {
        var report = Report()
        var left = calls
        var round: UInt64 = 0
        while left > 0 {
            let n = min(left, Fuzzer.roundCalls)
            runRound(seed: seed &+ round, calls: n, into: &report)
            left -= n
            round += 1
            progress(calls - left, calls)
        }
        return report
    }

    private func runRound(seed: UInt64, calls: Int, into report: inout Report) {
        report.rounds += 1
        let configuration = Engine.Configuration(memory: 64 << 20, cpus: Int(seed % 4) + 1, seed: seed,
                                                 ignoreEnvironment: true)
        let where_ = "seed \(seed) (mmlab fuzz --seed \(seed) --calls \(calls))"
        let engine: Engine
        do { engine = try Engine(configuration: configuration) } catch {
            report.failures.append("\(where_): no engine: \(error.message)")
            return
        }
        defer { engine.close() }
        engine.quiet = !printCalls
        // What the end of the script raises (the failure of a task nobody
        // joined) matters only if the driver did not finish or say why.
        var ended: EngineError?
        do {
            try engine.run(string: "FUZZ_CALLS = \(calls) FUZZ_TRACE = \(printCalls)")
            try engine.run(string: String(decoding: PackageResources.fuzz_lua, as: UTF8.self), name: "=fuzz")
        } catch {
            ended = error
        }
        guard let result = try? engine.evaluate("FUZZ_RESULT"), case .table = result else {
            report.failures.append("\(where_): the driver failed: \(ended.map { "\($0)" } ?? "no result")")
            return
        }
        report.calls += result["calls"].intValue ?? 0
        report.returned += result["returned"].intValue ?? 0
        report.kernelErrors += result["kernel_errors"].intValue ?? 0
        report.bugs += result["bugs"].intValue ?? 0
        report.luaErrors += result["lua_errors"].intValue ?? 0
        if case .table(let errnos) = result["errnos"] {
            for (name, count) in errnos { report.errnos[name.stringValue ?? "?", default: 0] += count.intValue ?? 0 }
        }
        if case .table(let failures) = result["failures"] {
            let sorted = failures.sorted { ($0.key.intValue ?? 0) < ($1.key.intValue ?? 0) }
            for (_, failure) in sorted { report.failures.append("\(where_): \(failure.stringValue ?? "?")") }
        }
        if result["deadlocked"] == .boolean(true) {
            // Tasks stuck in a deadlock the calls made: what they hold stays.
            report.deadlocked += 1
        } else {
            if let ended { report.failures.append("\(where_): the run ended with: \(ended.message)") }
            // The same checks from Swift, past the Lua side.
            let leaks = engine.leaks()
            if !leaks.isEmpty { report.failures.append("\(where_): \(leaks.count) native objects leaked") }
        }
        do { try engine.machine.checkConsistency() } catch {
            report.failures.append("\(where_): \(error)")
        }
    }
}
