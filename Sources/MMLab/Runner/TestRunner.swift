#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim

/// `mmlab test`: runs regression files, each in a fresh engine. Inside a
/// file, `test(name, fn)` declares and runs a case; a file without cases
/// is one case. Prints a line per case (TAP with `tap`) and last
/// `N passed, N failed`.
public struct TestRunner {
    public var configuration: Engine.Configuration
    public var tap: Bool
    /// `--schedule`: every file's engine replays it.
    public var schedule: ScheduleFile?

    public init(configuration: Engine.Configuration = Engine.Configuration(), tap: Bool = false) {
        self.configuration = configuration
        self.tap = tap
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
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var found: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            guard !name.hasPrefix(".") else { continue }
            let path = directory.hasSuffix("/") ? directory + name : directory + "/" + name
            if entry.pointee.d_type == UInt8(DT_DIR) {
                found += luaFiles(under: path)
            } else if name.hasSuffix(".lua") {
                found.append(path)
            }
        }
        return found
    }

    /// Runs the files; returns how many cases passed and failed.
    @discardableResult
    public func run(files: [String]) -> (passed: Int, failed: Int) {
        let report = Report(tap: tap)
        if tap { report.emit("TAP version 13") }
        for (i, file) in files.enumerated() {
            report.position = "[\(i + 1)/\(files.count)]"
            run(file: file, report: report)
        }
        report.progress.clear()
        if tap { report.emit("1..\(report.passed + report.failed)") }
        report.emit("\(report.passed) passed, \(report.failed) failed")
        return (report.passed, report.failed)
    }

    private func run(file: String, report: Report) {
        let before = report.passed + report.failed
        report.file = file
        report.starting(nil)
        do {
            let engine = try Engine(configuration: configuration)
            defer { engine.close() }
            let replay = schedule.map(ReplayStrategy.init)
            engine.scheduleController = replay
            defer {
                replay?.finish()
                for line in replay?.divergences ?? [] { fputs("mmlab: warning: schedule \(line)\n", stderr) }
            }
            engine.runtime.testReport = report
            let lua = Lua(engine.runtime.L)
            lua.pushBinding(TestRunner.test, name: "test")
            lua_setglobal(lua.L, "test")
            try engine.run(string: TestRunner.helpers, name: "=[test helpers]")
            do {
                try engine.run(file: file)
                if report.passed + report.failed == before { report.record("(file)", failure: nil) }
            } catch {
                report.record("(file)", failure: error.message + "\n" + error.traceback)
            }
            if configuration.strict, let leaks = engine.leakReport() {
                report.record("(leaks)", failure: leaks)
            }
        } catch {
            report.record("(file)", failure: error.message)
        }
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
        function expect_eq(got, want, what)
          if got ~= want then
            error(("%sexpected %s, got %s"):format(what and what .. ": " or "", tostring(want), tostring(got)), 2)
          end
        end
        """

    /// `test(name, fn)`: runs `fn` under a protected call and reports it.
    static let test: Binding = { L in
        bind(L) { lua in
            let name = try lua.string(1)
            try lua.checkFunction(2)
            lua.runtime.testReport?.starting(name)
            lua_settop(L, 2)
            lua_pushvalue(L, 2)
            return lua.pcall(arguments: 0) { lua, status, _ in
                let failure = status == LUA_OK ? nil : lua.runtime.errorMessage(lua, at: -1)
                lua.runtime.testReport?.record(name, failure: failure)
                return 0
            }
        }
    }

    /// The lines a run prints, and its counts. On a terminal, a progress
    /// line on stderr names the file and case running.
    final class Report {
        let tap: Bool
        var file = ""
        var passed = 0, failed = 0
        /// `[3/21]`: which file of how many.
        var position = ""
        let progress = Progress()

        init(tap: Bool) { self.tap = tap }

        /// A case (or, with nil, a file) starts.
        func starting(_ name: String?) {
            progress.status("\(position) \(file)\(name.map { ": " + $0 } ?? "")  (\(passed) passed, \(failed) failed)")
        }

        func record(_ name: String, failure: String?) {
            let label = "\(file): \(name)"
            if let failure {
                failed += 1
                let detail = failure.split(separator: "\n", omittingEmptySubsequences: false)
                if tap {
                    emit("not ok \(passed + failed) - \(label)")
                    for line in detail { emit("  # \(line)") }
                } else {
                    emit("FAIL \(label)")
                    for line in detail { emit("     \(line)") }
                }
            } else {
                passed += 1
                emit(tap ? "ok \(passed + failed) - \(label)" : "ok   \(label)")
            }
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
