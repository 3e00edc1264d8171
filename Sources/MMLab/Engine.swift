#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim
import MMCore

/// A script failed: the Lua message, its traceback and, when the script
/// raised a `kernel.Error`, that error.
public struct EngineError: Error, CustomStringConvertible {
    public let message: String
    public let traceback: String
    public let kernelError: KernelError?

    public init(message: String, traceback: String = "", kernelError: KernelError? = nil) {
        self.message = message
        self.traceback = traceback
        self.kernelError = kernelError
    }

    public var description: String { traceback.isEmpty ? message : message + "\n" + traceback }
}

/// mmlab embedded in Swift: one Lua state and one simulated machine.
///
/// ```swift
/// let engine = try Engine(configuration: .init(memory: 256 << 20, cpus: 4, seed: 1))
/// try engine.run(file: "experiment.lua", arguments: [])
/// let free = try engine.evaluate("return kernel.mem.stats().free_pages")
/// ```
///
/// An engine is not thread safe, like the `lua_State` it wraps.
public final class Engine {
    public struct Configuration: Sendable {
        /// Bytes of RAM of the machine that boots on first use.
        public var memory: UInt64
        public var cpus: Int
        public var seed: UInt64
        /// Leaks (and guards dropped by the collector) fail the run.
        public var strict: Bool
        /// `lua -E`: ignore LUA_INIT, LUA_PATH and LUA_CPATH.
        public var ignoreEnvironment: Bool
        /// `lua -W`: turn Lua warnings on.
        public var warnings: Bool
        /// Where `kernel.plot` writes its pictures (`--out DIR`); nil writes none.
        public var outputDirectory: String?
        /// Where `writeOutputs` writes the recorded results, CSV or JSON by extension (`--results FILE`).
        public var resultsPath: String?
        /// Where `writeOutputs` writes a Chrome trace of the run (`--trace FILE`); nil traces nothing.
        public var tracePath: String?
        /// Per-CPU variable and page accesses go on the trace too (`--trace-accesses`).
        public var traceAccesses = false
        /// What stops a runaway script (`--max-memory`, `--max-instructions`, `--timeout`).
        public var limits = Limits()
        /// VM instructions between the engine's count hooks, its clock
        /// ticks and its instruction preemption points (`--quantum`); nil: 200.
        public var quantum: Int?

        public struct Limits: Sendable, Equatable {
            /// Bytes the Lua heap may hold: past it, allocations fail with
            /// "not enough memory", which a script may catch.
            public var maxMemory: Int?
            /// VM instructions the script may run (counted in steps of 200);
            /// past them every instruction raises, pcall or not.
            public var maxInstructions: UInt64?
            /// Seconds of wall-clock time the script may run; then as above.
            public var timeout: Double?
            public init(maxMemory: Int? = nil, maxInstructions: UInt64? = nil, timeout: Double? = nil) {
                self.maxMemory = maxMemory
                self.maxInstructions = maxInstructions
                self.timeout = timeout
            }
        }

        public init(memory: UInt64 = 256 << 20, cpus: Int = 4, seed: UInt64 = 0, strict: Bool = false,
                    ignoreEnvironment: Bool = false, warnings: Bool = false, outputDirectory: String? = nil,
                    resultsPath: String? = nil, tracePath: String? = nil) {
            self.memory = memory
            self.cpus = cpus
            self.seed = seed
            self.strict = strict
            self.ignoreEnvironment = ignoreEnvironment
            self.warnings = warnings
            self.outputDirectory = outputDirectory
            self.resultsPath = resultsPath
            self.tracePath = tracePath
        }

        /// The machine this configuration boots.
        public var machine: MachineConfig { MachineConfig(memory: memory, cpus: cpus, seed: seed) }
    }

    let runtime: Runtime

    public init(configuration: Configuration = Configuration()) throws(EngineError) {
        runtime = try Runtime(configuration: configuration)
    }

    deinit { runtime.close() }

    public var configuration: Configuration { runtime.configuration }

    /// Who makes the scheduler's choices: a controlled run (an exploration
    /// strategy, a schedule file) instead of the machine's seed. Set it
    /// before the machine boots.
    public var scheduleController: ScheduleController? {
        get { runtime.controller }
        set { runtime.controller = newValue }
    }

    /// The machine the script sees, booted now if the script has not used it yet.
    public var machine: Machine {
        get throws(EngineError) {
            do { return try runtime.machine() } catch { throw EngineError(message: "\(error)", kernelError: error) }
        }
    }

