#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim

/// `mmlab test`: runs regression files. Inside a file, `test(name, fn)`
/// declares a case; each case runs on a machine of its own, as KUnit runs
/// every case between its own init and exit: the file's top level runs
/// once to find the cases, then again for each, where only that case's
/// `fn` runs. A file without cases is one case. Prints a line per case
/// (TAP or KTAP when asked) and last `N passed, N failed`.
public struct TestRunner {
    public enum Format: Sendable { case plain, tap, ktap }

    public var configuration: Engine.Configuration
    public var format: Format
    /// `--schedule`: every case's engine replays it.
    public var schedule: ScheduleFile?
    /// `--jobs`: files run in this many worker processes, and print in order.
    public var jobs = 1
    /// The options a worker process gets (`--seed`, `--strict`, ...).
    public var workerOptions: [String] = []

    public init(configuration: Engine.Configuration = Engine.Configuration(), format: Format = .plain) {
        self.configuration = configuration
        self.format = format
    }

    /// The `.lua` files named, directories searched recursively, in order.
    public static func files(_ paths: [String]) throws(UsageError) -> [String] {
        var files: [String] = []
        for path in paths {
            var st = stat()
            guard stat(path, &st) == 0 else { throw UsageError("no such file or directory: \(path)") }
            if st.st_mode & S_IFMT == S_IFDIR {
                files += luaFiles(under: path).sorted()
            } else {
                files.append(path)
            }
        }
        return files
    }

    private static func luaFiles(under directory: String) -> [String] {
        listFiles(directory).flatMap { path in
            isDirectory(path) ? luaFiles(under: path) : path.hasSuffix(".lua") ? [path] : []
        }
    }

    /// What became of one case.
    struct Outcome: Equatable {
        var name: String
        var failure: String?
        /// `skip(reason)` ended it.
        var skip: String?
    }

    /// Runs the files; returns how many cases passed and failed.
    @discardableResult
    public func run(files: [String]) -> (passed: Int, failed: Int) {
        let report = Report(format: format, files: files.count)
        if jobs > 1 && files.count > 1 {
            for (i, (file, outcomes)) in inWorkers(files).enumerated() {
                report.suite(file, outcomes, index: i + 1)
            }
        } else {
            for (i, file) in files.enumerated() {
                report.position = "[\(i + 1)/\(files.count)]"
                report.suite(file, outcomes(of: file, report: report), index: i + 1)
            }
        }
        report.finish()
        return (report.passed, report.failed)
    }

    /// A file's cases, each run on a fresh machine.
    func outcomes(of file: String, report: Report? = nil) -> [Outcome] {
        report?.starting(file, nil)
        let found = runFile(file, target: nil)
        guard !found.names.isEmpty else {
            var failure = found.topLevel
            if failure == nil, configuration.strict, let leaks = found.leaks { failure = leaks }
            return [Outcome(name: "(file)", failure: failure)]
        }
        var outcomes: [Outcome] = []
        if let error = found.topLevel { outcomes.append(Outcome(name: "(file)", failure: error)) }
        for (i, name) in found.names.enumerated() {
            report?.starting(file, name)
            let run = runFile(file, target: i)
            var outcome = run.outcome ?? Outcome(name: name, failure: found.topLevel == nil
                ? run.topLevel ?? "the case did not run: the file's top level took another path than when its cases were counted"
                : "the case did not run: the file's top level failed first")
            if outcome.failure == nil, outcome.skip == nil, let leaks = run.leaks {
                if configuration.strict {
                    outcome.failure = leaks
                } else {
                    fputs("mmlab: warning: \(file): case '\(name)' left native objects alive:\n" + leaks.split(separator: "\n").dropFirst().joined(separator: "\n") + "\n", stderr)
                }
            }
            outcomes.append(outcome)
        }
        return outcomes
    }

    /// What one run of a file found: the cases it declared, what became of
    /// the one it ran, an error of its top level, what it left alive.
    final class CaseRun {
        /// The case to run (its index among the file's `test` calls); nil: count them.
        let target: Int?
        var names: [String] = []
        var outcome: Outcome?
        var topLevel: String?
        var leaks: String?
        init(target: Int?) { self.target = target }
    }

    private func runFile(_ file: String, target: Int?) -> CaseRun {
        let run = CaseRun(target: target)
        do {
            let engine = try Engine(configuration: configuration)
            defer { engine.close() }
            let replay = target == nil ? nil : schedule.map(ReplayStrategy.init)
            engine.scheduleController = replay
            engine.runtime.testCase = run
            let lua = Lua(engine.runtime.L)
            lua.pushBinding(TestRunner.test, name: "test")
            lua_setglobal(lua.L, "test")
            try engine.run(string: TestRunner.helpers, name: "=[test helpers]")
            do { try engine.run(file: file) } catch { run.topLevel = error.message + "\n" + error.traceback }
            if target != nil || run.names.isEmpty { run.leaks = engine.leakReport() }
            replay?.finish()
            for line in replay?.divergences ?? [] { fputs("mmlab: warning: schedule \(line)\n", stderr) }
        } catch {
            run.topLevel = error.message
        }
        return run
    }

