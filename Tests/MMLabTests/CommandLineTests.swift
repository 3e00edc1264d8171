import Foundation
import Testing
import MMLab

@Suite("The mmlab command")
struct CommandLineTests {
    @Test("-e prints with the C meaning of PAGE_MASK")
    func execute() throws {
        let r = try mmlab(["-e", "print(kernel.PAGE_SIZE, kernel.PAGE_MASK)"])
        #expect(r.stdout == "4096\t-4096\n")
        #expect(r.status == 0)
    }

    @Test("a script on standard input")
    func stdin() throws {
        #expect(try mmlab([], stdin: "print(1+1)\n").stdout == "2\n")
        let r = try mmlab(["-", "x", "y"], stdin: "print(arg[0], arg[1], select('#', ...), ...)\n")
        #expect(r.stdout == "-\tx\t2\tx\ty\n")
    }

    @Test("a failing script exits 1 with the message and a traceback")
    func failure() throws {
        let script = try temporaryFile("local p = kernel.page.Page.alloc_page()\np:write_raw('xx', 4095)\n")
        let r = try mmlab([script])
        #expect(r.status == 1)
        #expect(r.stderr.contains("\(mmlabPath): \(script):2: EINVAL: offset 4095 + length 2 exceeds the page (4096)\nstack traceback:"))
        #expect(r.stderr.contains("\(script):2: in main chunk"))
        let syntax = try mmlab(["-e", "this is not lua"])
        #expect(syntax.status == 1)
        #expect(syntax.stderr.contains("syntax error"))
        #expect(try mmlab(["/nonexistent/script.lua"]).status == 1)
    }

    @Test("usage errors exit 2 with lua.c's message, then the usage", arguments: [
        (["--bogus"], "unrecognized option '--bogus'"), (["-x"], "unrecognized option '-x'"),
        (["-h"], "unrecognized option '-h'"), (["-e"], "'-e' needs argument"), (["-l"], "'-l' needs argument"),
        (["--seed", "x"], "--seed takes an integer, got 'x'"),
        (["--memory", "lots"], "--memory takes a size from 4K to 1T such as 256M or 4G, got 'lots'"),
    ])
    func usage(arguments: [String], message: String) throws {
        let r = try mmlab(arguments)
        #expect(r.status == 2)
        #expect(r.stderr.hasPrefix("\(mmlabPath): \(message)\nusage: mmlab [options] [script [args]]\n"), "\(r.stderr)")
    }

    @Test("subcommand usage errors exit 2", arguments: [
        ["run"], ["run", "--cpus", "0", "x.lua"], ["test", "--bogus"], ["test", "/nonexistent"], ["examples", "no-such-scenario"],
    ])
    func subcommandUsage(arguments: [String]) throws {
        let r = try mmlab(arguments)
        #expect(r.status == 2)
        #expect(r.stderr.hasPrefix("Error: ") || r.stderr.hasPrefix("mmlab: "), "\(r.stderr)")
    }

