#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MMLab

/// The options that split runs into chunks (`explore`, `sweep`): a plan for
/// GNU parallel or Slurm, a worker's chunk, and the merge of chunks.
struct ChunkOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Print one command per chunk of runs instead of running them.", valueName: "chunks")) var plan: Int?
    @Option(help: ArgumentHelp("parallel (GNU parallel, one command per line) or slurm (an sbatch --array script).", valueName: "format")) var planFormat: String = "parallel"
    @Option(parsing: .upToNextOption, help: ArgumentHelp("Merge the chunks' reports in these folders or files.", valueName: "dir")) var merge: [String] = []
    @Option(help: .hidden) var chunk: String?
    @Option(help: .hidden) var chunkOut: String?

    /// `--plan`'s chunk count and whether Slurm's format is asked, once checked.
    func checkedPlan() throws -> (chunks: Int, slurm: Bool)? {
        guard let plan else { return nil }
        guard plan >= 1 else { throw ValidationError("--plan takes a positive number of chunks, got \(plan)") }
        guard ["parallel", "slurm"].contains(planFormat) else {
            throw ValidationError("--plan-format takes parallel or slurm, got '\(planFormat)'")
        }
        return (plan, planFormat == "slurm")
    }

    /// The runs `--chunk I/N` names, of `runs`.
    func range(of runs: Int) throws -> Range<Int>? {
        guard let chunk else { return nil }
        let parts = chunk.split(separator: "/").compactMap { Int($0) }
        guard parts.count == 2, parts[1] >= 1, (1...parts[1]).contains(parts[0]) else {
            throw ValidationError("--chunk takes I/N with 1 ≤ I ≤ N, got '\(chunk)'")
        }
        return Explorer.chunk(parts[0], of: parts[1], runs: runs)
    }
}

