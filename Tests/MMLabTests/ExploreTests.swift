import Foundation
import MMCore
import Testing
@testable import MMLab

/// A lost update: two tasks on CPU 0 read, then write back one more.
private let lostUpdate = """
    local v = kernel.percpu.alloc("u64", 0)
    local function worker()
      for i = 1, 2 do
        local x = v:per_cpu(0)
        v:set_per_cpu(0, x + 1)
      end
    end
    kernel.sched.spawn(worker, {name = "a", cpu = 0})
    kernel.sched.spawn(worker, {name = "b", cpu = 0})
    kernel.sched.run()
    print("total", v:per_cpu(0))
    assert(v:per_cpu(0) == 4, "lost update")
    """

private func explorer(_ script: String, _ strategy: Explorer.Strategy, runs: Int = 100, preemptions: Int = 2,
                      arguments: [String] = []) -> Explorer {
    var o = Explorer.Options()
    o.strategy = strategy
    o.runs = runs
    o.preemptions = preemptions
    o.script = script
    o.arguments = arguments
    return Explorer(options: o)
}

private let zoo = ["abba", "percpu_rmw", "shrinker_lock", "teardown_mmget", "vma_after_guard"]

@Suite("Schedule exploration")
struct ExploreTests {
    @Test("a decision line reads back as written; what is not one is refused with its line")
    func scheduleFiles() throws {
        let d = Decision(kind: .preempt, task: "worker2", step: 14, site: "binder.lua:88", next: "shrinker")
        #expect(d.description == "preempt worker2 at binder.lua:88 (step 14 of worker2) -> shrinker")
        #expect(Decision(line: d.description) == d)
        for kind in SchedulePoint.Kind.allCases {
            let other = Decision(kind: kind, task: "a", step: 1, site: "(end)", next: "b")
            #expect(Decision(line: other.description) == other)
        }
        #expect(Decision(line: "preempt worker2 at x.lua:1 (step 0 of worker2) -> a") == nil, "steps count from 1")
        #expect(Decision(line: "preempt a at x.lua:1 (step 3 of b) -> c") == nil, "one task names the step")
        let file = ScheduleFile(decisions: [d], header: [("script", "x.lua"), ("seed", "3")])
        let back = try ScheduleFile.parse(file.text, name: "f.sched")
        #expect(back == file)
        #expect(back.value("seed") == "3")
        #expect(back.entries.first?.line == 5, "the line a decision is on, for reports")
        #expect(throws: UsageError.self) { try ScheduleFile.parse("preempt a at x.lua:1 (step 1 of a) -> b\n", name: "f") }
        do {
            _ = try ScheduleFile.parse("# mmlab schedule 1\nswap a and b\n", name: "bad.sched")
            Issue.record("a corrupt line parsed")
        } catch {
            #expect(error.message == "bad.sched:2: not a scheduling decision: 'swap a and b' (expected: preempt TASK at FILE:LINE (step N of TASK) -> TASK)")
        }
        do {
            _ = try ScheduleFile.parse("{\"strategy\": \"pct\"}\n", name: "x.json")
            Issue.record("a foreign file parsed")
        } catch {
            #expect(error.message == "x.json is not an mmlab schedule (its first line must be '# mmlab schedule 1')")
        }
    }

    @Test("signatures drop addresses and folders; kinds follow the error")
    func signatures() {
        let bug = Failure(EngineError(message: "task 'w': /a/b/x.lua:32: BUG: use of VmaRef{0x7effffffc000-0x7f0000000000} after its guard",
                                      kernelError: .bug("use")))
        #expect(bug.kind == "bug")
        #expect(bug.site == "x.lua:32")
        #expect(bug.signature == "bug at x.lua:32: task 'w': x.lua:32: BUG: use of VmaRef{0x…-0x…} after its guard")
        #expect(Failure(EngineError(message: "x.lua:3: EDEADLK: deadlock", kernelError: KernelError(.EDEADLK, "d"))).kind == "EDEADLK")
        #expect(Failure(EngineError(message: "x.lua:3: BUG: possible circular locking dependency detected", kernelError: .bug("possible circular locking"))).kind == "lockdep")
        #expect(Failure(EngineError(message: "the script ran past its --max-instructions limit")).kind == "limit")
        #expect(Failure(EngineError(message: "x.lua:1: boom")).signature == "error at x.lua:1: x.lua:1: boom")
    }