    /// The standalone interpreter as Lua 5.4.4's testes/main.lua checks it.
    @Test("lua.c's command line: ... from arg, error objects, <close> at os.exit, finalizers at close")
    func luaCommandLine() throws {
        #expect(try mmlab(["-e", "arg[1] = 100", "-"], stdin: "print(...)\n").stdout == "100\n")
        let notTable = try mmlab(["-e", "arg = 1", "-"], stdin: "\n")
        #expect(notTable.status == 1)
        #expect(notTable.stderr == "\(mmlabPath): 'arg' is not a table\n")
        // The handler runs where the error was raised: the object's
        // __tostring still sees the raising function's frame (level 3 from
        // inside __tostring: tostring's caller's caller).
        let object = try temporaryFile("""
            local where = setmetatable({}, {__tostring = function()
              return "raised at line " .. debug.getinfo(4, "l").currentline
            end})
            local function raise() error(where) end
            raise()
            """)
        let r = try mmlab([object])
        #expect(r.status == 1)
        #expect(r.stderr == "\(mmlabPath): raised at line 4\n", "converted where it was raised, without a traceback")
        // os.exit(code, true) closes the main chunk's to-be-closed variables, newest first.
        let closing = try temporaryFile("""
            local first <close> = setmetatable({}, {__close = function(_, e) print("first", e) end})
            local second <close> = setmetatable({}, {__close = function() print("second") end})
            os.exit(0, true)
            """)
        #expect(try mmlab([closing]).stdout == "second\nfirst\tnil\n")
        // A __gc set by a finalizer that runs while the state closes is never called.
        let finalizers = try temporaryFile("""
            setmetatable({}, {__gc = function() print("outer") end})
            setmetatable({}, {__gc = function()
              print("closing")
              setmetatable({}, {__gc = function() print("too late") end})
              os.exit(0, true)
            end})
            print("end of chunk")
            """)
        #expect(try mmlab([finalizers]).stdout == "end of chunk\nclosing\nouter\n",
                "a finalizer set while the state closes never runs")
    }

    @Test("a <close> drop failing while an error unwinds is a warning beside that error")
    func closeDuringError() throws {
        let script = try temporaryFile("""
            local mm <close> = kernel.mm.mm_alloc()
            local g = mm:mmap_read_lock()
            assert(false, "boom")
            """)
        let r = try mmlab([script])
        #expect(r.status == 1)
        let lines = r.stderr.components(separatedBy: "\n")
        #expect(lines.first == "mmlab: warning: closing MmWithUser{id=1, users=1, count=1} failed while an error unwound: BUG: dropped while borrowed: MmWithUser{id=1, users=1, count=1} has 1 live borrow: MmapReadGuard{mm=1} taken at \(script):2 (the error: \(script):3: boom)")
        #expect(lines.dropFirst().first == "\(mmlabPath): \(script):3: boom")
    }

    @Test("-i is lua.c's REPL: _PROMPT and _PROMPT2 through tostring, '=expr', the global print")
    func luaRepl() throws {
        let empty = try mmlab(["-e", "_PROMPT='' _PROMPT2=''", "-i"], stdin: "a = [[b\nc\nd\ne]]\n=a\n")
        #expect(empty.stdout == versionLine + "\na = [[b\nc\nd\ne]]\n=a\nb\nc\nd\ne\n\n")
        let counted = try mmlab(["-e", "local C = 0; _PROMPT=setmetatable({},{__tostring = function () C = C + 1; return C end})", "-i"],
                                stdin: " --\na = 2\n")
        #expect(counted.stdout == versionLine + "\n1 --\n2a = 2\n3\n")
        let noPrint = try mmlab(["-e", "print=nil", "-i"], stdin: "10\n")
        #expect(noPrint.status == 0)
        #expect(noPrint.stderr == "error calling 'print' (attempt to call a nil value)\n")
        let failing = try mmlab(["-i"], stdin: "error('oops', 0)\n")
        #expect(failing.stderr.hasPrefix("oops\nstack traceback:\n"), "no program name in the REPL, as lua.c")
    }

    @Test("Ctrl-C raises 'interrupted!' in the running code; pcall catches it")
    func interrupt() throws {
        let session = try PtySession(["-e", "pcall(function () print(12); while true do end end); print(42)"])
        session.read(until: "12")
        session.interrupt()
        #expect(session.wait() == 0)
        #expect(session.output == "12\r\n42\r\n")
        let twice = try PtySession(["-e", "print(15); while true do end"])
        twice.read(until: "15")
        usleep(100_000)
        twice.interrupt()
        #expect(twice.wait() == 1)
        // As lua.c's lstop: raised at the next hook event, in the loop, or
        // (if the signal came that early) as print returns.
        let lines = twice.output.components(separatedBy: "\r\n")
        #expect(lines.first == "15")
        #expect(lines.dropFirst().first.map { ["\(mmlabPath): interrupted!", "\(mmlabPath): (command line):1: interrupted!"].contains($0) } == true,
                "\(twice.output)")
    }

    @Test("--help and --version")
    func help() throws {
        let r = try mmlab(["--help"])
        #expect(r.status == 0)
        for word in ["run", "repl", "test", "examples", "-e stat", "--seed"] { #expect(r.stdout.contains(word)) }
        #expect(try mmlab(["-v"]).stdout == versionLine + "\n")
        #expect(versionLine == "mmlab 0.1.0, Linux memory management in Lua, on " + luaCopyright)
        #expect(luaCopyright.hasPrefix("Lua 5.4."), "the system liblua's release, as lua.c prints it")
        #expect(try mmlab(["test", "--help"]).stdout.contains("--tap"))
    }

    @Test("arg, ... and the script's arguments")
    func arguments() throws {
        let script = try temporaryFile("print(arg[-2], arg[-1], arg[0], arg[1], arg[2], select('#', ...), ...)")
        let r = try mmlab(["-e", "x=1", script, "a", "-b"])
        #expect(r.stdout == "-e\tx=1\t\(script)\ta\t-b\t2\ta\t-b\n")
        #expect(try mmlab(["run", script, "a"]).stdout == "nil\tmmlab\t\(script)\ta\tnil\t1\ta\n")
        #expect(try mmlab(["--", script]).stdout.contains(script))
    }

    @Test("-l mod and -l g=mod with LUA_PATH; -E ignores the environment")
    func require() throws {
        let dir = try temporaryDirectory("mmlab-modules")
        let name = "answers"
        try "return {answer = 42}".write(toFile: "\(dir)/\(name).lua", atomically: true, encoding: .utf8)
        let env = ["LUA_PATH": "\(dir)/?.lua"]
        #expect(try mmlab(["-l", "g=\(name)", "-e", "print(g.answer)"], environment: env).stdout == "42\n")
        #expect(try mmlab(["-l\(name)", "-e", "print(\(name).answer)"], environment: env).stdout == "42\n")
        #expect(try mmlab(["-l", "\(name)-v2=\(name)", "-e", "print(_G['\(name)-v2'].answer)"], environment: env).stdout == "42\n")
        let ignored = try mmlab(["-E", "-l", "g=\(name)"], environment: env)
        #expect(ignored.status == 1)
        #expect(ignored.stderr.contains("module '\(name)' not found"))
    }

    @Test("LUA_INIT runs first, as code or @file; -E skips it")
    func luaInit() throws {
        #expect(try mmlab(["-e", "print(X)"], environment: ["LUA_INIT": "X = 'init'"]).stdout == "init\n")
        #expect(try mmlab(["-e", "print(X)"], environment: ["LUA_INIT_5_4": "X = 5.4", "LUA_INIT": "X = 0"]).stdout == "5.4\n")
        let file = try temporaryFile("X = 'file'")
        #expect(try mmlab(["-e", "print(X)"], environment: ["LUA_INIT": "@\(file)"]).stdout == "file\n")
        #expect(try mmlab(["-E", "-e", "print(X)"], environment: ["LUA_INIT": "X = 1"]).stdout == "nil\n")
        #expect(try mmlab(["-e", "print(1)"], environment: ["LUA_INIT": "error('bad init')"]).status == 1)
    }

    @Test("-W turns warnings on")
    func warnings() throws {
        #expect(try mmlab(["-W", "-e", "warn('careful')"]).stderr.contains("Lua warning: careful"))
        #expect(try mmlab(["-e", "warn('careful')"]).stderr.isEmpty)
    }

    @Test("the leak report at exit; --strict makes it fail")
    func leaks() throws {
        let script = try temporaryFile("LEAK = kernel.page.Page.alloc_page()\nlocal fine = kernel.page.Page.alloc_page()\n")
        let r = try mmlab([script])
        #expect(r.status == 0)
        #expect(r.stderr == "mmlab: 1 native object leaked (still alive at exit):\n  Page{pfn=0x400, order=0} created at \(script):1\n")
        #expect(try mmlab(["--strict", script]).status == 1)
        #expect(try mmlab(["run", "--strict", script]).status == 1)
        #expect(try mmlab(["--strict", "-e", "local p <close> = kernel.page.Page.alloc_page()"]).status == 0)
    }

    /// Runaway scripts, each also with every way a script can touch the
    /// debug hook first: none of them may stop a limit.
    static let runaways: [String] = {
        let spins = [
            "local n = 0 while true do n = n + 1 end",
            "while true do pcall(function() while true do end end) end",  // pcall cannot keep it going
            "kernel.sched.spawn(function() while true do end end, {name = 'spinner'}) kernel.sched.run()",
            "kernel.sched.spawn(function() local n = 0 while true do n = n + 1 end end) while true do end",  // contended
            "coroutine.wrap(function() while true do end end)()",
        ]
        let hooks = [
            "",
            "debug.sethook()",
            "debug.sethook(function() end, 'l')",
            "debug.sethook(function() end, '', 1)",
            "debug.sethook(function() end, 'crl', 7)",
            "debug.sethook(function() while true do end end, 'l')\n",  // a hook that never returns
            "debug.sethook(function() debug.sethook() end, 'c')",
            "coroutine.wrap(function() debug.sethook() end)() debug.sethook((coroutine.running()))",
        ]
        return hooks.flatMap { hook in spins.map { hook + "\n" + $0 } }
    }()

    @Test("--max-instructions, --timeout and --max-memory stop runaway scripts with a clear error, whatever the script does to hooks")
    func limits() throws {
        for script in Self.runaways {
            let r = try mmlab(["--max-instructions", "100000", "-e", script])
            #expect(r.status == 1, "\(script)")
            #expect(r.stderr.split(separator: "\n").first == "\(mmlabPath): the script ran past its --max-instructions limit", "\(script): \(r.stderr)")
        }
        for script in Self.runaways where script.hasSuffix("while true do n = n + 1 end") {
            let t = try mmlab(["--timeout", "0.2", "-e", script])
            #expect(t.status == 1, "\(script)")
            #expect(t.stderr.split(separator: "\n").first == "\(mmlabPath): the script ran past its --timeout", "\(script): \(t.stderr)")
        }
        for hook in ["", "debug.sethook()", "debug.sethook(function() end, '', 1)"] {
            let m = try mmlab(["--max-memory", "4M", "-e", hook + " local t = {} for i = 1, 1e7 do t[i] = i end"])
            #expect(m.status == 1)
            #expect(m.stderr.split(separator: "\n").first == "\(mmlabPath): not enough memory: the Lua heap reached its --max-memory cap (4194304 bytes)", "\(m.stderr)")
        }
        let big = try mmlab(["--max-memory", "4M", "-e", "print(pcall(string.rep, 'x', 64 << 20)) print(#('y'):rep(1000))"])
        #expect(big.status == 0 && big.stdout == "false\tnot enough memory\n1000\n", "a refused allocation is an error a script may catch")
        let fine = try mmlab(["--max-memory", "64M", "--max-instructions", "100000000", "--timeout", "60", "examples", "pages"])
        #expect(fine.status == 0, "limits that are not reached change nothing: \(fine.stderr)")
        #expect(fine.stdout == (try mmlab(["examples", "pages"])).stdout)
        #expect(try mmlab(["--seed", "1", "--max-instructions", "1000", "examples", "binder"]).status == 1, "subcommands take them too")
        for bad in [["--timeout", "-1"], ["--max-memory", "12"], ["--max-instructions", "0"], ["--timeout=nan"]] {
            #expect(try mmlab(bad + ["-e", ""]).status == 2, "\(bad)")
        }
    }

    @Test("--memory, --cpus and --seed configure the machine")
    func machine() throws {
        let show = "local m = kernel.machine() print(m.memory, m.cpus, m.seed)"
        #expect(try mmlab(["--memory", "1G", "--cpus", "8", "--seed", "5", "-e", show]).stdout == "1073741824\t8\t5\n")
        #expect(try mmlab(["-e", show]).stdout == "268435456\t4\t0\n")
        let random = "print(math.random(1 << 40), math.random(1 << 40))"
        let a = try mmlab(["--seed", "3", "-e", random]).stdout, b = try mmlab(["--seed", "3", "-e", random]).stdout
        #expect(a == b)
        #expect(a != (try mmlab(["--seed", "4", "-e", random]).stdout))
    }

    @Test("tasks: an unjoined failure fails the run naming the task; a deadlock lists every task")
    func tasks() throws {
        let failing = try mmlab(["-e", "kernel.sched.spawn(function() error('boom') end, {name = 'worker'})"])
        #expect(failing.status == 1)
        #expect(failing.stderr.hasPrefix("\(mmlabPath): task 'worker': (command line):1: boom"))
        let deadlock = try mmlab(["-e", """
            local m = kernel.sync.Mutex('M')
            local g = m:lock()
            local t = kernel.sched.spawn(function() local x <close> = m:lock() end, {name = 'waiter'})
            t:join()
            """])
        #expect(deadlock.status == 1)
        #expect(deadlock.stderr.contains("EDEADLK: deadlock: every task is blocked"))
        #expect(deadlock.stderr.contains("task 'main' (cpu 0): waits for task 'waiter' to finish; holds Mutex{M}"))
        #expect(deadlock.stderr.contains("task 'waiter' (cpu 1): waits for Mutex{M} (held by 'main'); holds nothing"))
    }

    @Test("a guard the collector drops is a warning, and fails the run under --strict")
    func collectedGuard() throws {
        let script = "local m = kernel.sync.Mutex('m') m:lock() collectgarbage()"
        let r = try mmlab(["-e", script])
        #expect(r.status == 0)
        #expect(r.stderr == "mmlab: warning: MutexGuard{Mutex{m}} of task 'main' was dropped by the collector: guards are meant to be scoped (local g <close> = lock:lock())\n")
        // Every guard type says so, and how to scope it.
        for (take, warning) in [
            ("local u = kernel.mm.mm_alloc() u:mmap_read_lock()", "MmapReadGuard{mm=1} of task 'main' was dropped by the collector: guards are meant to be scoped (local g <close> = mm:mmap_read_lock())"),
            ("kernel.percpu.CpuGuard()", "CpuGuard{cpu=0, task=main} of task 'main' was dropped by the collector: guards are meant to be scoped (local g <close> = kernel.percpu.CpuGuard())"),
        ] {
            let other = try mmlab(["-e", take + " collectgarbage()"])
            #expect(other.stderr.components(separatedBy: "\n").first == "mmlab: warning: " + warning, "\(other.stderr)")
        }
        #expect(try mmlab(["--strict", "-e", script]).status == 1)
        #expect(try mmlab(["--strict", "-e", "local m = kernel.sync.Mutex() local g <close> = m:lock()"]).status == 0)
    }

    @Test("an unguarded per-CPU read-modify-write loses updates for a seed, the same each time")
    func lostUpdates() throws {
        let out = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: out) }
        func run(_ seed: Int) throws -> String {
            try mmlab(["--seed", String(seed), "--out", out, "examples/percpu_counter.lua", "8", "200"]).stdout
        }
        var losses: Set<String> = []
        for seed in 0..<3 {
            let out = try run(seed)
            #expect(try run(seed) == out, "seed \(seed) replays byte for byte")
            let lines = out.split(separator: "\n")
            let racy = try #require(lines.first { $0.hasPrefix("per-CPU unguarded RMW") })
            let lost = racy.split(separator: " ", omittingEmptySubsequences: true)[4]
            #expect(lines.contains { $0.hasPrefix("per-CPU this_cpu_inc") && $0.contains(" 1600      0") })
            #expect(lines.contains { $0.hasPrefix("shared, spinlock") && $0.contains(" 1600      0") })
            losses.insert(String(lost))
        }
        #expect(losses.contains { $0 != "0" }, "some seed loses updates")
    }

    @Test("the same script and seed print the same bytes")
    func determinism() throws {
        let script = """
            local t = {}
            for i = 1, 50 do t["key" .. i] = kernel.page.Page.alloc_page() end
            for k, p in pairs(t) do io.write(k, "=", p:pfn(), " ") end
            for k, v in pairs(kernel.debug.stats()) do io.write(k, "=", v, " ") end
            print(math.random(100))
            """
        let first = try mmlab(["-e", script]).stdout
        for _ in 0..<3 { #expect(try mmlab(["-e", script]).stdout == first) }
    }
}

