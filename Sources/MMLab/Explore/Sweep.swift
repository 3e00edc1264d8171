#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim

/// `mmlab sweep`: a script run for every combination of parameters and
/// seeds, each on a fresh machine; every run's `kernel.results` rows, with
/// the parameters and the seed as their first columns, go into one table.
public struct Sweep {
    public var script = ""
    public var arguments: [String] = []
    public var configuration = Engine.Configuration()
    /// `--param NAME=V1,V2,...`, in order: the first varies slowest.
    public var parameters: [(name: String, values: [String])] = []
    public var seeds: ClosedRange<UInt64> = 0...0
    /// The runs this process makes (a chunk of a plan).
    public var range: Range<Int>?
    public init() {}

    /// How many runs: every combination, once per seed.
    public var runCount: Int { runs.count }

    /// Every run: the parameters' values and the seed.
    var runs: [(values: [(String, String)], seed: UInt64)] {
        var combinations: [[(String, String)]] = [[]]
        for (name, values) in parameters {
            combinations = combinations.flatMap { c in values.map { c + [(name, $0)] } }
        }
        return combinations.flatMap { c in seeds.map { (c, $0) } }
    }

    /// Parses `NAME=V1,V2,...`.
    public static func parameter(_ text: String) throws(UsageError) -> (String, [String]) {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex else {
            throw UsageError("--param takes NAME=V1,V2,..., got '\(text)'")
        }
        let name = String(text[..<eq])
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }), !(name.first?.isNumber ?? true) else {
            throw UsageError("--param \(name): a parameter's name is a Lua name (kernel.params.NAME)")
        }
        let values = text[text.index(after: eq)...].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard !values.contains(where: \.isEmpty) else { throw UsageError("--param \(name): an empty value in '\(text)'") }
        return (name, values)
    }

    /// Parses `A..B` (or one seed).
    public static func seedRange(_ text: String) throws(UsageError) -> ClosedRange<UInt64> {
        let parts = text.split(separator: ".", omittingEmptySubsequences: true)
        if parts.count == 1, text.allSatisfy(\.isNumber), let a = UInt64(text) { return a...a }
        guard parts.count == 2, text.contains(".."), let a = UInt64(parts[0]), let b = UInt64(parts[1]), a <= b else {
            throw UsageError("--seeds takes A..B with A ≤ B, such as 1..10, got '\(text)'")
        }
        return a...b
    }

    /// Runs this process's runs; their rows, and a line per failed run.
    func sweep() -> (results: Results, failures: [String]) {
        let results = Results()
        var failures: [String] = []
        let all = runs
        for i in range ?? 0..<all.count {
            let (values, seed) = all[i]
            var c = configuration
            c.seed = seed
            c.outputDirectory = nil
            c.resultsPath = nil
            c.tracePath = nil
            let name = (values.map { "\($0.0)=\($0.1)" } + ["seed=\(seed)"]).joined(separator: " ")
            do {
                let engine = try Engine(configuration: c)
                defer { engine.close() }
                engine.quiet = true
                engine.runtime.state.pointee.contained = 1
                engine.setParams(values)
                engine.setArgTable([script] + arguments, scriptIndex: 0)
                let silence = Silence()
                defer { silence.end() }
                do { try engine.run(file: script, arguments: arguments) } catch {
                    failures.append("run \(i + 1) (\(name)): \(error.message)")
                }
                let prefix = values.map { ($0.0, Sweep.value($0.1)) } + [("seed", ResultValue.integer(Int64(bitPattern: seed)))]
                let recorded = engine.runtime.results
                for row in recorded.rows {
                    results.record(prefix + recorded.columns.compactMap { col in row[col].map { (col, $0) } })
                }
            } catch {
                failures.append("run \(i + 1) (\(name)): \(error.message)")
            }
        }
        return (results, failures)
    }

    /// A parameter's value as the script sees it: a number when it reads as one.
    static func value(_ text: String) -> ResultValue {
        if let i = Int64(text) { return .integer(i) }
        if let d = Double(text), d.isFinite { return .number(d) }
        if text == "true" || text == "false" { return .boolean(text == "true") }
        return .string(text)
    }

    // MARK: The command

    /// Runs every run (in `jobs` worker processes when asked) and writes
    /// the table; exit 1 if a run failed.
    public func run(jobs: Int, results path: String?) throws(UsageError) -> Int32 {
        let total = runs.count
        let jobs = max(1, min(jobs, total))
        let results: Results
        var failures: [String]
        if jobs == 1 {
            (results, failures) = sweep()
        } else {
            results = Results()
            failures = []
            for (i, outcome) in try Chunks.runWorkers(jobs, chunkArguments) {
                do throws(UsageError) {
                    failures += try Sweep.mergeChunk(try outcome.get(), name: "chunk \(i)", into: results)
                } catch {
                    let r = Explorer.chunk(i, of: jobs, runs: total)
                    failures.append("the worker for runs \(r.lowerBound + 1)...\(r.upperBound) \(error.message): its rows are not in the table")
                }
            }
        }
        return try finish(results, failures, path)
    }

    static func finish(_ results: Results, _ failures: [String], _ path: String?) throws(UsageError) -> Int32 {
        try write(results, to: path)
        fflush(stdout)
        for failure in failures { fputs("mmlab sweep: \(failure)\n", stderr) }
        return failures.isEmpty ? 0 : 1
    }

    func finish(_ results: Results, _ failures: [String], _ path: String?) throws(UsageError) -> Int32 {
        try Self.finish(results, failures, path)
    }

    /// Runs this process's chunk and writes it to `path`.
    public func runChunk(to path: String) throws(UsageError) -> Int32 {
        let (results, failures) = sweep()
        do {
            let out = try OutputFile(path: path)
            out.write(Self.chunkText(results, failures: failures))
            try out.commit()
        } catch {
            throw UsageError(error.message)
        }
        return 0
    }

    /// `--plan CHUNKS`.
    public func plan(chunks: Int, slurm: Bool, directory: String) -> String {
        Chunks.plan(chunks, slurm: slurm, directory: directory, merge: "mmlab sweep --merge", chunkArguments)
    }

    /// `--merge DIR...`: the chunks' rows in order, as one process writes them.
    public static func merge(_ paths: [String], results path: String?) throws(UsageError) -> Int32 {
        let files = Chunks.files(paths)
        guard !files.isEmpty else { throw UsageError("--merge: no chunk files (*.json) in \(paths.joined(separator: " "))") }
        let results = Results()
        var failures: [String] = []
        for file in files { failures += try mergeChunk(try readText(file), name: file, into: results) }
        return try finish(results, failures, path)
    }

    /// The command line of chunk `i` of `n`.
    func chunkArguments(_ i: Int, of n: Int, to path: String) -> [String] {
        let c = configuration
        var a = ["sweep", "--seeds", "\(seeds.lowerBound)..\(seeds.upperBound)", "--cpus", "\(c.cpus)", "--memory", "\(c.memory)"]
        for (name, values) in parameters { a += ["--param", "\(name)=\(values.joined(separator: ","))"] }
        if let q = c.quantum { a += ["--quantum", "\(q)"] }
        if let m = c.limits.maxInstructions { a += ["--max-instructions", "\(m)"] }
        if let m = c.limits.maxMemory { a += ["--max-memory", "\(m)"] }
        if let t = c.limits.timeout { a += ["--timeout", "\(t)"] }
        return a + ["--chunk", "\(i)/\(n)", "--chunk-out", path, script] + (arguments.isEmpty ? [] : ["--"] + arguments)
    }

    // MARK: The table, whole or in chunks

    /// Writes the rows as CSV or JSON by `path`'s extension, or CSV to standard output.
    static func write(_ results: Results, to path: String?) throws(UsageError) {
        guard let path else {
            results.write(.csv) { fputs($0, stdout) }
            return
        }
        guard let format = Results.Format(path: path) else { throw UsageError("--results \(path): the name must end in .csv or .json") }
        do {
            let file = try OutputFile(path: path)
            results.write(format, to: file)
            try file.commit()
        } catch {
            throw UsageError(error.message)
        }
    }

    /// A chunk's rows and failures, each value with its type, for `--merge`.
    static func chunkText(_ results: Results, failures: [String]) -> String {
        let rows = results.rows.map { row in
            "[" + results.columns.compactMap { c in row[c].map { v in "[\(jsonString(c)), \(jsonString(v.tag)), \(jsonString(v.text))]" } }
                .joined(separator: ", ") + "]"
        }
        return "{\"sweep\": 1, \"failures\": [\(failures.map(jsonString).joined(separator: ", "))],\n \"rows\": [\n"
            + rows.joined(separator: ",\n") + "]}\n"
    }

    /// Adds a chunk's rows (in order) to `results`; its failures.
    static func mergeChunk(_ text: String, name: String, into results: Results) throws(UsageError) -> [String] {
        guard case .success(let value) = Json.parse(text), value["sweep"] != nil, let rows = value["rows"]?.array else {
            throw UsageError("\(name): not a sweep chunk")
        }
        for row in rows {
            var fields: [(String, ResultValue)] = []
            for field in row.array ?? [] {
                guard let f = field.array, f.count == 3, let c = f[0].string, let tag = f[1].string, let text = f[2].string,
                      let v = ResultValue(tag: tag, text: text) else { throw UsageError("\(name): a row field is not [column, type, value]") }
                fields.append((c, v))
            }
            results.record(fields)
        }
        return value["failures"]?.array?.compactMap(\.string) ?? []
    }
}