    // MARK: Worker processes

    /// Runs the files in `jobs` processes of this program; their outcomes, in file order.
    private func inWorkers(_ files: [String]) -> [(String, [Outcome])] {
        let jobs = min(self.jobs, files.count)
        let chunks = (1...jobs).map { i in Array(files[Explorer.chunk(i, of: jobs, runs: files.count)]) }
        var results: [(String, [Outcome])] = []
        let outcomes: [(Int, Result<String, UsageError>)]
        do {
            outcomes = try Chunks.runWorkers(jobs) { i, _, path in ["test"] + workerOptions + ["--worker-out", path, "--"] + chunks[i - 1] }
        } catch {
            return files.map { ($0, [Outcome(name: "(file)", failure: error.message)]) }
        }
        for (i, outcome) in outcomes {
            let mine = chunks[i - 1]
            do throws(UsageError) {
                let decoded = try Self.decode(try outcome.get())
                for file in mine { results.append((file, decoded[file] ?? [Outcome(name: "(file)", failure: "its worker reported nothing for it")])) }
            } catch {
                for file in mine { results.append((file, [Outcome(name: "(file)", failure: "its worker \(error.message)")])) }
            }
        }
        return results
    }

    /// A worker's part: each file's outcomes, as JSON, to `path`.
    public func runWorker(files: [String], to path: String) throws(UsageError) {
        var lines: [String] = []
        for file in files {
            let cases = outcomes(of: file).map { o in
                "{\"name\": \(jsonString(o.name)), \"failure\": \(o.failure.map(jsonString) ?? "null"), \"skip\": \(o.skip.map(jsonString) ?? "null")}"
            }
            lines.append("{\"file\": \(jsonString(file)), \"cases\": [\(cases.joined(separator: ", "))]}")
        }
        do {
            let out = try OutputFile(path: path)
            out.write("[\n" + lines.joined(separator: ",\n") + "\n]\n")
            try out.commit()
        } catch {
            throw UsageError(error.message)
        }
    }

    private static func decode(_ text: String) throws(UsageError) -> [String: [Outcome]] {
        guard case .success(let value) = Json.parse(text), let files = value.array else { throw UsageError("wrote no report") }
        var out: [String: [Outcome]] = [:]
        for f in files {
            guard let file = f["file"]?.string, let cases = f["cases"]?.array else { throw UsageError("wrote a broken report") }
            out[file] = cases.map { Outcome(name: $0["name"]?.string ?? "?", failure: $0["failure"]?.string, skip: $0["skip"]?.string) }
        }
        return out
    }

    /// Globals for regressions: `expect_error(expected, fn, ...)` calls
    /// `fn(...)` and returns its error, which must be a `kernel.Error` with
    /// errno `expected`, a bug error when `expected` is "BUG", or an error
    /// whose text contains `expected`; `expect_eq(got, want, what)`;
    /// `here()`, the caller's position (`Tests/lua/x.lua:12`), as error
    /// messages and sites name it; `until_blocked(task)` lets the other
    /// tasks run until `task` blocks.
    static let helpers = """
        function here()
          local info = debug.getinfo(2, "Sl")
          return ("%s:%d"):format(info.short_src, info.currentline)
        end
        function until_blocked(task)
          for _ = 1, 1000 do
            if task:state() == "blocked" then return end
            kernel.sched.yield()
          end
          error("task '" .. task:name() .. "' never blocked: " .. task:state(), 2)
        end
        function expect_error(expected, fn, ...)
          local ok, err = pcall(fn, ...)
          if ok then error(("expected %s, but the call succeeded"):format(expected), 2) end
          if type(err) == "table" and getmetatable(err) == kernel.Error then
            if err.errno == expected or (expected == "BUG" and err.bug) then return err end
          end
          if tostring(err):find(expected, 1, true) then return err end
          error(("expected %s, got %s"):format(expected, tostring(err)), 2)
        end
        local skipped = setmetatable({}, {__name = "mmlab.skip"})
        function skip(reason)
          error(setmetatable({reason = tostring(reason or "")}, getmetatable(skipped)), 2)
        end
        function expect_eq(got, want, what)
          if got ~= want then
            error(("%sexpected %s, got %s"):format(what and what .. ": " or "", tostring(want), tostring(got)), 2)
          end
        end
        """

    /// `test(name, fn)`: while the cases are counted, notes the name; in
    /// the run of this case, calls `fn` protected and keeps its outcome.
    static let test: Binding = { L in
        bind(L) { lua in
            let name = try lua.string(1)
            try lua.checkFunction(2)
            guard let run = lua.runtime.testCase else { return 0 }
            let index = run.names.count
            run.names.append(name)
            guard index == run.target else { return 0 }
            lua_settop(L, 2)
            lua_pushvalue(L, 2)
            return lua.pcall(arguments: 0) { lua, status, _ in
                var outcome = Outcome(name: name)
                if status != LUA_OK {
                    if let reason = TestRunner.skipReason(lua, at: -1) { outcome.skip = reason }
                    else { outcome.failure = lua.runtime.errorMessage(lua, at: -1) }
                }
                run.outcome = outcome
                return 0
            }
        }
    }

