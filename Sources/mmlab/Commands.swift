#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MMLab

/// The `mmlab` command and its subcommands.
struct MMLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmlab",
        abstract: "Experiment with Linux kernel memory management in Lua, without booting a kernel.",
        usage: """
            mmlab [options] [script [args]]
              mmlab <subcommand> [options] ...
            """,
        discussion: """
            With no subcommand, mmlab is the standalone Lua 5.4 interpreter with a simulated machine behind the `kernel` table: -e stat, -l mod, -l g=mod, -i, -v, -E, -W, -- and - work as in `lua`, and so do `arg`, LUA_INIT and LUA_PATH. With no arguments it starts the REPL on a terminal and reads a script from standard input otherwise.

            The machine boots on first use with --memory SIZE (256M), --cpus N (4) and --seed N (0); the same script, arguments and seed print the same bytes. --strict makes leaked native objects fail the run. --max-memory SIZE caps the Lua heap; --max-instructions N and --timeout SECONDS stop a runaway script (an error, exit status 1).

            What a run leaves behind: --results FILE writes what kernel.results.record kept (.csv or .json); --out DIR is where kernel.plot draws SVG pictures (the current folder for scripts; examples and tests draw only when given); --trace FILE writes a Chrome trace of CPUs, tasks, locks and the page allocator, which Perfetto opens. Output is written whole or not at all.

            Finding the interleaving that breaks a script: `mmlab explore SCRIPT` runs it under many schedules (pct, random, or every schedule within a preemption bound with dfs) and writes each failure's schedule, shrunk; --schedule FILE replays one exactly, and --quantum N sets the VM instructions between preemption points (200). `mmlab sweep SCRIPT --param NAME=V1,V2 --seeds A..B` runs an experiment for every combination into one table.

            The `kernel` table: kernel.page (Page, into_phys, borrow_phys), kernel.mem (the page allocator), kernel.mm (mm_alloc, Mm/MmWithUser handles, mmap locks, VMAs), kernel.uaccess (UserSlice), kernel.sched (tasks, CPUs), kernel.sync (SpinLock, Mutex), kernel.percpu, kernel.drm_mm, kernel.binder, kernel.results, kernel.plot, kernel.debug (live handles, leaks). Try `mmlab examples` for scenarios to read and run, and `mmlab repl` (:help inside) to explore.

            Examples:
              mmlab -e 'local p = kernel.page.Page.alloc_page(); print(p, p:phys())'
              mmlab --seed 7 experiment.lua arg1 arg2
              mmlab repl
              mmlab test Tests/lua
              mmlab examples binder
              mmlab examples binder --out pictures --results binder.csv
              mmlab --trace trace.json examples/percpu_counter.lua
              mmlab explore examples/races/vma_after_guard.lua
              mmlab fuzz --calls 20000

            Exit status: 0 on success, 1 when a script fails or a test fails, 2 for a usage error.
            """,
        version: versionLine,
        subcommands: [Run.self, ReplCommand.self, TestCommand.self, ExamplesCommand.self, ExploreCommand.self, SweepCommand.self, DocCommand.self, FuzzCommand.self]
    )
}

/// The machine every subcommand boots.
struct MachineOptions: ParsableArguments {
    @Option(help: "The machine's seed; the same seed replays the same run.")
    var seed: String?
    @Option(help: "Simulated CPUs, 1 to 64.")
    var cpus: String?
    @Option(help: "RAM, such as 256M or 4G.")
    var memory: String?
    @Flag(help: "Leaks, and lock guards dropped by the collector, fail the run.")
    var strict = false
    @Option(help: ArgumentHelp("Cap the Lua heap: allocations past it fail with 'not enough memory'.", valueName: "size"))
    var maxMemory: String?
    @Option(help: ArgumentHelp("Stop the script after this many VM instructions.", valueName: "n"))
    var maxInstructions: String?
    @Option(help: ArgumentHelp("Stop the script after this much wall-clock time.", valueName: "seconds"))
    var timeout: String?
    @Option(help: ArgumentHelp("VM instructions between preemption points (and ticks of the trace clock); default 200.", valueName: "n"))
    var quantum: String?