extension ResultValue {
    var tag: String {
        switch self {
        case .integer: "i"
        case .number: "n"
        case .string: "s"
        case .boolean: "b"
        }
    }

    var text: String {
        switch self {
        case .integer(let i): String(i)
        case .number(let d): "\(d)"
        case .string(let s): s
        case .boolean(let b): b ? "true" : "false"
        }
    }

    init?(tag: String, text: String) {
        switch tag {
        case "i": guard let i = Int64(text) else { return nil }; self = .integer(i)
        case "n": guard let d = Double(text) else { return nil }; self = .number(d)
        case "s": self = .string(text)
        case "b": self = .boolean(text == "true")
        default: return nil
        }
    }
}

extension Engine {
    /// `kernel.params`: what `mmlab sweep` varies, as the script reads it.
    func setParams(_ values: [(String, String)]) {
        let lua = Lua(runtime.L)
        lua_getglobal(lua.L, "kernel")
        lua.newTable(hash: Int32(values.count))
        for (name, text) in values {
            switch Sweep.value(text) {
            case .integer(let i): lua_pushinteger(lua.L, lua_Integer(i))
            case .number(let d): lua_pushnumber(lua.L, d)
            case .boolean(let b): lua_pushboolean(lua.L, b ? 1 : 0)
            case .string(let s): lua.push(s)
            }
            lua.setField(-2, name)
        }
        lua.setField(-2, "params")
        lua.pop()
    }
}
