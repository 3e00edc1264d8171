#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim
import MMCore

/// mmlab's version.
public let mmlabVersion = "0.1.0"

/// lua.c's version line (LUA_COPYRIGHT) for the Lua mmlab runs.
public var luaCopyright: String { String(cString: mmlab_lua_copyright()) }

/// The version line `-v` and the REPL print: mmlab's, then lua.c's.
public var versionLine: String {
    "mmlab \(mmlabVersion), Linux memory management in Lua, on \(luaCopyright)"
}

/// A command line the interpreter cannot run: exit status 2.
public struct UsageError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The standalone interpreter, as lua.c: `mmlab [options] [script [args]]`.
public struct Standalone {
    /// What `-e`, `-l` and `-W` ask for, run in command-line order.
    public enum Action: Equatable {
        case execute(String)
        case require(module: String, global: String)
        case warnings
    }

    public var configuration = Engine.Configuration()
    public var actions: [Action] = []
    /// The script to run: a path, or "-" for standard input.
    public var script: String?
    public var scriptArguments: [String] = []
    /// `-i`: lua.c's REPL after the script.
    public var interactive = false
    /// `mmlab repl`: the interactive REPL is mmlab's (pretty printing, `:help`).
    public var mmlabRepl = false
    /// `-v`
    public var version = false
    /// The whole command line as typed (argv[0] first), for the `arg`
    /// table, and the script's index in it.
    public var argv: [String] = ["mmlab"]
    public var scriptIndex = 0
    /// `--schedule FILE`: the schedule to replay.
    public var schedulePath: String?
    /// The long options the command line set, which a schedule's header
    /// must not contradict.
    var explicit: Set<String> = []
    /// What errors are prefixed with: argv[0] as typed, as lua.c's progname.
    public var progname: String { argv.first.flatMap { $0.isEmpty ? nil : $0 } ?? "mmlab" }

    public init() {
        configuration.outputDirectory = "."
    }

    public static let usage = """
        usage: mmlab [options] [script [args]]
               mmlab run|repl|test|examples|explore|sweep|doc|fuzz ...   (mmlab --help explains them)
        Options, run in the order given (as the standalone lua's):
          -e stat        run the Lua statement stat
          -i             after the script, read-eval-print (lua's REPL)
          -l mod         mod = require("mod")
          -l g=mod       g = require("mod")
          -v             print the version
          -E             ignore LUA_INIT and LUA_PATH/LUA_CPATH
          -W             warnings on (warn("@on"))
          --             no more options: the script follows
          -              no more options: the script is standard input
          --seed N       the machine's seed (default 0)
          --cpus N       simulated CPUs (default 4)
          --memory SIZE  RAM, e.g. 256M or 4G (default 256M)
          --strict       leaks and guards dropped by the collector fail the run
          --results FILE write what kernel.results.record kept, as .csv or .json
          --trace FILE   write a Chrome trace of the run (Perfetto opens it)
          --trace-accesses  put per-CPU variable and page accesses on the trace
          --out DIR      where kernel.plot writes its pictures (default .)
          --max-memory SIZE       cap the Lua heap (not enough memory past it)
          --max-instructions N    stop the script after N VM instructions
          --timeout SECONDS       stop the script after this much wall-clock time
          --schedule FILE         replay a schedule mmlab explore wrote
          --quantum N             VM instructions between preemption points (200)
        """

    /// Parses a lua.c command line (`arguments` without the program name,
    /// which is `program` as typed).
    public static func parse(_ arguments: [String], program: String = "mmlab") throws(UsageError) -> Standalone {
        var s = Standalone()
        s.argv = [program] + arguments
        var i = 0
        func value(_ option: String) throws(UsageError) -> String {
            i += 1
            guard i < arguments.count else { throw UsageError("'\(option)' needs argument") }
            return arguments[i]
        }
        scan: while i < arguments.count {
            let a = arguments[i]
            if !a.hasPrefix("-") {
                s.script = a
                break scan
            }
            switch a {
            case "--":
                if i + 1 < arguments.count { s.script = arguments[i + 1]; i += 1 }
                break scan
            case "-":
                s.script = "-"
                break scan
            case "-E": s.configuration.ignoreEnvironment = true
            case "-W": s.actions.append(.warnings)
            case "-i": s.interactive = true; s.version = true
            case "-v": s.version = true
            case "--strict", "--trace-accesses":
                guard s.explicit.insert(a).inserted else { throw UsageError("\(a) is given twice") }
                if a == "--strict" { s.configuration.strict = true } else { s.configuration.traceAccesses = true }
            default:
                if let (name, v) = longOption(a) {
                    guard !s.explicit.contains(name) else { throw UsageError("\(name) is given twice") }
                    try s.set(name, v != nil ? v ?? "" : value(name))
                } else if a.hasPrefix("-e") || a.hasPrefix("-l") {
                    var text = String(a.dropFirst(2))
                    if text.isEmpty {
                        text = try value(String(a.prefix(2)))
                        guard !text.hasPrefix("-") else { throw UsageError("'\(a)' needs argument") }
                    }
                    s.actions.append(a.hasPrefix("-e") ? .execute(text) : requireAction(text))
                } else {
                    throw UsageError("unrecognized option '\(a)'")
                }
            }
            i += 1
        }
        if s.script != nil {
            s.scriptIndex = i + 1
            s.scriptArguments = Array(arguments[(i + 1)...])
        }
        try s.checkTraceAccesses()
        return s
    }

