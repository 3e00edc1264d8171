#if canImport(Glibc)
import Glibc
#endif
import MMCore

/// The `explore` command around the Explorer: worker processes, chunks
/// and plans, merging, shrinking, the schedule files and the report.
extension Explorer {
    /// Where and how the report goes.
    public struct Output {
        public var directory = "mmlab-explore"
        public var json = false
        public var jobs = 1
        public init() {}
    }

    /// Explores (in `jobs` worker processes when asked), shrinks each
    /// failure's first schedule, writes the schedules, prints the report.
    /// The exit status: 0 no failure, 1 failures.
    public func run(_ output: Output) throws(UsageError) -> Int32 {
        let jobs = options.strategy == .dfs ? 1 : max(1, min(output.jobs, options.runs))
        var report: Report
        if jobs == 1 {
            report = explore()
        } else {
            report = try exploreInWorkers(jobs)
        }
        return try finish(&report, output)
    }

    /// Shrinks, writes and prints a report (`run`, `--merge`).
    func finish(_ report: inout Report, _ output: Output) throws(UsageError) -> Int32 {
        try makeDirectory(output.directory)
        var names: Set<String> = []
        for i in report.groups.indices {
            let group = report.groups[i]
            var name = Self.fileName(group.failure)
            var n = 2
            while names.contains(name) { name = Self.fileName(group.failure) + "-\(n)"; n += 1 }
            names.insert(name)
            let path = output.directory + "/" + name + ".sched"
            try write(group.schedule, to: path, failure: group.failure, note: "run \(group.firstRun) of \(options.strategy)")
            report.groups[i].path = path
            let shrunk = shrink(group.schedule, signature: group.failure.signature)
            let shrunkPath = output.directory + "/" + name + ".shrunk.sched"
            try write(shrunk, to: shrunkPath, failure: group.failure, note: "shrunk from run \(group.firstRun) of \(options.strategy)")
            report.groups[i].shrunk = shrunk
            report.groups[i].shrunkPath = shrunkPath
        }
        print(output.json ? report.json : report.text(script: options.script, arguments: options.arguments, options: options))
        return report.groups.isEmpty && report.missing.isEmpty ? 0 : 1
    }