    /// The options as a command line gives them, for worker processes.
    var arguments: [String] {
        var a: [String] = []
        for (name, value) in [("--seed", seed), ("--cpus", cpus), ("--memory", memory), ("--max-memory", maxMemory),
                              ("--max-instructions", maxInstructions), ("--timeout", timeout), ("--quantum", quantum)] {
            if let value { a += [name, value] }
        }
        return a + (strict ? ["--strict"] : [])
    }

    func standalone() throws -> Standalone {
        var s = Standalone()
        do {
            if let seed { try s.set("--seed", seed) }
            if let cpus { try s.set("--cpus", cpus) }
            if let memory { try s.set("--memory", memory) }
            if let maxMemory { try s.set("--max-memory", maxMemory) }
            if let maxInstructions { try s.set("--max-instructions", maxInstructions) }
            if let timeout { try s.set("--timeout", timeout) }
            if let quantum { try s.set("--quantum", quantum) }
        } catch {
            throw ValidationError(error.message)
        }
        s.configuration.strict = strict
        return s
    }
}

/// Where a run's results, trace and pictures go.
struct OutputOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Write what kernel.results.record kept, as CSV or JSON by the extension.", valueName: "file"))
    var results: String?
    @Option(help: ArgumentHelp("Write a Chrome trace of the run: CPUs, tasks, locks, the page allocator (open it in Perfetto).", valueName: "file"))
    var trace: String?
    @Option(help: ArgumentHelp("Where kernel.plot writes its SVG pictures.", valueName: "dir"))
    var out: String?
    @Flag(help: "Put per-CPU variable and page accesses on the trace too.")
    var traceAccesses = false

    /// Applies them; `pictures` is the folder pictures go to without `--out`.
    func apply(to s: inout Standalone, pictures: String?) throws {
        do {
            if let results { try s.set("--results", results) }
            if let trace { try s.set("--trace", trace) }
        } catch {
            throw ValidationError(error.message)
        }
        s.configuration.outputDirectory = out ?? pictures
        s.configuration.traceAccesses = traceAccesses
        do { try s.checkTraceAccesses() } catch { throw ValidationError(error.message) }
    }
}

/// Replays a schedule file (`--schedule`).
struct ScheduleOption: ParsableArguments {
    @Option(help: ArgumentHelp("Replay this schedule (written by mmlab explore) exactly.", valueName: "file"))
    var schedule: String?

    func apply(to s: inout Standalone) throws {
        guard let schedule else { return }
        do { try s.set("--schedule", schedule) } catch { throw ValidationError(error.message) }
    }
}

/// Runs `script` with `arguments` as lua.c would; exits with its status.
func runScript(_ script: String, _ arguments: [String], _ options: MachineOptions, _ output: OutputOptions,
               pictures: String?, schedule: ScheduleOption? = nil) throws {
    var s = try options.standalone()
    try output.apply(to: &s, pictures: pictures)
    try schedule?.apply(to: &s)
    s.script = script
    s.scriptArguments = arguments
    s.argv = ["mmlab", script] + arguments
    s.scriptIndex = 1
    let status = s.run()
    if status != 0 { throw ExitCode(status) }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Lua script (the same as `mmlab SCRIPT`).")
    @OptionGroup var machine: MachineOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var schedule: ScheduleOption
    @Argument(help: "The script; - reads standard input.") var script: String
    @Argument(parsing: .captureForPassthrough, help: "Arguments for the script (`...` and `arg`).")
    var arguments: [String] = []

    func run() throws { try runScript(script, arguments, machine, output, pictures: ".", schedule: schedule) }
}

struct ReplCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repl",
        abstract: "Explore interactively: expressions print their values, `>>` continues a statement.",
        discussion: "History is kept in $MMLAB_HISTORY, or ~/.mmlab_history. Ctrl-D ends the session.")
    @OptionGroup var machine: MachineOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        var s = try machine.standalone()
        try output.apply(to: &s, pictures: ".")
        s.interactive = true
        s.mmlabRepl = true
        s.version = true
        let status = s.run()
        if status != 0 { throw ExitCode(status) }
    }
}