    @Test("dfs explores every schedule within the bound once, and finds the lost update with one preemption but not with none")
    func dfs() throws {
        let path = try temporaryFile(lostUpdate)
        let none = explorer(path, .dfs, runs: 10_000, preemptions: 0).explore()
        #expect(none.exhaustive)
        #expect(none.groups.isEmpty, "no preemption, no lost update")
        let one = explorer(path, .dfs, runs: 10_000, preemptions: 1)
        let report = one.explore()
        #expect(report.exhaustive)
        #expect(report.runs > none.runs)
        #expect(report.groups.map(\.failure.signature) == ["error at \(URL(fileURLWithPath: path).lastPathComponent):12: \(URL(fileURLWithPath: path).lastPathComponent):12: lost update"])
        // Every schedule explored is a different one.
        var seen: Set<[Decision]> = []
        var prefixes: [[Int]] = [[]]
        while let prefix = prefixes.popLast() {
            let strategy = DfsStrategy(prefix: prefix)
            let run = one.execute(strategy)
            #expect(seen.insert(run.decisions).inserted, "schedule \(run.decisions) ran twice")
            var used = 0
            for (i, point) in strategy.trail.enumerated() {
                if i >= prefix.count {
                    for alt in 0..<point.count where alt != point.chosen {
                        if used + (point.preemptive && alt != 0 ? 1 : 0) <= 1 { prefixes.append(strategy.trail[..<i].map(\.chosen) + [alt]) }
                    }
                }
                if point.preemptive && point.chosen != 0 { used += 1 }
            }
        }
        #expect(seen.count == report.runs, "dfs ran each schedule within the bound exactly once")
    }

    @Test("a failing schedule replays to the same failure and output, and shrinks to one preemption")
    func replayAndShrink() throws {
        let path = try temporaryFile(lostUpdate)
        let e = explorer(path, .random, runs: 50)
        let report = e.explore()
        let group = try #require(report.groups.first)
        #expect(group.schedule.filter(\.isPreemption).count >= 1)
        let again = e.replay(group.schedule)
        #expect(again.failure?.signature == group.failure.signature)
        #expect(again.decisions == group.schedule, "the replay takes the same decisions")
        #expect(again.divergences.isEmpty)
        let shrunk = e.shrink(group.schedule, signature: group.failure.signature)
        #expect(shrunk.filter(\.isPreemption).count == 1, "a lost update needs one preemption: \(shrunk)")
        #expect(e.replay(shrunk).failure?.signature == group.failure.signature)
    }