    /// `--trace-accesses` adds to a trace: without `--trace` there is none.
    public func checkTraceAccesses() throws(UsageError) {
        if configuration.traceAccesses && configuration.tracePath == nil {
            throw UsageError("--trace-accesses adds events to a trace: give --trace FILE too")
        }
    }

    private static func longOption(_ a: String) -> (String, String?)? {
        for name in Standalone.valueOptions {
            if a == name { return (name, nil) }
            if a.hasPrefix(name + "=") { return (name, String(a.dropFirst(name.count + 1))) }
        }
        return nil
    }

    /// The long options that take a value (`--seed 3` or `--seed=3`).
    public static let valueOptions = ["--seed", "--cpus", "--memory", "--results", "--trace", "--out",
                                      "--max-memory", "--max-instructions", "--timeout", "--quantum", "--schedule"]

    /// Sets a long option from its text.
    public mutating func set(_ option: String, _ text: String) throws(UsageError) {
        explicit.insert(option)
        switch option {
        case "--seed":
            guard let seed = Int64(text) ?? UInt64(text).map({ Int64(bitPattern: $0) }) else {
                throw UsageError("--seed takes an integer, got '\(text)'")
            }
            configuration.seed = UInt64(bitPattern: seed)
        case "--cpus":
            guard let cpus = Int(text), (1...MachineConfig.maxCpus).contains(cpus) else {
                throw UsageError("--cpus takes a number from 1 to \(MachineConfig.maxCpus), got '\(text)'")
            }
            configuration.cpus = cpus
        case "--memory":
            guard let bytes = MachineConfig.parseSize(text), bytes >= UInt64(MMCore.PAGE_SIZE),
                  bytes <= MachineConfig.maxMemory else {
                throw UsageError("--memory takes a size from 4K to 1T such as 256M or 4G, got '\(text)'")
            }
            configuration.memory = bytes
        case "--results":
            guard Results.Format(path: text) != nil else { throw UsageError("--results takes a file ending in .csv or .json, got '\(text)'") }
            configuration.resultsPath = text
        case "--trace": configuration.tracePath = text
        case "--out": configuration.outputDirectory = text
        case "--max-memory":
            guard let bytes = MachineConfig.parseSize(text), bytes >= 1 << 20, bytes <= UInt64(Int.max) else {
                throw UsageError("--max-memory takes a size of at least 1M such as 64M, got '\(text)'")
            }
            configuration.limits.maxMemory = Int(bytes)
        case "--max-instructions":
            guard let n = UInt64(text), n > 0 else {
                throw UsageError("--max-instructions takes a positive integer, got '\(text)'")
            }
            configuration.limits.maxInstructions = n
        case "--timeout":
            guard let seconds = Double(text), seconds > 0, seconds.isFinite else {
                throw UsageError("--timeout takes a positive number of seconds, got '\(text)'")
            }
            configuration.limits.timeout = seconds
        case "--quantum":
            guard let n = Int(text), (1...1_000_000).contains(n) else {
                throw UsageError("--quantum takes a number of VM instructions from 1 to 1000000, got '\(text)'")
            }
            configuration.quantum = n
        case "--schedule": schedulePath = text
        default:
            throw UsageError("unrecognized option '\(option)'")
        }
    }

    /// `-l mod`, `-l g=mod`, and `-l mod-v2` (global `mod`), as lua.c.
    private static func requireAction(_ text: String) -> Action {
        if let eq = text.firstIndex(of: "=") {
            return .require(module: String(text[text.index(after: eq)...]), global: String(text[..<eq]))
        }
        let global = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? text
        return .require(module: text, global: global)
    }

    /// Reads `--schedule`'s file, if any, and boots the machine it was
    /// recorded on: its header's seed, CPUs, memory and quantum, unless the
    /// command line says otherwise (then it is a usage error).
    public mutating func loadSchedule() throws(UsageError) -> ScheduleFile? {
        guard let path = schedulePath else { return nil }
        let file = try ScheduleFile.parse(try readText(path), name: path)
        for (option, key) in [("--seed", "seed"), ("--cpus", "cpus"), ("--memory", "memory"), ("--quantum", "quantum")] {
            guard let value = file.value(key) else { continue }
            let given = explicit.contains(option)
            let before = machineWords
            try set(option, value)
            if given, machineWords != before {
                throw UsageError("\(path) was recorded with \(option) \(value): the command line asks otherwise")
            }
        }
        return file
    }