struct TestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Run regression files, each case on a machine of its own.",
        discussion: """
            Inside a file, test(name, fn) declares a case; a file without cases is one case. Each case runs in a fresh engine, as KUnit runs each case between its own init and exit: the file's top level runs again for every case (so a file-level kernel.boot{...} configures them all), and only that case's fn runs. skip(reason) inside a case skips it. A case that leaves native objects alive is named on stderr, and fails under --strict. Prints a line per case and last `N passed, N failed`; --tap prints TAP (the plan last, the counts in a # comment), --ktap KTAP version 1 as KUnit prints it (a suite per file), which the kernel's tools/testing/kunit/kunit.py parse reads. Exits 1 if any failed.
            """)
    @Flag(help: "Print TAP version 13.") var tap = false
    @Flag(help: "Print KTAP version 1, as KUnit does.") var ktap = false
    @Option(help: ArgumentHelp("Run the files in this many processes (they print in order).", valueName: "j")) var jobs: Int = 1
    @Option(help: .hidden) var workerOut: String?
    @OptionGroup var machine: MachineOptions
    @OptionGroup var schedule: ScheduleOption
    @Argument(help: "Files or directories (default: Tests/lua).") var paths: [String] = []

    func run() throws {
        guard !(tap && ktap) else { throw ValidationError("--tap and --ktap are two formats: give one") }
        guard jobs >= 1 else { throw ValidationError("--jobs takes a positive number, got \(jobs)") }
        var s = try machine.standalone()
        try schedule.apply(to: &s)
        let replay: ScheduleFile?
        do { replay = try s.loadSchedule() } catch { throw ValidationError(error.message) }
        var configuration = s.configuration
        configuration.outputDirectory = nil  // regressions write no pictures
        let paths = self.paths.isEmpty ? [defaultTestPath()] : self.paths
        let files: [String]
        do { files = try TestRunner.files(paths) } catch { throw ValidationError(error.message) }
        var runner = TestRunner(configuration: configuration, format: ktap ? .ktap : tap ? .tap : .plain)
        runner.schedule = replay
        runner.jobs = jobs
        runner.workerOptions = machine.arguments + (schedule.schedule.map { ["--schedule", $0] } ?? [])
        if let workerOut {
            do { try runner.runWorker(files: files, to: workerOut) } catch { throw ValidationError(error.message) }
            return
        }
        let result = runner.run(files: files)
        if result.failed > 0 { throw ExitCode(1) }
    }

    private func defaultTestPath() -> String {
        if isDirectory("Tests/lua") { return "Tests/lua" }
        return projectDirectory(containing: "Tests/lua").map { $0 + "/Tests/lua" } ?? "Tests/lua"
    }
}

struct ExamplesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "examples",
        abstract: "List the shipped scenarios, or run one: mmlab examples NAME [options] [args].",
        discussion: "Scenarios write their pictures only with --out DIR, and their figures with --results FILE.")
    @OptionGroup var machine: MachineOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The scenario to run; none lists them.") var name: String?
    // mmlab's own options are recognised after the name too; what is not
    // one is the scenario's (after -- when it starts with a dash).
    @Argument(help: "Arguments for the scenario.")
    var arguments: [String] = []

    func run() throws {
        guard let directory = Self.directory() else {
            throw ValidationError("cannot find the examples folder; set MMLAB_EXAMPLES")
        }
        guard let name else {
            print("Scenarios (mmlab examples NAME):")
            let files = try TestRunner.files([directory])
            // Names relative to the folder: `races/abba` runs as it is listed.
            let prefix = directory.hasSuffix("/") ? directory : directory + "/"
            let names = files.map { String($0.dropFirst(prefix.count)).replacingSuffix(".lua") }
            let width = (names.map(\.count).max() ?? 0) + 2
            for (name, file) in zip(names, files) { print("  " + name.padding(width) + summary(of: file)) }
            return
        }
        let path = directory + "/" + name.replacingSuffix(".lua") + ".lua"
        guard access(path, R_OK) == 0 else {
            throw ValidationError("no scenario named '\(name)' (mmlab examples lists them)")
        }
        try runScript(path, arguments, machine, output, pictures: nil)
    }

    /// `$MMLAB_EXAMPLES`, else the checkout's `examples`, named relative to
    /// the current folder when it is that checkout (messages stay short).
    static func directory() -> String? {
        if let env = getenv("MMLAB_EXAMPLES") { return String(cString: env) }
        guard let dir = projectDirectory(containing: "examples") else {
            return isDirectory("examples") ? "examples" : nil
        }
        return realPath("examples") == realPath(dir + "/examples") ? "examples" : dir + "/examples"
    }

    /// The first comment line of a scenario, without `--` and its name.
    private func summary(of file: String) -> String {
        guard let f = fopen(file, "r") else { return "" }
        defer { fclose(f) }
        var buffer = [CChar](repeating: 0, count: 512)
        while fgets(&buffer, 512, f) != nil {
            let line = String(cString: buffer).trimmingSpaces
            if line.hasPrefix("--") {
                let text = line.drop { $0 == "-" || $0 == " " }
                let colon = text.firstIndex(of: ":").map { text.index(after: $0) }
                return String((colon.map { text[$0...] } ?? text).drop { $0 == " " })
            }
        }
        return ""
    }
}