    /// The reason of a `skip(reason)` error value, if it is one.
    static func skipReason(_ lua: Lua, at idx: Int32) -> String? {
        let idx = lua.absIndex(idx)
        guard lua_type(lua.L, idx) == LUA_TTABLE, lua_getmetatable(lua.L, idx) != 0 else { return nil }
        lua.getField(-1, "__name")
        let isSkip = lua.string(at: -1) == "mmlab.skip"
        lua.pop(2)
        guard isSkip else { return nil }
        lua.getField(idx, "reason")
        defer { lua.pop() }
        return lua.string(at: -1) ?? ""
    }

    /// The lines a run prints, and its counts. On a terminal, a progress
    /// line on stderr names the file and case running.
    final class Report {
        let format: Format
        let files: Int
        var passed = 0, failed = 0, skipped = 0
        /// `[3/21]`: which file of how many.
        var position = ""
        let progress = Progress()

        init(format: Format, files: Int) {
            self.format = format
            self.files = files
            switch format {
            case .plain: break
            case .tap: emit("TAP version 13")
            case .ktap:
                emit("KTAP version 1")
                emit("1..\(files)")
            }
        }

        /// A case (or, with nil, a file) starts.
        func starting(_ file: String, _ name: String?) {
            progress.status("\(position) \(file)\(name.map { ": " + $0 } ?? "")  (\(passed) passed, \(failed) failed)")
        }

        /// A file's cases, printed together (`index`: the file's number, for KTAP).
        func suite(_ file: String, _ outcomes: [Outcome], index: Int) {
            if format == .ktap {
                emit("    KTAP version 1")
                emit("    # Subtest: \(Self.ktapName(file))")
                emit("    1..\(outcomes.count)")
            }
            var suitePassed = 0, suiteFailed = 0, suiteSkipped = 0
            for (i, o) in outcomes.enumerated() {
                let label = "\(file): \(o.name)"
                let detail = o.failure.map { $0.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) } ?? []
                if o.failure != nil { failed += 1; suiteFailed += 1 } else if o.skip != nil { skipped += 1; suiteSkipped += 1 } else { passed += 1; suitePassed += 1 }
                switch format {
                case .plain:
                    if o.failure != nil {
                        emit("FAIL \(label)")
                        for line in detail { emit("     \(line)") }
                    } else if let reason = o.skip {
                        emit("skip \(label)" + (reason.isEmpty ? "" : " (\(reason))"))
                    } else {
                        emit("ok   \(label)")
                    }
                case .tap:
                    let n = passed + failed + skipped
                    if o.failure != nil {
                        emit("not ok \(n) - \(label)")
                        for line in detail { emit("  # \(line)") }
                    } else {
                        emit("ok \(n) - \(label)" + (o.skip.map { " # SKIP \($0)" } ?? ""))
                    }
                case .ktap:
                    let name = Self.ktapName(o.name)
                    for line in detail { emit("    # \(name): \(line)") }
                    let result = o.failure != nil ? "not ok" : "ok"
                    emit("    \(result) \(i + 1) \(name)" + (o.skip.map { " # SKIP \(Self.ktapName($0))" } ?? ""))
                }
            }
            if format == .ktap {
                emit("# \(Self.ktapName(file)): pass:\(suitePassed) fail:\(suiteFailed) skip:\(suiteSkipped) total:\(outcomes.count)")
                emit("\(suiteFailed > 0 ? "not ok" : "ok") \(index) \(Self.ktapName(file))")
            }
        }

        /// The last lines: TAP's plan, KTAP's totals, the counts.
        func finish() {
            progress.clear()
            let counts = "\(passed) passed, \(failed) failed" + (skipped > 0 ? ", \(skipped) skipped" : "")
            switch format {
            case .plain: emit(counts)
            case .tap:
                emit("1..\(passed + failed + skipped)")
                emit("# \(counts)")
            case .ktap:
                emit("# Totals: pass:\(passed) fail:\(failed) skip:\(skipped) total:\(passed + failed + skipped)")
            }
        }

        /// A name as a KTAP line may carry it: a `#` would start a directive.
        static func ktapName(_ name: String) -> String {
            String(name.map { $0 == "#" || $0 == "\n" ? " " : $0 })
        }

        func emit(_ line: String) {
            progress.clear()
            fputs(line + "\n", stdout)
            fflush(stdout)
        }
    }
}

extension Runtime {
    /// An error value as a message: a string as is, a `kernel.Error` as
    /// `where EINVAL: message`, anything else by its type.
    func errorMessage(_ lua: Lua, at idx: Int32) -> String {
        let idx = lua.absIndex(idx)
        if let s = lua.string(at: idx) { return s }
        if let error = kernelError(lua, at: idx) {
            lua.getField(idx, "where")
            let position = lua.string(at: -1).map { $0 + " " } ?? ""
            lua.pop()
            return position + "\(error)"
        }
        return "(error object is a \(lua.typeName(idx)) value)"
    }
}