@Suite("mmlab test, examples and repl")
struct SubcommandTests {
    @Test("test prints a line per case and the summary last")
    func tests() throws {
        let file = try temporaryFile("""
            test("adds", function() assert(1 + 1 == 2) end)
            test("fails", function() expect_eq(1, 2, "sum") end)
            test("raises", function() kernel.page.Page.alloc_page():read_u8(-1) end)
            """)
        let r = try mmlab(["test", file])
        #expect(r.status == 1)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "ok   \(file): adds")
        #expect(lines.contains("FAIL \(file): fails"))
        #expect(lines.contains { $0.contains(":2: sum: expected 2, got 1") })
        #expect(lines.contains { $0.contains(":3: EINVAL: offset -1 + length 1 exceeds the page (4096)") })
        #expect(lines.last == "1 passed, 2 failed")
        let tap = try mmlab(["test", "--tap", file]).stdout.split(separator: "\n").map(String.init)
        #expect(tap.first == "TAP version 13")
        #expect(tap.contains("ok 1 - \(file): adds"))
        #expect(tap.contains("not ok 2 - \(file): fails"))
        #expect(tap.suffix(2) == ["1..3", "# 1 passed, 2 failed"], "the plan last but for the counts in a comment")
    }

    @Test("a file without cases is one case; a file that errors fails")
    func files() throws {
        let plain = try temporaryFile("assert(true)")
        let broken = try temporaryFile("error('top level')")
        let r = try mmlab(["test", plain, broken])
        #expect(r.stdout.contains("ok   \(plain): (file)"))
        #expect(r.stdout.contains("FAIL \(broken): (file)"))
        #expect(r.stdout.hasSuffix("1 passed, 1 failed\n"))
        #expect(try mmlab(["test", plain]).status == 0)
        let leaky = try temporaryFile("KEEP = kernel.page.Page.alloc_page()")
        #expect(try mmlab(["test", leaky]).status == 0)
        #expect(try mmlab(["test", "--strict", leaky]).stdout.contains("FAIL \(leaky): (file)\n     mmlab: 1 native object leaked (still alive at exit):\n       Page{"))
    }

