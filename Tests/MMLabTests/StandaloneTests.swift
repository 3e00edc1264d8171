import Testing
@testable import MMLab

@Suite("lua.c command line")
struct StandaloneTests {
    @Test("options run in order; the script takes the rest")
    func parse() throws {
        let s = try Standalone.parse(["-e", "x=1", "-lg=mod", "-W", "-l", "socket-v2", "--seed", "7",
                                      "--memory=1G", "--cpus", "2", "--strict", "-E", "s.lua", "a", "-b"])
        #expect(s.actions == [.execute("x=1"), .require(module: "mod", global: "g"), .warnings,
                              .require(module: "socket-v2", global: "socket")])
        #expect(s.script == "s.lua")
        #expect(s.scriptArguments == ["a", "-b"])
        #expect(s.scriptIndex == 14)
        #expect(s.argv[s.scriptIndex] == "s.lua")
        #expect(s.configuration.seed == 7)
        #expect(s.configuration.memory == 1 << 30)
        #expect(s.configuration.cpus == 2)
        #expect(s.configuration.strict)
        #expect(s.configuration.ignoreEnvironment)
    }

    @Test("-- and - end the options")
    func endOfOptions() throws {
        #expect(try Standalone.parse(["--", "-x"]).script == "-x")
        #expect(try Standalone.parse(["-", "a"]).script == "-")
        #expect(try Standalone.parse(["-", "a"]).scriptArguments == ["a"])
        #expect(try Standalone.parse(["-i"]).interactive)
        #expect(try Standalone.parse([]).script == nil)
        #expect(try Standalone.parse(["--seed", "-1"]).configuration.seed == UInt64.max)
    }

    @Test("usage errors", arguments: [
        ["-e"], ["-x"], ["-vx"], ["--bogus"], ["--seed"], ["--seed", "x"], ["--memory", "lots"],
        ["--memory", "0"], ["--cpus", "0"], ["--cpus=100"], ["-e", "-i"], ["-l"],
    ])
    func usage(arguments: [String]) {
        #expect(throws: UsageError.self) { try Standalone.parse(arguments) }
    }
}

@Suite("Line editing")
struct LineEditorTests {
    func type(_ keys: [Key], history: [String] = [],
              complete: (([Unicode.Scalar], Int) -> (start: Int, candidates: [String]))? = nil) -> (EditState, EditState.Outcome) {
        var state = EditState(prompt: "> ", history: history)
        state.output = { _ in }
        var outcome = EditState.Outcome.none
        for key in keys {
            outcome = state.handle(key, complete: complete)
            if outcome != .none { break }
        }
        return (state, outcome)
    }

    func chars(_ s: String) -> [Key] { s.unicodeScalars.map { Key.character($0) } }

    @Test("insert, move and delete")
    func editing() {
        #expect(type(chars("abc") + [.left, .left] + chars("X")).0.line == "aXbc")
        #expect(type(chars("abc") + [.control(1)] + chars(">")).0.line == ">abc")
        #expect(type(chars("hello world") + [.control(23)]).0.line == "hello ")
        #expect(type(chars("hello") + [.home, .right, .control(11)]).0.line == "h")
        #expect(type(chars("hello") + [.left, .control(21)]).0.line == "o")
        #expect(type(chars("ab") + [.control(127)]).0.line == "a")
        #expect(type(chars("ab") + [.home, .delete]).0.line == "b")
        #expect(type(chars("é漢") + [.left] + chars("x")).0.line == "éx漢")
    }

    @Test("enter, Ctrl-C and Ctrl-D")
    func outcomes() {
        #expect(type(chars("1+1") + [.control(13)]).1 == .done(.line("1+1")))
        #expect(type(chars("oops") + [.control(3)]).1 == .done(.interrupt))
        #expect(type([.control(4)]).1 == .done(.eof))
        #expect(type(chars("ab") + [.home, .control(4)]).0.line == "b")
    }

    @Test("history goes up and down and keeps the line being typed")
    func history() {
        let past = ["first", "second"]
        #expect(type([.up], history: past).0.line == "second")
        #expect(type([.up, .up, .up], history: past).0.line == "first")
        #expect(type(chars("draft") + [.up, .down], history: past).0.line == "draft")
        #expect(type([.control(16), .control(16), .control(14)], history: past).0.line == "second")
    }

    @Test("tab completes the common prefix")
    func completion() {
        let complete: ([Unicode.Scalar], Int) -> (start: Int, candidates: [String]) = { line, cursor in
            (cursor - 3, ["alloc_page", "alloc_pages"])
        }
        #expect(type(chars("p.a") + [.control(9)], complete: { l, c in (c - 1, ["alloc_page", "alloc_pages"]) }).0.line == "p.alloc_page")
        #expect(type(chars("all") + [.control(9)], complete: complete).0.line == "alloc_page")
    }
}