    /// Runs a Lua file (`nil`: standard input) with `arguments` as `...`,
    /// then every task it spawned to its end, as a program would.
    public func run(file path: String?, arguments: [String] = []) throws(EngineError) {
        let L = runtime.L
        try check(load: luaL_loadfilex(L, path, nil))
        for argument in arguments { Lua(L).push(argument) }
        try call(arguments: Int32(arguments.count), results: 0)
        try runtime.finishTasks()
    }

    /// Runs the script as lua.c's handle_script: its `...` are the global
    /// `arg` table's 1..#arg as they are now ("'arg' is not a table"
    /// otherwise); then every task it spawned to its end.
    public func runScript(file path: String?) throws(EngineError) {
        let L = runtime.L
        try check(load: luaL_loadfilex(L, path, nil))
        let base = lua_gettop(L)
        lua_pushcclosure(L, mmlab_argvalues, 0)
        guard lua_pcallk(L, 0, LUA_MULTRET, 0, 0, nil) == LUA_OK else {
            let message = Lua(L).string(at: -1) ?? "'arg' is not a table"
            lua_settop(L, base - 1)
            throw EngineError(message: message)
        }
        try call(arguments: lua_gettop(L) - base, results: 0)
        try runtime.finishTasks()
    }

    /// Ctrl-C raises "interrupted!" in the running script while on (lua.c's
    /// laction); a second one ends the process.
    public func catchInterrupts(_ on: Bool) { mmlab_catchinterrupt(runtime.L, on ? 1 : 0) }

    /// Runs a chunk of Lua source, then every task it spawned to its end.
    public func run(string code: String, name: String = "=(string)") throws(EngineError) {
        try load(code, name: name)
        try call(arguments: 0, results: 0)
        try runtime.finishTasks()
    }

    /// Runs every task still running to its end.
    public func runTasks() throws(EngineError) { try runtime.finishTasks() }

    /// Guards the collector dropped and tasks left blocked at exit, which
    /// `--strict` counts as failures.
    public var strictViolations: Int { runtime.strictViolations }

    /// Counts warnings without printing them.
    var quiet: Bool {
        get { runtime.quiet }
        set { runtime.quiet = newValue }
    }

    /// Evaluates an expression (or runs a chunk that returns values) and
    /// returns its first value.
    @discardableResult
    public func evaluate(_ code: String) throws(EngineError) -> LuaValue {
        let L = runtime.L
        let base = lua_gettop(L)
        defer { lua_settop(L, base) }
        do { try load("return " + code, name: "=(evaluate)") } catch { try load(code, name: "=(evaluate)") }
        try call(arguments: 0, results: LUA_MULTRET)
        return lua_gettop(L) > base ? LuaValue(Lua(L), at: base + 1) : .nil
    }

    /// What `kernel.debug.check()` would raise now, if anything: the
    /// model's own invariants, checked after an exploration's run.
    func brokenInvariant() -> String? {
        do { try runtime.booted?.checkConsistency() } catch { return "\(error)" }
        return nil
    }

    /// Native objects still alive once the collector has dropped every
    /// handle nothing references: what the leak report lists.
    public func leaks() -> [NativeObject] {
        // No collection when nothing native is alive: finalizers then run
        // in lua_close as in lua.c (a __gc set during close never runs).
        guard let booted = runtime.booted, booted.accounting.count > 0 else { return [] }
        _ = mmlab_gc(runtime.L, LUA_GCCOLLECT, 0)
        runtime.booted?.scheduler.runWork()  // what the collected handles deferred (mmput_async)
        return runtime.booted?.accounting.leaks() ?? []
    }

    /// The leak report printed at exit, or nil when nothing leaked.
    public func leakReport() -> String? {
        let leaks = leaks()
        guard !leaks.isEmpty else { return nil }
        let sites = runtime.sites
        var lines = ["mmlab: \(leaks.count) native object\(leaks.count == 1 ? "" : "s") leaked (still alive at exit):"]
        for object in leaks { lines.append("  \(object) created at \(sites.name(object.site))") }
        return lines.joined(separator: "\n")
    }