struct ExploreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explore",
        abstract: "Run a script under many schedules and report every distinct failure, with its schedule shrunk.",
        usage: """
            mmlab explore [options] SCRIPT [args]
              mmlab explore --shrink FILE [options] SCRIPT [args]
              mmlab explore --plan CHUNKS [--plan-format parallel|slurm] [options] SCRIPT [args]
              mmlab explore --merge DIR...
            """,
        discussion: """
            Each run boots a fresh machine and runs the script with the scheduler's choices made by the strategy: random (a seeded coin at every point), pct (Burckhardt et al.'s Probabilistic Concurrency Testing; the report prints its 1/(n·k^(d−1)) bound) or dfs (every schedule with at most --preemptions preemptions, fewest first, as CHESS). Scheduling points are every binding call and every --quantum VM instructions; a task whose try_lock failed yields at its next point, so spin-waits do not starve the lock holder.

            A run fails when the script or a task raises (a bug error, a lockdep report, an errno), run() deadlocks, the model's own check fails, a limit stops it (--max-instructions defaults to 50000000 per run), or, with --strict, something leaks. Failures are grouped by signature (kind, site, message without addresses); for each, the first run's schedule is written to DIR/NAME.sched and its shrunk form (fewest preemptions, then tasks, then decisions) to DIR/NAME.shrunk.sched. Replay one with `mmlab --schedule FILE SCRIPT`.

            Runs are independent: --jobs J spreads them over J processes of this machine, and --plan CHUNKS prints one command per chunk for GNU parallel (`parallel < plan.txt`) or, with --plan-format slurm, an `sbatch --array` script; `mmlab explore --merge DIR...` then prints the report one process would have printed.

            Examples:
              mmlab explore examples/races/vma_after_guard.lua
              mmlab explore --strategy dfs examples/races/percpu_rmw.lua
              mmlab explore --plan 4 --out chunks examples/races/abba.lua

            Exit status: 0 no failure found, 1 failures found, 2 a usage error.
            """)

    @OptionGroup var machine: MachineOptions
    @Option(help: "random, pct or dfs.") var strategy: String = "pct"
    @Option(help: ArgumentHelp("Runs to make (default 100; dfs: 1000, or until every schedule ran).", valueName: "n")) var runs: Int?
    @Option(help: ArgumentHelp("PCT's bug depth d: d − 1 priority change points per run.", valueName: "d")) var depth: Int = 3
    @Option(help: ArgumentHelp("dfs: the most preemptions a schedule may have.", valueName: "k")) var preemptions: Int = 2
    @Option(help: ArgumentHelp("Worker processes (default: the machine's cores; dfs runs in one).", valueName: "j")) var jobs: Int?
    @Flag(help: "Stop at the first failing run.") var stopAtFirst = false
    @Option(help: ArgumentHelp("Stop starting runs after this much wall-clock time.", valueName: "seconds")) var timeLimit: Double?
    @Option(help: ArgumentHelp("Where the schedules go.", valueName: "dir")) var out: String = "mmlab-explore"
    @Flag(help: "Print the report as JSON.") var json = false
    @Option(help: ArgumentHelp("Shrink this failing schedule instead of exploring.", valueName: "file")) var shrink: String?
    @OptionGroup var chunks: ChunkOptions
    @Argument(help: "The script.") var script: String?
    @Argument(parsing: .captureForPassthrough, help: "Arguments for the script.") var arguments: [String] = []

    func run() throws {
        var output = Explorer.Output()
        output.directory = out
        output.json = json
        if let jobs {
            guard jobs >= 1 else { throw ValidationError("--jobs takes a positive number, got \(jobs)") }
            output.jobs = jobs
        } else {
            output.jobs = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        }
        do {
            if !chunks.merge.isEmpty {
                guard script == nil else { throw ValidationError("--merge takes only the chunks' folders, not a script") }
                throw ExitCode(try Explorer.merge(chunks.merge, output))
            }
            guard let script else { throw ValidationError("explore needs a script (mmlab explore SCRIPT [args])") }
            let explorer = Explorer(options: try options(script))
            if let shrink { throw ExitCode(try explorer.shrinkFile(shrink, output)) }
            if let plan = try chunks.checkedPlan() {
                guard explorer.options.strategy != .dfs else {
                    throw ValidationError("--plan splits random and pct runs; dfs is one search, run it in one process")
                }
                print(explorer.plan(chunks: plan.chunks, slurm: plan.slurm, directory: out), terminator: "")
                return
            }
            if let chunkOut = chunks.chunkOut { throw ExitCode(try explorer.runChunk(to: chunkOut)) }
            throw ExitCode(try explorer.run(output))
        } catch let error as UsageError {
            throw ValidationError(error.message)
        }
    }

    private func options(_ script: String) throws -> Explorer.Options {
        guard let strategy = Explorer.Strategy(rawValue: strategy) else {
            throw ValidationError("--strategy takes random, pct or dfs, got '\(self.strategy)'")
        }
        guard depth >= 1 else { throw ValidationError("--depth takes a positive number, got \(depth)") }
        guard preemptions >= 0 else { throw ValidationError("--preemptions takes a number of at least 0, got \(preemptions)") }
        var o = Explorer.Options()
        o.strategy = strategy
        o.runs = runs ?? (strategy == .dfs ? 1000 : 100)
        guard o.runs >= 1 else { throw ValidationError("--runs takes a positive number, got \(o.runs)") }
        o.depth = depth
        o.preemptions = preemptions
        o.configuration = try machine.standalone().configuration
        o.configuration.outputDirectory = nil
        o.stopAtFirst = stopAtFirst
        if let timeLimit {
            guard timeLimit > 0, timeLimit.isFinite else { throw ValidationError("--time-limit takes a positive number of seconds") }
            o.timeLimit = timeLimit
        }
        o.script = script
        o.arguments = arguments
        o.range = try chunks.range(of: o.runs)
        guard access(script, R_OK) == 0 else { throw ValidationError("cannot read the script \(script)") }
        return o
    }
}

struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Run an experiment for every combination of parameters and seeds; one table of every run's results.",
        usage: """
            mmlab sweep SCRIPT --param NAME=V1,V2,... [--param ...] --seeds A..B [options] [-- args]
              mmlab sweep --plan CHUNKS [--plan-format parallel|slurm] --out DIR SCRIPT --param ... --seeds A..B
              mmlab sweep --merge DIR... [--results FILE]
            """,
        discussion: """
            Each run boots a fresh machine with its seed; the script reads its parameters as kernel.params.NAME (numbers when they read as numbers). Every row the runs record with kernel.results.record goes into one table, the parameters and the seed as its first columns, in run order: CSV on standard output, or --results FILE (.csv or .json). A run that fails is reported on stderr (exit status 1); its rows so far are kept.

            Examples:
              mmlab sweep examples/percpu_counter.lua --param tasks=2,4 --seeds 1..3
              mmlab sweep examples/percpu_counter.lua --param events=50 --jobs 2
            """)

    @OptionGroup var machine: MachineOptions
    @Option(help: ArgumentHelp("A parameter and its values, NAME=V1,V2,...; repeat for more.", valueName: "name=values")) var param: [String] = []
    @Option(help: ArgumentHelp("The seeds, A..B (each combination runs once per seed).", valueName: "a..b")) var seeds: String = "0..0"
    @Option(help: ArgumentHelp("Worker processes (default: the machine's cores).", valueName: "j")) var jobs: Int?
    @Option(help: ArgumentHelp("Write the table here (.csv or .json) instead of CSV on standard output.", valueName: "file")) var results: String?
    @Option(help: ArgumentHelp("Where --plan's chunks write.", valueName: "dir")) var out: String = "mmlab-sweep"
    @OptionGroup var chunks: ChunkOptions
    @Argument(help: "The script.") var script: String?
    @Argument(parsing: .postTerminator, help: "Arguments for the script, after --.") var arguments: [String] = []

    func run() throws {
        do {
            if !chunks.merge.isEmpty { throw ExitCode(try Sweep.merge(chunks.merge, results: results)) }
            guard let script else { throw ValidationError("sweep needs a script (mmlab sweep SCRIPT --param NAME=V1,V2 --seeds A..B)") }
            guard access(script, R_OK) == 0 else { throw ValidationError("cannot read the script \(script)") }
            var sweep = Sweep()
            sweep.script = script
            sweep.arguments = arguments
            sweep.configuration = try machine.standalone().configuration
            var names: Set<String> = []
            for p in param {
                let (name, values) = try Sweep.parameter(p)
                guard names.insert(name).inserted else { throw ValidationError("--param \(name) is given twice") }
                sweep.parameters.append((name, values))
            }
            sweep.seeds = try Sweep.seedRange(seeds)
            if let plan = try chunks.checkedPlan() {
                print(sweep.plan(chunks: plan.chunks, slurm: plan.slurm, directory: out), terminator: "")
                return
            }
            sweep.range = try chunks.range(of: sweep.runCount)
            if let chunkOut = chunks.chunkOut { throw ExitCode(try sweep.runChunk(to: chunkOut)) }
            if let jobs, jobs < 1 { throw ValidationError("--jobs takes a positive number, got \(jobs)") }
            throw ExitCode(try sweep.run(jobs: jobs ?? max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))), results: results))
        } catch let error as UsageError {
            throw ValidationError(error.message)
        }
    }
}

struct DocCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doc",
        abstract: "The API reference: a function, method, type or module; or all of it for editors and the web.",
        discussion: """
            Every function and method the kernel table binds has its arguments, what it does, its errors and the kernel or Rust function it models. `mmlab doc kernel.mm` lists a module, `mmlab doc Page` a type's methods, `mmlab doc Page:read_u8` one method. `mmlab doc --lua-ls > kernel.lua` writes lua-language-server annotations (put the file in the workspace, or in its workspace.library) so an editor completes and checks experiment scripts; `mmlab doc --markdown` writes the reference as docs/api.md has it.

            Examples:
              mmlab doc kernel.page
              mmlab doc Page:read_u8
              mmlab doc --lua-ls
            """)
    @Flag(help: "Print lua-language-server ---@meta annotations.") var luaLs = false
    @Flag(help: "Print the reference as Markdown (docs/api.md).") var markdown = false
    @Argument(help: "A function (kernel.mm.mm_alloc), method (Page:read_u8), type (Page) or module (kernel.mm).") var name: String?

    func run() throws {
        let docs = ApiDocs.shipped
        guard !(luaLs && markdown), !((luaLs || markdown) && name != nil) else {
            throw ValidationError("give one of NAME, --lua-ls and --markdown")
        }
        if luaLs { print(docs.luaLS, terminator: ""); return }
        if markdown { print(docs.markdown, terminator: ""); return }
        guard let name else {
            print("Modules (mmlab doc NAME):")
            for s in docs.sections { print("  " + s.name.padding(16) + s.summary) }
            return
        }
        guard let text = docs.help(name) else {
            let near = docs.suggestions(name)
            throw ValidationError("no function, method, type or module named '\(name)'" + (near.isEmpty ? "" : " (did you mean \(near.joined(separator: ", "))?)"))
        }
        print(text)
    }
}