    @Test("a decision that does not apply is reported with its line, not skipped in silence")
    func divergence() throws {
        let path = try temporaryFile(lostUpdate)
        let e = explorer(path, .random)
        let name = URL(fileURLWithPath: path).lastPathComponent
        let late = Decision(kind: .preempt, task: "a", step: 99, site: "\(name):4", next: "b")
        let wrongSite = Decision(kind: .preempt, task: "a", step: 1, site: "\(name):5", next: "b")
        let nobody = Decision(kind: .preempt, task: "b", step: 1, site: "\(name):4", next: "nobody")
        let run = e.replay([wrongSite, nobody, late])
        #expect(run.divergences == [
            "schedule:3: preempt a at \(name):5 (step 1 of a) -> b: step 1 of a is at \(name):4 in this run (the script changed?); taken anyway",
            "schedule:4: preempt b at \(name):4 (step 1 of b) -> nobody: nobody cannot run there (it could be: b, a)",
            "schedule:5: preempt a at \(name):4 (step 99 of a) -> b: never reached: the run ended first",
        ])
    }

    @Test("pct prints its bound, and runs of a chunk are the same runs as in one process")
    func pctAndChunks() throws {
        let path = try temporaryFile(lostUpdate)
        let whole = explorer(path, .pct, runs: 24).explore()
        #expect(whole.tasks == 3)
        #expect(whole.steps > 0)
        #expect(abs(whole.pctBound - 1 / (3 * pow(Double(whole.steps), 2))) < 1e-12)
        var merged: Report?
        for i in 1...4 {
            var e = explorer(path, .pct, runs: 24)
            e.options.range = Explorer.chunk(i, of: 4, runs: 24)
            let json = e.chunkJson(e.explore())
            let chunk = try Report(json: json, name: "chunk-\(i)")
            if merged == nil { merged = chunk } else { merged?.merge(chunk) }
        }
        let m = try #require(merged)
        #expect(m.json == whole.json, "four merged chunks report what one process does")
        #expect(Explorer.chunk(4, of: 4, runs: 10) == 7..<10)
        #expect(Explorer.chunk(1, of: 4, runs: 3) == 0..<0, "more chunks than runs leaves some empty")
    }

    @Test("a task spinning on try_lock yields at its next point: dfs ends, exhaustive, with no run hitting a limit")
    func spinWait() throws {
        let path = try temporaryFile("""
            local lock = kernel.sync.Mutex("m")
            local holder = kernel.sched.spawn(function()
              local g <close> = lock:lock()
              for _ = 1, 3 do kernel.sched.cond_resched() end
            end, {name = "holder"})
            local spinner = kernel.sched.spawn(function()
              local tries = 0
              while true do
                local g <close> = lock:try_lock()
                if g then return tries end
                tries = tries + 1
              end
            end, {name = "spinner"})
            kernel.sched.run()
            """)
        var e = explorer(path, .dfs, runs: 5000, preemptions: 2)
        e.options.configuration.limits.maxInstructions = 1_000_000
        let report = e.explore()
        #expect(report.exhaustive, "a spin-wait does not make dfs diverge")
        #expect(report.groups.isEmpty, "no run spins into the limit: \(report.groups.map(\.failure.signature))")
    }

    @Test("--quantum sets how many VM instructions make a scheduling point")
    func quantum() throws {
        let path = try temporaryFile("""
            local t = kernel.sched.spawn(function() local x = 0 for i = 1, 20000 do x = x + i end end)
            local u = kernel.sched.spawn(function() local x = 0 for i = 1, 20000 do x = x + i end end)
            kernel.sched.run()
            """)
        var fine = explorer(path, .pct, runs: 1), coarse = explorer(path, .pct, runs: 1)
        fine.options.configuration.quantum = 100
        coarse.options.configuration.quantum = 10_000
        let (f, c) = (fine.explore().steps, coarse.explore().steps)
        #expect(f > 20 * c, "\(f) points at 100 instructions, \(c) at 10000")
    }

    @Test("every zoo bug is found by pct within its documented budget and by dfs within two preemptions; the fixed variants run clean")
    func zooBugs() throws {
        for name in zoo {
            let path = repositoryRoot + "/examples/races/\(name).lua"
            let source = try String(contentsOfFile: path, encoding: .utf8)
            let budget = try #require(source.firstMatch(of: #/Budget: pct finds it within (\d+) runs?[^;]*;\s*(?:--\s*)?dfs with at most (\d+) preemptions?\./#),
                                      "\(name) documents its budget")
            let runs = try #require(Int(budget.1)), bound = try #require(Int(budget.2))
            var pct = explorer(path, .pct, runs: runs)
            pct.options.stopAtFirst = true
            let found = pct.explore()
            #expect(found.groups.count == 1, "\(name): pct finds it within \(runs) runs")
            var dfs = explorer(path, .dfs, runs: 1000, preemptions: 2)
            dfs.options.stopAtFirst = true
            let d = dfs.explore()
            let group = try #require(d.groups.first, "\(name): dfs finds it")
            let shrunk = dfs.shrink(group.schedule, signature: group.failure.signature)
            #expect(shrunk.filter(\.isPreemption).count <= bound, "\(name): the shrunk schedule has at most the bug's depth of preemptions")
            #expect(dfs.replay(shrunk).failure?.signature == group.failure.signature, "\(name): the shrunk schedule replays the failure")
            let fixed = explorer(path, .pct, runs: 100, arguments: ["fixed"]).explore()
            #expect(fixed.groups.isEmpty && fixed.runs == 100, "\(name) fixed: pct runs clean to the end of its budget")
            let fixedDfs = explorer(path, .dfs, runs: 500, preemptions: 2, arguments: ["fixed"]).explore()
            #expect(fixedDfs.groups.isEmpty, "\(name) fixed: dfs finds nothing")
        }
    }
}