    /// Writes the recorded results (`resultsPath`) and the trace
    /// (`tracePath`), each whole or not at all.
    public func writeOutputs() throws(EngineError) {
        if let path = configuration.resultsPath {
            guard let format = Results.Format(path: path) else {
                throw EngineError(message: "--results \(path): the name must end in .csv or .json")
            }
            let file = try OutputFile(path: path)
            runtime.results.write(format, to: file)
            try file.commit()
            if runtime.results.dropped > 0 {
                fputs("mmlab: \(path) holds the first \(Results.limit) rows; \(runtime.results.dropped) more were not kept\n", stderr)
            }
        }
        if let path = configuration.tracePath {
            let file = try OutputFile(path: path)
            runtime.writeTrace(to: file)
            try file.commit()
            if let dropped = runtime.booted?.trace?.dropped, dropped > 0 {
                fputs("mmlab: \(path) holds the first events of the run; \(dropped) later ones were not kept\n", stderr)
            }
        }
    }

    /// Checks the output paths before a run, so that a long run does not
    /// end in a file that cannot be written.
    public func checkOutputs() throws(EngineError) {
        // The default folder is checked when a picture is written: a script
        // that draws nothing runs in a folder it cannot write.
        if let dir = configuration.outputDirectory, dir != "." {
            do { try makeDirectory(dir) } catch { throw EngineError(message: error.message) }  // --out makes its folder
            try OutputFile.check(folder: dir, what: "pictures")
        }
        if let path = configuration.resultsPath {
            guard Results.Format(path: path) != nil else {
                throw EngineError(message: "--results \(path): the name must end in .csv or .json")
            }
            try OutputFile.check(path, what: "results")
        }
        if let path = configuration.tracePath { try OutputFile.check(path, what: "trace") }
    }

    /// Ends the Lua state: every remaining handle is dropped by the collector.
    public func close() { runtime.close() }

    // MARK: Loading and calling, for the command line and the REPL.

    /// Loads `code` as a chunk and leaves it on the stack.
    func load(_ code: String, name: String) throws(EngineError) {
        var code = code
        let status = code.withUTF8 {
            luaL_loadbufferx(runtime.L, UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self),
                             $0.count, name, nil)
        }
        try check(load: status)
    }

    private func check(load status: Int32) throws(EngineError) {
        guard status != LUA_OK else { return }
        let lua = Lua(runtime.L)
        let message = lua.string(at: -1) ?? "cannot load chunk"
        lua.pop()
        throw EngineError(message: message)
    }

    /// Calls the function below `arguments` values as task `main`; leaves
    /// `results` values (all with LUA_MULTRET).
    func call(arguments: Int32, results: Int32) throws(EngineError) {
        try runtime.runAsMain(arguments: arguments, results: results)
    }
}

/// A Lua value copied out to Swift.
public indirect enum LuaValue: Hashable, CustomStringConvertible {
    case `nil`
    case boolean(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case table([LuaValue: LuaValue])
    /// A function, thread or userdata, by its `tostring`-like description.
    case other(String)

    init(_ lua: Lua, at idx: Int32, depth: Int = 0) {
        let idx = lua.absIndex(idx)
        switch lua.type(idx) {
        case LUA_TNIL, LUA_TNONE: self = .nil
        case LUA_TBOOLEAN: self = .boolean(lua.boolean(idx))
        case LUA_TNUMBER:
            self = lua_isinteger(lua.L, idx) != 0 ? .integer(lua_tointegerx(lua.L, idx, nil))
                                                    : .number(lua_tonumberx(lua.L, idx, nil))
        case LUA_TSTRING: self = .string(lua.string(at: idx) ?? "")
        case LUA_TTABLE where depth < 8:
            var table: [LuaValue: LuaValue] = [:]
            lua.pushNil()
            while lua_next(lua.L, idx) != 0 {
                table[LuaValue(lua, at: -2, depth: depth + 1)] = LuaValue(lua, at: -1, depth: depth + 1)
                lua.pop()
            }
            self = .table(table)
        default: self = .other(lua.describe(idx))
        }
    }

    public var intValue: Int? {
        switch self {
        case .integer(let i): Int(i)
        case .number(let d): Int(exactly: d)
        default: nil
        }
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public subscript(key: String) -> LuaValue {
        if case .table(let t) = self { return t[.string(key)] ?? .nil }
        return .nil
    }

    public var description: String {
        switch self {
        case .nil: "nil"
        case .boolean(let b): "\(b)"
        case .integer(let i): "\(i)"
        case .number(let d): "\(d)"
        case .string(let s): s
        case .table(let t): "{" + t.map { "[\($0.key)]=\($0.value)" }.sorted().joined(separator: ", ") + "}"
        case .other(let s): s
        }
    }
}