    @Test("each case runs on a machine of its own: the top level again, its kernel.boot for every case, leaks named by case")
    func isolation() throws {
        let file = try temporaryFile("""
            kernel.boot{cpus = 2}
            local n = 0
            test("first", function() n = n + 1; SEEN = true; expect_eq(kernel.sched.nr_cpu_ids(), 2) end)
            test("second", function() n = n + 1; expect_eq(SEEN, nil); expect_eq(n, 1); expect_eq(kernel.sched.nr_cpu_ids(), 2) end)
            test("keeps a page", function() KEEP = kernel.page.Page.alloc_page() end)
            test("skipped", function() skip("not on this machine") end)
            """)
        let r = try mmlab(["test", file])
        #expect(r.status == 0)
        #expect(r.stdout == "ok   \(file): first\nok   \(file): second\nok   \(file): keeps a page\nskip \(file): skipped (not on this machine)\n3 passed, 0 failed, 1 skipped\n")
        #expect(r.stderr.hasPrefix("mmlab: warning: \(file): case 'keeps a page' left native objects alive:\n  Page{"))
        let strict = try mmlab(["test", "--strict", file])
        #expect(strict.status == 1)
        #expect(strict.stdout.contains("FAIL \(file): keeps a page\n     mmlab: 1 native object leaked (still alive at exit):\n"))
        let tap = try mmlab(["test", "--tap", file]).stdout
        #expect(tap.contains("\nok 4 - \(file): skipped # SKIP not on this machine\n1..4\n# 3 passed, 0 failed, 1 skipped\n"))
        let both = try mmlab(["test", "--tap", "--ktap", file])
        #expect(both.status == 2)
        #expect(both.stderr.hasPrefix("Error: --tap and --ktap are two formats: give one\n"))
    }