struct FuzzCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuzz",
        abstract: "Call every kernel function and method with hostile arguments; check nothing breaks.",
        discussion: """
            Rounds of \(Fuzzer.roundCalls) calls, each in a fresh machine seeded --seed, --seed + 1, ...: random and hostile arguments (wrong types, nil, NaN, huge and negative numbers, dropped, moved and foreign handles, callbacks that raise, yield, drop what their caller uses or call back in), some calls in spawned tasks. A round fails if a call raises anything but a string or a kernel.Error, or if, once every handle is dropped, native objects are left, the allocator's invariants break or pages are missing. Each failure names the command that replays it. Exits 1 on a failure.
            """)
    @Option(help: "The first round's seed.") var seed: UInt64 = 1
    @Option(help: "Calls in all.") var calls: Int = 20000
    @Flag(help: "Print each call as it is made (this changes the interleaving: bisect --calls with it on).")
    var printCalls = false

    func run() throws {
        guard calls > 0 else { throw ValidationError("--calls must be positive") }
        let terminal = isatty(2) != 0
        let report = Fuzzer(seed: seed, calls: calls, printCalls: printCalls).run { done, total in
            if terminal { fputs("\rfuzz: \(done)/\(total) calls", stderr) }
        }
        if terminal { fputs("\r\u{1b}[K", stderr) }
        let errnos = report.errnos.sorted { $0.value > $1.value }.prefix(6).map { "\($0.key) \($0.value)" }
        print("fuzz: \(report.calls) calls in \(report.rounds) rounds (seeds \(seed)-\(seed + UInt64(report.rounds) - 1)): "
              + "\(report.returned) returned, \(report.kernelErrors) kernel.Error (\(errnos.joined(separator: ", "))), "
              + "\(report.bugs) bug errors, \(report.luaErrors) Lua errors"
              + (report.deadlocked > 0 ? "; \(report.deadlocked) rounds ended in a deadlock of their tasks" : ""))
        for failure in report.failures { print("FAIL " + failure) }
        print(report.failures.isEmpty ? "no failures" : "\(report.failures.count) failures")
        if !report.failures.isEmpty { throw ExitCode(1) }
    }
}

/// The folder holding `relative`, from the executable's folder upward
/// (so that a build inside a checkout finds the checkout's files).
func projectDirectory(containing relative: String) -> String? {
    guard let exe = realpath("/proc/self/exe", nil) else { return nil }
    var dir = String(cString: exe)
    free(exe)
    while let slash = dir.lastIndex(of: "/"), slash != dir.startIndex {
        dir = String(dir[..<slash])
        if isDirectory(dir + "/" + relative) { return dir }
    }
    return nil
}

func realPath(_ path: String) -> String? {
    guard let p = realpath(path, nil) else { return nil }
    defer { free(p) }
    return String(cString: p)
}

extension String {
    func replacingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }

    func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }

}
