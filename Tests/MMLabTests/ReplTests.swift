import Foundation
import Testing
@testable import MMLab

@Suite("The REPL")
struct ReplTests {
    func completions(_ line: String, setup: String? = nil) throws -> [String] {
        let engine = try Engine()
        if let setup { try engine.run(string: setup) }
        let repl = Repl(engine: engine, historyPath: nil)
        let scalars = Array(line.unicodeScalars)
        let (start, candidates) = repl.complete(scalars, scalars.count)
        #expect(start <= scalars.count)
        return candidates
    }

    @Test("Tab completes globals, fields and methods, without running metamethods")
    func completion() throws {
        #expect(try completions("pri") == ["print"])
        #expect(try completions("kernel.me") == ["mem"])
        #expect(try completions("kernel.page.Page.alloc_p") == ["alloc_page", "alloc_pages"])
        #expect(try completions("x = kernel.mm.mm_al") == ["mm_alloc"])
        #expect(try completions("p:read_u", setup: "p = kernel.page.Page.alloc_page()") ==
                ["read_u16", "read_u32", "read_u64", "read_u8"])
        #expect(try completions("p.si", setup: "p = kernel.page.Page.alloc_page()") == ["size"])
        #expect(try completions("t:", setup: "t = setmetatable({}, {__index = function() error('ran') end})") == [])
        #expect(try completions("whi") == ["while"])
        #expect(try completions("nothing.here.") == [])
        #expect(try completions("s:up", setup: "s = 'text'") == ["upper"])
    }

    func repl(_ args: [String] = ["repl"], history: String) throws -> PtySession {
        try PtySession(args, environment: ["MMLAB_HISTORY": history])
    }

    @Test("through a terminal: completion, pretty printing, :help, multi-line input, history across sessions")
    func terminal() throws {
        let history = NSTemporaryDirectory() + "mmlab-history-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: history) }
        let first = try repl(history: history)
        first.read(until: "> ")
        first.send("kernel.mem.sta\t")
        #expect(first.read(until: "kernel.mem.stats").contains("kernel.mem.stats"), "Tab completed the name")
        var mark = first.output.count
        first.send("()\r")
        let table = first.read(until: "total_pages", from: mark)
        #expect(table.contains("free_pages = 65536"), "a table laid out with its keys")
        mark = first.output.count
        first.send("kernel.page.Page.alloc_p\t\t")
        #expect(first.read(until: "alloc_pages", from: mark).contains("alloc_page  alloc_pages"), "two Tabs list the candidates")
        first.send("\u{15}")  // Ctrl-U: clear the line
        mark = first.output.count
        first.send("for i = 1, 2 do\r")
        #expect(first.read(until: ">> ", from: mark).contains(">> "), "an unfinished statement continues")
        first.send("print('line', i)\rend\r")
        #expect(first.read(until: "line\t2", from: mark).contains("line\t1"))
        mark = first.output.count
        first.send(":help\r")
        #expect(first.read(until: "binder", from: mark).contains("drm_mm"))
        mark = first.output.count
        first.send("error('oops')\r")
        #expect(first.read(until: "oops", from: mark).contains("oops"))
        first.send("kernel.mm.mm_alloc()\r")
        #expect(first.read(until: "MmWithUser{", from: mark).contains("MmWithUser{id=1, users=1, count=1}"), "handles by __tostring")
        first.send(":quit\r")
        #expect(first.wait() == 0)
        let saved = try String(contentsOfFile: history, encoding: .utf8)
        #expect(saved.contains("kernel.mem.stats()\n"))
        #expect(saved.contains("for i = 1, 2 do\n"))

        let second = try repl(history: history)
        second.read(until: "> ")
        let before = second.output.count
        second.send("\u{1b}[A\u{1b}[A\u{1b}[B\r")  // up twice, down once: the last line
        #expect(second.read(until: "MmWithUser{", from: before).contains("MmWithUser{"), "Up recalls the last session's lines")
        // Ctrl-D only at the next prompt: typed while the line runs, the
        // terminal (not yet raw) would turn it into a NUL.
        second.readPrompt()
        second.send("\u{4}")  // Ctrl-D
        #expect(second.wait() == 0)
    }

    @Test("mmlab -i runs the script, then lua.c's REPL, with completion and history")
    func interactive() throws {
        let history = NSTemporaryDirectory() + "mmlab-history-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: history) }
        let session = try repl(["-i", "-e", "answer = {x = 42}", "-e", "_PROMPT = 'lua> '"], history: history)
        session.read(until: "lua> ")
        session.send("answer.\t\r")
        #expect(session.read(until: "42").contains("answer.x"), "Tab completed the field")
        session.send("=answer.x + 1\r")
        #expect(session.read(until: "43").contains("43"), "'=' is 'return', results go to print")
        session.readPrompt()
        session.send("\u{4}")  // Ctrl-D
        #expect(session.wait() == 0)
        #expect(try String(contentsOfFile: history, encoding: .utf8).contains("answer.x\n"))
    }

    @Test("progress shows on a terminal, and nowhere else")
    func progress() throws {
        let file = try temporaryFile("""
            for i = 1, 300 do kernel.progress("work", i, 300) end
            test("a case", function() end)
            print("done")
            """)
        let tty = try PtySession(["test", file])
        #expect(tty.wait() == 0)
        #expect(tty.output.contains("\u{1b}[K"), "the progress line is drawn and cleared")
        #expect(tty.output.contains("work ["), "the script's own progress")
        let piped = try mmlab(["test", file])
        #expect(piped.status == 0)
        #expect(!piped.stderr.contains("\u{1b}") && !piped.stdout.contains("\u{1b}"), "no escape codes off a terminal")
    }
}