    /// `<kind>-<file>-<line>`, safe as a file name.
    static func fileName(_ failure: Failure) -> String {
        let raw = failure.site.isEmpty ? failure.kind : "\(failure.kind)-\(failure.site)"
        return String(raw.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" ? $0 : "-" })
    }

    /// The header every schedule file carries: what it replays on.
    func header(failure: Failure?, note: String?) -> [(String, String)] {
        let c = options.configuration
        var h: [(String, String)] = [("script", options.script)]
        if !options.arguments.isEmpty { h.append(("arguments", options.arguments.joined(separator: " "))) }
        h += [("seed", "\(c.seed)"), ("cpus", "\(c.cpus)"), ("memory", "\(c.memory)"),
              ("quantum", "\(c.quantum ?? Int(200))")]
        if let failure { h.append(("failure", failure.signature)) }
        if let note { h.append(("found by", note)) }
        return h
    }

    func write(_ decisions: [Decision], to path: String, failure: Failure?, note: String?) throws(UsageError) {
        let file = ScheduleFile(decisions: decisions, header: header(failure: failure, note: note))
        do {
            let out = try OutputFile(path: path)
            out.write(file.text)
            try out.commit()
        } catch {
            throw UsageError(error.message)
        }
    }

    // MARK: Shrinking a given schedule

    /// `explore --shrink FILE`: replays the schedule, and shrinks it while
    /// it fails the same way. Exit 1 with the shrunk schedule written, 0 if
    /// the schedule does not fail.
    public func shrinkFile(_ path: String, _ output: Output) throws(UsageError) -> Int32 {
        let schedule = try ScheduleFile.parse(try readText(path), name: path)
        let first = replay(schedule.decisions)
        for line in first.divergences { fputs("mmlab: warning: schedule \(line)\n", stderr) }
        guard let failure = first.failure else {
            print("\(path): the schedule does not fail: nothing to shrink")
            return 0
        }
        let shrunk = shrink(first.decisions, signature: failure.signature)
        try makeDirectory(output.directory)
        let target = output.directory + "/" + Self.fileName(failure) + ".shrunk.sched"
        try write(shrunk, to: target, failure: failure, note: "shrunk from \(path)")
        print("\(failure.signature)\n  \(path) (\(Report.describe(schedule.decisions)))\n  shrunk: \(target) (\(Report.describe(shrunk)))")
        return 1
    }

    // MARK: Chunks, plans, workers

    /// The runs of chunk `i` (1-based) of `n`.
    public static func chunk(_ i: Int, of n: Int, runs: Int) -> Range<Int> {
        let lower = runs * (i - 1) / n, upper = runs * i / n
        return lower..<upper
    }

    /// Runs this process's chunk and writes its JSON report to `path`.
    public func runChunk(to path: String) throws(UsageError) -> Int32 {
        let report = explore()
        do {
            let out = try OutputFile(path: path)
            out.write(chunkJson(report))
            try out.commit()
        } catch {
            throw UsageError(error.message)
        }
        return 0
    }

    /// A chunk's report, with what `--merge` needs to finish it.
    func chunkJson(_ report: Report) -> String {
        let c = options.configuration
        var options = [
            "\"script\": \(jsonString(self.options.script))",
            "\"arguments\": [\(self.options.arguments.map(jsonString).joined(separator: ", "))]",
            "\"seed\": \(jsonString("\(c.seed)"))", "\"cpus\": \(c.cpus)", "\"memory\": \(jsonString("\(c.memory)"))",
            "\"strict\": \(c.strict)", "\"stop_at_first\": \(self.options.stopAtFirst)",
            "\"total_runs\": \(self.options.runs)",
        ]
        if let q = c.quantum { options.append("\"quantum\": \(q)") }
        if let m = c.limits.maxInstructions { options.append("\"max_instructions\": \(jsonString("\(m)"))") }
        if let m = c.limits.maxMemory { options.append("\"max_memory\": \(m)") }
        if let t = c.limits.timeout { options.append("\"timeout\": \(t)") }
        if let r = self.options.range { options.append("\"first\": \(r.lowerBound)") }
        let body = report.json.dropLast(2)  // the closing "}\n"
        return body + ",\n  \"options\": {" + options.joined(separator: ", ") + "}\n}\n"
    }

    /// The command line of chunk `i` of `n` (for `--plan` and the workers),
    /// its report going to `path`.
    public func chunkArguments(_ i: Int, of n: Int, to path: String) -> [String] {
        let c = options.configuration
        var a = ["explore", "--strategy", options.strategy.rawValue, "--runs", "\(options.runs)",
                 "--depth", "\(options.depth)", "--preemptions", "\(options.preemptions)",
                 "--seed", "\(c.seed)", "--cpus", "\(c.cpus)", "--memory", "\(c.memory)"]
        if let q = c.quantum { a += ["--quantum", "\(q)"] }
        if c.strict { a.append("--strict") }
        if options.stopAtFirst { a.append("--stop-at-first") }
        if let t = options.timeLimit { a += ["--time-limit", "\(t)"] }
        if let m = c.limits.maxInstructions { a += ["--max-instructions", "\(m)"] }
        if let m = c.limits.maxMemory { a += ["--max-memory", "\(m)"] }
        if let t = c.limits.timeout { a += ["--timeout", "\(t)"] }
        a += ["--chunk", "\(i)/\(n)", "--chunk-out", path, "--", options.script] + options.arguments
        return a
    }

    /// `--plan CHUNKS`: one command per chunk for GNU parallel, or a Slurm
    /// array job script.
    public func plan(chunks: Int, slurm: Bool, directory: String) -> String {
        Chunks.plan(chunks, slurm: slurm, directory: directory, merge: "mmlab explore --merge", chunkArguments)
    }

    /// Runs the chunks in `jobs` processes of this program and merges them.
    private func exploreInWorkers(_ jobs: Int) throws(UsageError) -> Report {
        var report = Report(strategy: options.strategy, depth: options.depth, preemptionBound: options.preemptions)
        var stopped = false
        for (i, outcome) in try Chunks.runWorkers(jobs, chunkArguments) {
            let range = Self.chunk(i, of: jobs, runs: options.runs)
            let chunk: Report
            do throws(UsageError) {
                chunk = try Report(json: try outcome.get(), name: "chunk \(i)")
            } catch {
                report.missing.append("the worker for runs \(range.lowerBound + 1)...\(range.upperBound) \(error.message): its runs are not in this report")
                continue
            }
            guard !stopped else { continue }
            report.merge(chunk)
            if options.stopAtFirst && !chunk.groups.isEmpty { stopped = true }
        }
        return report
    }

    // MARK: Merging

    /// `--merge DIR...`: the chunks' reports (`*.json` in each folder, or
    /// the files named), merged, shrunk and printed as one process would.
    public static func merge(_ paths: [String], _ output: Output) throws(UsageError) -> Int32 {
        let files = Chunks.files(paths)
        guard !files.isEmpty else { throw UsageError("--merge: no chunk reports (*.json) in \(paths.joined(separator: " "))") }
        var merged: Report?
        var explorer: Explorer?
        var stopped = false
        for file in files {
            let text = try readText(file)
            let chunk = try Report(json: text, name: file)
            let options = try Options(chunkJson: text, name: file)
            if let explorer, explorer.options.script != options.script || explorer.options.strategy != chunk.strategy {
                throw UsageError("--merge: \(file) explored \(options.script) with \(chunk.strategy), not \(explorer.options.script) with \(explorer.options.strategy)")
            }
            if explorer == nil {
                var o = options
                o.strategy = chunk.strategy
                o.depth = chunk.depth
                o.preemptions = chunk.preemptionBound
                o.range = nil
                explorer = Explorer(options: o)
            }
            if merged == nil { merged = chunk } else if !stopped { merged?.merge(chunk) }
            if options.stopAtFirst && !chunk.groups.isEmpty { stopped = true }
        }
        guard var report = merged, let explorer else { return 2 }
        return try explorer.finish(&report, output)
    }
}

extension Explorer.Options {
    /// The options a chunk report was made with.
    init(chunkJson text: String, name: String) throws(UsageError) {
        guard case .success(let value) = Json.parse(text), let o = value["options"], let script = o["script"]?.string else {
            throw UsageError("\(name): not an explore chunk report (it has no options)")
        }
        self.init()
        self.script = script
        arguments = o["arguments"]?.array?.compactMap(\.string) ?? []
        configuration.seed = o["seed"]?.string.flatMap { UInt64($0) } ?? 0
        configuration.cpus = o["cpus"]?.int ?? 4
        configuration.memory = o["memory"]?.string.flatMap { UInt64($0) } ?? 256 << 20
        configuration.quantum = o["quantum"]?.int
        if case .bool(let strict)? = o["strict"] { configuration.strict = strict }
        if case .bool(let stop)? = o["stop_at_first"] { stopAtFirst = stop }
        runs = o["total_runs"]?.int ?? 0
        configuration.limits.maxInstructions = o["max_instructions"]?.string.flatMap { UInt64($0) }
        configuration.limits.maxMemory = o["max_memory"]?.int
        if case .number(let t)? = o["timeout"] { configuration.limits.timeout = t }
    }
}

/// A whole file's text.
func readText(_ path: String) throws(UsageError) -> String {
    guard let f = fopen(path, "r") else { throw UsageError("cannot read \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buffer, 1, buffer.count, f)
        if n <= 0 { break }
        bytes += buffer[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

public func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR
}

/// The names in a folder, as paths.
func listFiles(_ directory: String) -> [String] {
    guard let dir = opendir(directory) else { return [] }
    defer { closedir(dir) }
    var found: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafePointer(to: entry.pointee.d_name) {
            // SAFETY: d_name is a NUL-terminated array of 256 bytes.
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
        if !name.hasPrefix(".") { found.append(directory.hasSuffix("/") ? directory + name : directory + "/" + name) }
    }
    return found
}

/// Makes `path` (and its parents) unless it is a folder already.
func makeDirectory(_ path: String) throws(UsageError) {
    guard !isDirectory(path) else { return }
    var prefix = path.hasPrefix("/") ? "/" : ""
    for part in path.split(separator: "/") {
        prefix += part
        var st = stat()
        if stat(prefix, &st) == 0, st.st_mode & S_IFMT != S_IFDIR {
            throw UsageError("cannot create the folder \(path): \(String(cString: strerror(ENOTDIR)))")
        }
        if !isDirectory(prefix), mkdir(prefix, 0o755) != 0 {
            throw UsageError("cannot create the folder \(path): \(String(cString: strerror(errno)))")
        }
        prefix += "/"
    }
}

/// Runs split into chunks: worker processes of this program, and plans
/// that hand the chunks to GNU parallel or Slurm (`explore`, `sweep`).
enum Chunks {
    /// The command line of chunk `i` of `n`, its report going to a path.
    typealias Arguments = (_ i: Int, _ n: Int, _ path: String) -> [String]

    /// One command per chunk for GNU parallel, or an `sbatch --array` script.
    static func plan(_ chunks: Int, slurm: Bool, directory: String, merge: String, _ arguments: Arguments) -> String {
        let program = quote(CommandLine.arguments.first.flatMap { $0.isEmpty ? nil : $0 } ?? "mmlab")
        if slurm {
            let path = "\(directory)/chunk-0.json"
            let words = arguments(0, chunks, path).map { word in
                word == "0/\(chunks)" ? "\"$SLURM_ARRAY_TASK_ID/\(chunks)\""
                    : word == path ? "\"\(directory)/chunk-$SLURM_ARRAY_TASK_ID.json\"" : quote(word)
            }
            return """
                #!/bin/sh
                #SBATCH --array=1-\(chunks)
                #SBATCH --job-name=mmlab
                # Submit with sbatch; then: \(merge) \(quote(directory))
                mkdir -p \(quote(directory))
                \(program) \(words.joined(separator: " "))

                """
        }
        var lines: [String] = []
        for i in 1...chunks {
            let words = arguments(i, chunks, "\(directory)/chunk-\(i).json")
            lines.append("mkdir -p \(quote(directory)) && \(program) " + words.map(quote).joined(separator: " "))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A word as the shell reads it back.
    static func quote(_ word: String) -> String {
        if !word.isEmpty, word.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=:,+@%".contains($0) }) { return word }
        return "'" + word.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }

    /// Runs chunks 1...jobs in as many processes of this program; each
    /// chunk's report text, or why there is none (a worker that died).
    static func runWorkers(_ jobs: Int, _ arguments: Arguments) throws(UsageError) -> [(Int, Result<String, UsageError>)] {
        var template = "/tmp/mmlab-chunks-XXXXXX".utf8CString
        let made = template.withUnsafeMutableBufferPointer { buffer -> String? in
            guard let base = buffer.baseAddress, mkdtemp(base) != nil else { return nil }
            return String(cString: base)
        }
        guard let scratch = made else { throw UsageError("cannot make a folder for the workers under /tmp") }
        defer { rmdir(scratch) }
        var started: [(pid_t, Int, String)] = []
        for i in 1...jobs {
            let path = "\(scratch)/chunk-\(i).json"
            guard let pid = spawnSelf(arguments(i, jobs, path)) else {
                for (pid, _, _) in started { kill(pid, SIGKILL) }
                throw UsageError("cannot start a worker process")
            }
            started.append((pid, i, path))
        }
        var outcomes: [(Int, Result<String, UsageError>)] = []
        for (pid, i, path) in started {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            defer { unlink(path) }
            if status != 0 {
                let how = status & 0x7f != 0 ? "was killed by signal \(status & 0x7f)" : "failed (exit status \(status >> 8 & 0xff))"
                outcomes.append((i, .failure(UsageError(how))))
                continue
            }
            do throws(UsageError) { outcomes.append((i, .success(try readText(path)))) } catch { outcomes.append((i, .failure(error))) }
        }
        return outcomes
    }

    /// Starts this executable with `arguments`; its pid.
    static func spawnSelf(_ arguments: [String]) -> pid_t? {
        let argv = ([CommandLine.arguments.first ?? "mmlab"] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        return posix_spawn(&pid, "/proc/self/exe", nil, nil, argv, environ) == 0 ? pid : nil
    }

    /// The `*.json` files in each folder (by chunk number), or the files named.
    static func files(_ paths: [String]) -> [String] {
        var files: [String] = []
        for path in paths {
            if isDirectory(path) {
                files += listFiles(path).filter { $0.hasSuffix(".json") }.sorted { number($0) < number($1) }
            } else {
                files.append(path)
            }
        }
        return files
    }

    /// The number in `chunk-12.json`, for ordering.
    private static func number(_ path: String) -> Int {
        Int(path.split(separator: "/").last?.filter(\.isNumber) ?? "") ?? 0
    }
}