    @Test("--ktap prints KTAP version 1 as KUnit does, and the kernel's kunit.py parse reads it with the right counts")
    func ktap() throws {
        let file = try temporaryFile("""
            test("adds", function() assert(1 + 1 == 2) end)
            test("fails", function() expect_eq(1, 2, "sum") end)
            test("skips", function() skip("no reason") end)
            """)
        let plain = try temporaryFile("assert(true)")
        let r = try mmlab(["test", "--ktap", file, plain])
        #expect(r.status == 1)
        let name = URL(fileURLWithPath: file).lastPathComponent
        #expect(r.stdout == """
            KTAP version 1
            1..2
                KTAP version 1
                # Subtest: \(file)
                1..3
                ok 1 adds
                # fails: \(file):2: sum: expected 2, got 1
                not ok 2 fails
                ok 3 skips # SKIP no reason
            # \(file): pass:1 fail:1 skip:1 total:3
            not ok 1 \(file)
                KTAP version 1
                # Subtest: \(plain)
                1..1
                ok 1 (file)
            # \(plain): pass:1 fail:0 skip:0 total:1
            ok 2 \(plain)
            # Totals: pass:2 fail:1 skip:1 total:4

            """, "\(name)")
        // The parser from the kernel's own tree: Debian's linux-source-6.12, which scripts/test installs.
        let kunit = try kunitTool()
        let input = try temporaryFile(r.stdout, suffix: ".ktap")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", kunit + "/kunit.py", "parse", input]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(text.contains("Testing complete. Ran 4 tests: passed: 2, failed: 1, skipped: 1"), "\(text)")
        #expect(text.contains("[FAILED] fails"))
        #expect(text.contains("[SKIPPED] skips"))
    }

    /// tools/testing/kunit from the kernel's source package, extracted once per machine.
    private func kunitTool() throws -> String {
        let cache = NSTemporaryDirectory() + "mmlab-kunit-6.12-\(getuid())"
        let tool = cache + "/linux-source-6.12/tools/testing/kunit"
        if FileManager.default.fileExists(atPath: tool + "/kunit.py") { return tool }
        let scratch = cache + ".\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        tar.arguments = ["tar", "-xJf", "/usr/src/linux-source-6.12.tar.xz", "-C", scratch, "linux-source-6.12/tools/testing/kunit"]
        try tar.run()
        tar.waitUntilExit()
        #expect(tar.terminationStatus == 0, "linux-source-6.12 is installed (scripts/test installs it)")
        try? FileManager.default.removeItem(atPath: cache)
        try FileManager.default.moveItem(atPath: scratch, toPath: cache)
        return tool
    }

    @Test("--jobs runs files in worker processes and prints what one process prints")
    func jobs() throws {
        let one = try mmlab(["test", "Tests/lua"])
        let three = try mmlab(["test", "--jobs", "3", "Tests/lua"])
        #expect(three.status == 0)
        #expect(three.stdout == one.stdout)
        let ktap = try mmlab(["test", "--ktap", "--jobs", "2", "Tests/lua"])
        #expect(ktap.stdout == (try mmlab(["test", "--ktap", "Tests/lua"])).stdout)
    }

    @Test("Debian's busted runs specs under mmlab: Tests/busted passes, with TAP and JUnit output, and a failing spec fails")
    func busted() throws {
        let tap = try mmlab(["/usr/bin/busted", "-o", "TAP", "Tests/busted"])
        #expect(tap.status == 0, "\(tap.stdout)\(tap.stderr)")
        #expect(tap.stdout == """
            ok 1 - a page reads back what was written
            ok 2 - a page refuses a read past its end with EINVAL
            ok 3 - a page is free again on a fresh machine
            ok 4 - a mutex serializes the tasks that take it
            1..4

            """)
        let junit = try mmlab(["/usr/bin/busted", "-o", "junit", "Tests/busted"])
        #expect(junit.status == 0)
        #expect(junit.stdout.contains("<testsuites errors='0' failures='0' skip='0' tests='4'"))
        let spec = try temporaryFile("""
            describe("pages", function()
              before_each(function() kernel.reboot{} end)
              it("leaks nothing", function() KEEP = kernel.page.Page.alloc_page() end)
              it("reboots only when the last one is gone", function() assert.are.equal(0, 1) end)
            end)
            """, suffix: "_spec.lua")
        let failing = try mmlab(["/usr/bin/busted", "-o", "TAP", spec])
        #expect(failing.status == 1)
        #expect(failing.stdout.hasPrefix("ok 1 - pages leaks nothing\nnot ok 2 - pages before_each\n"), "the next spec's before_each fails")
        #expect(failing.stdout.contains("kernel.reboot with 1 native object of the old machine alive: Page{pfn=0x400, order=0} created at"),
                "before_each's reboot names what the last spec kept")
    }

    @Test("a shrinker that raises or counts garbage is warned of by name and line; reclaim still ends, in the kernel's ENOMEM")
    func badShrinkers() throws {
        let script = try temporaryFile("""
            kernel.boot{memory = "16M", cpus = 1}
            local held = {}
            for i = 1, 500 do held[i] = kernel.page.Page.alloc_page(0) end
            local raises <close> = kernel.mem.register_shrinker{name = "raises", count = function() return #held end, scan = function() error("boom") end}
            local garbage <close> = kernel.mem.register_shrinker{name = "garbage", count = function() return "lots" end, scan = function() return 0 end}
            local same <close> = kernel.mem.register_shrinker{name = "raises", count = function() return 0 end, scan = function() return 0 end}
            local keep = {}
            local ok, err = pcall(function() while true do keep[#keep + 1] = kernel.page.Page.alloc_page() end end)
            print(ok, err.errno, #held)
            for _, p in ipairs(keep) do kernel.drop(p) end
            for _, p in ipairs(held) do kernel.drop(p) end
            """)
        defer { try? FileManager.default.removeItem(atPath: script) }
        let r = try mmlab([script])
        #expect(r.status == 0)
        #expect(r.stdout == "false\tENOMEM\t500\n", "the raising scan freed nothing; a second shrinker of the same name is allowed")
        let lines = Set(r.stderr.split(separator: "\n").map(String.init))
        #expect(lines.isSuperset(of: ["mmlab: warning: Shrinker{raises}: scan: \(script):4: boom",
                                      "mmlab: warning: Shrinker{garbage}: count returned lots, not a count",
                                      "Out of memory and no killable processes..."]), "\(lines)")
    }

    @Test("the shipped regressions pass")
    func regressions() throws {
        let r = try mmlab(["test", "Tests/lua"])
        #expect(r.status == 0, "\(r.stdout)")
        #expect(r.stdout.hasSuffix(" passed, 0 failed\n"))
    }

    @Test("examples lists the scenarios; each runs leak-free and prints the same bytes twice")
    func examples() throws {
        let list = try mmlab(["examples"])
        #expect(list.status == 0)
        let names = try FileManager.default.contentsOfDirectory(atPath: repositoryRoot + "/examples")
            .filter { $0.hasSuffix(".lua") }.map { String($0.dropLast(4)) }
        #expect(names.contains("pages") && names.contains("iommu_pagetable"))
        for name in names {
            #expect(list.stdout.contains("  \(name) "))
            let run = try mmlab(["--strict", "examples", name])
            #expect(run.status == 0, "\(name): \(run.stderr)")
            if name == "pressure" {  // the kernel's OOM report, and nothing else
                #expect(run.stderr.split(separator: "\n").map(String.init) == [
                    "db invoked oom-killer: gfp_mask=0x100dca(GFP_HIGHUSER_MOVABLE|__GFP_ZERO), order=0, oom_score_adj=0",
                    "Tasks state (memory values in pages):",
                    "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name",
                    "[      2]     0     2     2400     2400     2400        0         0    32768        0             0 web",
                    "[      3]     0     3     4200     3979     3979        0         0    49152        0             0 db",
                    "[      4]     0     4     1600     1600     1600        0         0    28672        0           500 batch",
                    "Out of memory: Killed process 4 (batch) total-vm:6400kB, anon-rss:6400kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:28kB oom_score_adj:500",
                    "oom_reaper: reaped process 4 (batch), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
                ])
            } else {
                #expect(run.stderr.isEmpty, "\(name) leaks nothing")
            }
            #expect(try mmlab(["--strict", "examples", name]).stdout == run.stdout, "\(name) is deterministic")
        }
    }

    @Test("the REPL prints expressions, continues statements and survives errors")
    func repl() throws {
        let history = NSTemporaryDirectory() + "mmlab-history-\(UUID().uuidString)"
        let input = """
            x = 20
            x + 1
            function f()
              return kernel.PAGE_SIZE
            end
            f()
            kernel.page.Page.alloc_page():read_u8(9999)
            local p = kernel.page.Page.alloc_page() return p, p:size()
            1, nil, "three"

            """
        let r = try mmlab(["repl"], stdin: input, environment: ["MMLAB_HISTORY": history])
        #expect(r.status == 0)
        #expect(r.stdout.contains("> 21\n"))
        #expect(r.stdout.contains(">> >> > 4096\n"))
        #expect(r.stdout.contains(", order=0}\t4096\n"))
        #expect(r.stdout.contains("1\tnil\tthree\n"))
        #expect(r.stderr.contains("stdin:1: EINVAL: offset 9999 + length 1 exceeds the page (4096)"))
        let saved = try String(contentsOfFile: history, encoding: .utf8)
        #expect(saved.hasPrefix("x = 20\nx + 1\nfunction f()\n"))
        let again = try mmlab(["-i"], stdin: "1+1\n", environment: ["MMLAB_HISTORY": history])
        // -i is lua.c's REPL: off a terminal each line is echoed after its prompt
        #expect(again.stdout == versionLine + "\n> 1+1\n2\n> \n")
    }
}