@Suite("mmlab explore and --schedule")
struct ExploreCommandTests {
    @Test("explore writes the first and the shrunk schedule; --schedule replays the same failure, output and trace, marking each decision")
    func exploreAndReplay() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = repositoryRoot + "/examples/races/teardown_mmget.lua"
        let r = try mmlab(["explore", "--strategy", "dfs", "--jobs", "1", "--out", dir, script])
        #expect(r.status == 1)
        let signature = "bug at teardown_mmget.lua:43: task 'driver': teardown_mmget.lua:43: BUG: use of MmWithUser{id=1, users=0, count=0} after mm_users reached zero: the address space is gone"
        let shrunkPath = dir + "/bug-teardown_mmget.lua-43.shrunk.sched"
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "mmlab explore \(script): dfs, \(lines.count > 1 ? String(lines[1].split(separator: " ")[2]) : "?") runs, seed 0")
        #expect(lines.contains("  " + signature))
        #expect(lines.contains("    replay:   mmlab --schedule \(shrunkPath) \(script)"))
        let shrunk = try ScheduleFile.parse(try String(contentsOfFile: shrunkPath, encoding: .utf8), name: shrunkPath)
        #expect(shrunk.preemptions == 1)
        #expect(shrunk.decisions.map(\.description) == ["preempt driver at teardown_mmget.lua:37 (step 3 of driver) -> process"])
        #expect(FileManager.default.fileExists(atPath: dir + "/bug-teardown_mmget.lua-43.sched"))

        let trace1 = dir + "/t1.json", trace2 = dir + "/t2.json"
        let first = try mmlab(["--schedule", shrunkPath, "--trace", trace1, script])
        let second = try mmlab(["run", "--schedule", shrunkPath, "--trace", trace2, script])
        #expect(first.status == 1)
        #expect(first.stderr.hasPrefix("\(mmlabPath): task 'driver': \(script):43: BUG: use of MmWithUser{id=1, users=0, count=0} after mm_users reached zero: the address space is gone\n"))
        #expect(first.stdout == second.stdout)
        #expect(second.stderr.hasPrefix("mmlab: task 'driver': \(script):43: BUG: use of MmWithUser"))
        let t1 = try String(contentsOfFile: trace1, encoding: .utf8)
        #expect(t1 == (try String(contentsOfFile: trace2, encoding: .utf8)), "the same trace twice")
        #expect(t1.contains("\"name\": \"schedule: preempt driver at teardown_mmget.lua:37 (step 3 of driver) -> process\""))
        // The fixed variant with the same schedule: the decision still applies, and nothing fails.
        let fixed = try mmlab(["--schedule", shrunkPath, script, "fixed"])
        #expect(fixed.status == 0)
        #expect(fixed.stdout == "the process is gone: nothing to do\n")
    }

    @Test("exit status 0 when nothing fails, 1 with failures, 2 for usage errors, with whole-line messages")
    func exitStatus() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clean = try mmlab(["explore", "--runs", "5", "--jobs", "1", "--out", dir, "examples/races/abba.lua", "fixed"])
        #expect(clean.status == 0)
        #expect(clean.stdout.hasSuffix("no failure found\n"))
        let loops = try temporaryFile("while true do end")
        let limit = try mmlab(["explore", "--runs", "2", "--jobs", "1", "--max-instructions", "100000", "--out", dir, loops])
        #expect(limit.status == 1, "a script that never ends is a signature, not a hang")
        #expect(limit.stdout.contains("\n  limit: the script ran past its --max-instructions limit\n    on the default schedule\n"))
        let bad = try mmlab(["explore", "--strategy", "bfs", "examples/races/abba.lua"])
        #expect(bad.status == 2)
        #expect(bad.stderr.hasPrefix("Error: --strategy takes random, pct or dfs, got 'bfs'\n"))
        let corrupt = try temporaryFile("# mmlab schedule 1\nnot a decision\n", suffix: ".sched")
        let replay = try mmlab(["--schedule", corrupt, "examples/races/abba.lua"])
        #expect(replay.status == 2)
        #expect(replay.stderr == "\(mmlabPath): \(corrupt):2: not a scheduling decision: 'not a decision' (expected: preempt TASK at FILE:LINE (step N of TASK) -> TASK)\n")
        let exits = try temporaryFile("os.exit(3)")
        let e = try mmlab(["explore", "--runs", "1", "--jobs", "1", "--out", dir, exits])
        #expect(e.status == 1, "an explored run cannot end the explorer")
        #expect(e.stdout.contains("os.exit(3) ends the process, which an explored run may not"))
        let always = try temporaryFile("error('always')")
        let once = try mmlab(["explore", "--jobs", "2", "--out", dir, always])
        #expect(once.status == 1)
        let aname = URL(fileURLWithPath: always).lastPathComponent
        #expect(once.stdout.contains("\nthe default schedule fails already: no interleaving is needed (fix this first)\n1 failure:\n  error at \(aname):1: \(aname):1: always\n    on the default schedule\n"),
                "a script that fails on every schedule is reported at once")
        let killer = try temporaryFile("kernel.sched.spawn(function() end) os.execute('kill -9 $PPID')")
        let killed = try mmlab(["explore", "--runs", "4", "--jobs", "2", "--out", dir, killer])
        #expect(killed.status == 1)
        #expect(killed.stdout.contains("\nmissing: the worker for runs 1...2 was killed by signal 9: its runs are not in this report\nmissing: the worker for runs 3...4 was killed by signal 9: its runs are not in this report\n"))
        let planDfs = try mmlab(["explore", "--strategy", "dfs", "--plan", "2", "examples/races/abba.lua"])
        #expect(planDfs.status == 2)
        #expect(planDfs.stderr.hasPrefix("Error: --plan splits random and pct runs; dfs is one search, run it in one process\n"))
    }

    @Test("--jobs and a plan of four chunks run as separate processes and merged print what one process prints")
    func planAndMerge() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = "examples/races/shrinker_lock.lua"
        let one = try mmlab(["explore", "--runs", "40", "--jobs", "1", "--json", "--out", dir + "/one", script])
        #expect(one.status == 1)
        let jobs = try mmlab(["explore", "--runs", "40", "--jobs", "3", "--json", "--out", dir + "/one", script])
        #expect(jobs.stdout == one.stdout)
        let plan = try mmlab(["explore", "--runs", "40", "--plan", "4", "--out", dir + "/chunks", script])
        let commands = plan.stdout.split(separator: "\n").map(String.init)
        #expect(commands.count == 4)
        for command in commands {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", command]
            p.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
            try p.run()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(command)")
        }
        let merged = try mmlab(["explore", "--merge", dir + "/chunks", "--json", "--out", dir + "/one"])
        #expect(merged.status == 1)
        #expect(merged.stdout == one.stdout, "the merged report is the one process's")
        let text = try mmlab(["explore", "--runs", "40", "--jobs", "1", "--out", dir + "/one", script])
        let mergedText = try mmlab(["explore", "--merge", dir + "/chunks", "--out", dir + "/one"])
        #expect(mergedText.stdout == text.stdout)
        let slurm = try mmlab(["explore", "--runs", "40", "--plan", "4", "--plan-format", "slurm", "--out", "chunks", script])
        #expect(slurm.stdout.contains("#SBATCH --array=1-4\n"))
        #expect(slurm.stdout.contains("--chunk \"$SLURM_ARRAY_TASK_ID/4\" --chunk-out \"chunks/chunk-$SLURM_ARRAY_TASK_ID.json\" -- examples/races/shrinker_lock.lua\n"))
    }

    @Test("sweep runs every combination and seed into one table with the parameters as columns; jobs, plans and merges give the same bytes")
    func sweep() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = try temporaryFile("""
            kernel.results.record{pages = kernel.params.n * 2}
            if kernel.params.n == 3 and kernel.params.kind == "b" then error("three b") end
            """)
        let args = ["sweep", script, "--param", "n=1,3", "--param", "kind=a,b", "--seeds", "5..6"]
        let one = try mmlab(args + ["--jobs", "1"])
        #expect(one.status == 1, "a failed run fails the sweep")
        #expect(one.stdout == """
            n,kind,seed,pages
            1,a,5,2
            1,a,6,2
            1,b,5,2
            1,b,6,2
            3,a,5,6
            3,a,6,6
            3,b,5,6
            3,b,6,6

            """)
        let name = URL(fileURLWithPath: script).lastPathComponent
        #expect(one.stderr == "mmlab sweep: run 7 (n=3 kind=b seed=5): \(script):2: three b\nmmlab sweep: run 8 (n=3 kind=b seed=6): \(script):2: three b\n", "\(name)")
        #expect(try mmlab(args + ["--jobs", "3"]).stdout == one.stdout)
        let plan = try mmlab(args + ["--plan", "3", "--out", dir + "/chunks"])
        for command in plan.stdout.split(separator: "\n") {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", String(command)]
            try p.run()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
        }
        let merged = try mmlab(["sweep", "--merge", dir + "/chunks"])
        #expect(merged.stdout == one.stdout)
        #expect(merged.stderr == one.stderr)
        let json = try mmlab(args + ["--jobs", "1", "--results", dir + "/t.json"])
        #expect(json.stdout.isEmpty)
        #expect(try String(contentsOfFile: dir + "/t.json", encoding: .utf8).hasPrefix("[\n  {\"n\": 1, \"kind\": \"a\", \"seed\": 5, \"pages\": 2},"))
        let twice = try mmlab(["sweep", script, "--param", "n=1", "--param", "n=2"])
        #expect(twice.status == 2)
        #expect(twice.stderr.hasPrefix("Error: --param n is given twice\n"))
        let seeds = try mmlab(["sweep", script, "--seeds", "9..3"])
        #expect(seeds.stderr.hasPrefix("Error: --seeds takes A..B with A ≤ B, such as 1..10, got '9..3'\n"))
    }

    @Test("a regression file explores too, and mmlab test --schedule replays its failing case")
    func testSchedule() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = try temporaryFile("""
            test("the lost update", function()
              local v = kernel.percpu.alloc("u64", 0)
              local function worker()
                local x = v:per_cpu(0)
                v:set_per_cpu(0, x + 1)
              end
              kernel.sched.spawn(worker, {name = "a", cpu = 0})
              kernel.sched.spawn(worker, {name = "b", cpu = 0})
              kernel.sched.run()
              assert(v:per_cpu(0) == 2, "lost update")
            end)
            """)
        let name = URL(fileURLWithPath: file).lastPathComponent
        let e = try mmlab(["explore", "--strategy", "dfs", "--jobs", "1", "--out", dir, file])
        #expect(e.status == 1)
        #expect(e.stdout.contains("\n  error at \(name):10: \(name):10: lost update\n"))
        let plain = try mmlab(["test", file])
        #expect(plain.status == 0, "the default schedule passes")
        let replay = try mmlab(["test", "--schedule", dir + "/error-\(name)-10.shrunk.sched", file])
        #expect(replay.status == 1)
        #expect(replay.stdout == "FAIL \(file): the lost update\n     \(file):10: lost update\n0 passed, 1 failed\n")
    }

    @Test("explore --shrink shrinks a given failing schedule; a schedule that does not fail has nothing to shrink")
    func shrinkGiven() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = "examples/races/vma_after_guard.lua"
        _ = try mmlab(["explore", "--strategy", "random", "--jobs", "1", "--out", dir, script])
        let first = dir + "/bug-vma_after_guard.lua-38.sched"
        let original = try ScheduleFile.parse(try String(contentsOfFile: first, encoding: .utf8), name: first)
        #expect(original.preemptions > 1)
        let out = dir + "/again"
        let r = try mmlab(["explore", "--shrink", first, "--out", out, script])
        #expect(r.status == 1)
        #expect(r.stdout == "bug at vma_after_guard.lua:38: task 'worker': vma_after_guard.lua:38: BUG: use of VmaRef{0x…-0x…} after its MmapReadGuard{mm=1} was released: the VMA is no longer protected\n  \(first) (\(original.decisions.count) decisions, \(original.preemptions) preemptions)\n  shrunk: \(out)/bug-vma_after_guard.lua-38.shrunk.sched (1 decision, 1 preemption)\n")
        let clean = try mmlab(["explore", "--shrink", first, "--out", out, script, "fixed"])
        #expect(clean.status == 0)
        #expect(clean.stdout == "\(first): the schedule does not fail: nothing to shrink\n")
    }

    @Test("an option of mmlab's given twice is a usage error in every form; after the script, words are the script's")
    func twice() throws {
        let script = try temporaryFile("print(...)")
        let lua = try mmlab(["--seed", "1", "--seed", "2", script])
        #expect(lua.status == 2)
        #expect(lua.stderr.hasPrefix("\(mmlabPath): --seed is given twice\n"))
        let strict = try mmlab(["--strict", "--strict", script])
        #expect(strict.stderr.hasPrefix("\(mmlabPath): --strict is given twice\n"))
        for args in [["run", "--cpus", "2", "--cpus=3", script], ["examples", "pages", "--out", "/tmp/a", "--out", "/tmp/b"],
                     ["test", "--tap", script, "--tap"]] {
            let r = try mmlab(args)
            #expect(r.status == 2, "\(args)")
            #expect(r.stderr.hasSuffix(" is given twice\n"), "\(args): \(r.stderr)")
        }
        let passed = try mmlab(["run", "--seed", "1", script, "--seed", "2", "--seed"])
        #expect(passed.status == 0)
        #expect(passed.stdout == "--seed\t2\t--seed\n", "the script's own words")
    }
}