    /// What a schedule's header must agree with.
    private var machineWords: String {
        "\(configuration.seed) \(configuration.cpus) \(configuration.memory) \(configuration.quantum ?? 200)"
    }

    /// Runs the command line; returns the exit status.
    public func run() -> Int32 {
        if version { print(versionLine) }
        var s = self
        let replay: ReplayStrategy?
        do { replay = try s.loadSchedule().map(ReplayStrategy.init) } catch {
            fputs("\(progname): \(error)\n", stderr)
            return 2
        }
        let engine: Engine
        do { engine = try Engine(configuration: s.configuration) } catch {
            report(error)
            return 1
        }
        defer { engine.close() }
        engine.scheduleController = replay
        // lua.c's docall: Ctrl-C raises "interrupted!" in the running code.
        engine.catchInterrupts(true)
        defer { engine.catchInterrupts(false) }
        engine.setArgTable(argv, scriptIndex: scriptIndex)
        do { try engine.checkOutputs() } catch {
            report(error)  // before anything ran: nothing to write or report
            return 1
        }
        var status: Int32 = 0
        do {
            if !configuration.ignoreEnvironment { try runInit(engine) }
            for action in actions {
                switch action {
                case .execute(let code): try engine.run(string: code, name: "=(command line)")
                case .require(let module, let global): try engine.require(module, as: global)
                case .warnings: engine.warnings(on: true)
                }
            }
            if let script {
                // lua.c's handle_script: the script's `...` are arg[1..#arg] now.
                try engine.runScript(file: script == "-" && argv[scriptIndex - 1] != "--" ? nil : script)
            }
            if interactive {
                Repl(engine: engine, luaStyle: !mmlabRepl).run()
            } else if script == nil && !version && !actions.contains(where: { if case .execute = $0 { true } else { false } }) {
                if isatty(0) != 0 {
                    print(versionLine)
                    Repl(engine: engine).run()
                } else {
                    try engine.run(file: nil)
                }
            }
        } catch {
            report(error)
            status = 1
        }
        status = finish(engine, status: status)
        if let replay {
            replay.finish()
            for line in replay.divergences {
                fputs("mmlab: warning: schedule \(line)\n", stderr)
                if configuration.strict { status = 1 }
            }
        }
        return status
    }

    /// `LUA_INIT_5_4` or `LUA_INIT`: `@file` runs the file, anything else runs as code.
    private func runInit(_ engine: Engine) throws(EngineError) {
        for name in ["LUA_INIT_5_4", "LUA_INIT"] {
            guard let value = getenv(name).map({ String(cString: $0) }) else { continue }
            if value.hasPrefix("@") {
                try engine.run(file: String(value.dropFirst()))
            } else {
                try engine.run(string: value, name: "=\(name)")
            }
            return
        }
    }

    /// The leak report and `--strict`: the exit status after the run.
    func finish(_ engine: Engine, status: Int32) -> Int32 {
        var status = status
        if status == 0 {
            do { try engine.runTasks() } catch {
                report(error)
                status = 1
            }
        }
        if let report = engine.leakReport() {
            fputs(report + "\n", stderr)
            if configuration.strict { status = 1 }
        }
        do { try engine.writeOutputs() } catch {
            report(error)
            status = 1
        }
        if configuration.strict && engine.strictViolations > 0 { status = 1 }
        return status
    }

    func report(_ error: any Error) {
        fflush(stdout)
        var text = "\(error)"
        // Lua's own message for a refused allocation says nothing of the cap.
        if let cap = configuration.limits.maxMemory, text.hasPrefix("not enough memory\n") || text == "not enough memory" {
            text = "not enough memory: the Lua heap reached its --max-memory cap (\(cap) bytes)" + text.dropFirst(17)
        }
        fputs("\(progname): \(text)\n", stderr)
    }
}

extension Engine {
    /// The `arg` table of lua.c: the script at 0, its arguments from 1,
    /// the interpreter and options below 0.
    public func setArgTable(_ argv: [String], scriptIndex: Int) {
        let lua = Lua(runtime.L)
        lua.newTable(array: Int32(max(0, argv.count - scriptIndex - 1)), hash: Int32(scriptIndex + 1))
        for (i, a) in argv.enumerated() {
            lua.push(a)
            lua_rawseti(lua.L, -2, lua_Integer(i - scriptIndex))
        }
        lua_setglobal(lua.L, "arg")
    }

    /// `-l`: `global = require(module)`.
    public func require(_ module: String, as global: String) throws(EngineError) {
        let L = runtime.L
        lua_getglobal(L, "require")
        Lua(L).push(module)
        try call(arguments: 1, results: 1)
        lua_setglobal(L, global)
    }

    /// `-W`: Lua warnings on or off.
    public func warnings(on: Bool) {
        lua_warning(runtime.L, on ? "@on" : "@off", 0)
    }
}
