import Foundation
import Testing

/// README examples run as written and print what the README says.
@Suite("README", .serialized)  // explore() and commandLines() share /tmp/races
struct ReadmeTests {
    /// The fenced blocks of the README: (language, text).
    static func blocks() throws -> [(String, String)] {
        let text = try String(contentsOfFile: repositoryRoot + "/README.md", encoding: .utf8)
        var blocks: [(String, String)] = []
        var current: (String, [String])?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") {
                if let open = current {
                    blocks.append((open.0, open.1.joined(separator: "\n") + "\n"))
                    current = nil
                } else {
                    current = (String(line.dropFirst(3)), [])
                }
            } else {
                current?.1.append(String(line))
            }
        }
        return blocks
    }

    @Test("every Lua block runs, and prints the text block that follows it")
    func luaBlocks() throws {
        let blocks = try Self.blocks()
        let dir = try temporaryDirectory("mmlab-readme")
        var ran = 0
        for (i, (language, code)) in blocks.enumerated() where language == "lua" {
            try code.write(toFile: dir + "/experiment.lua", atomically: true, encoding: .utf8)
            let isTest = code.contains("test(")
            let r = try mmlab(isTest ? ["test", "experiment.lua"] : ["experiment.lua"], directory: dir)
            #expect(r.status == 0, "block \(i): \(r.stderr)")
            if i + 1 < blocks.count, blocks[i + 1].0 == "text" {
                #expect(r.stdout == blocks[i + 1].1, "block \(i) prints what the README shows")
            }
            for line in code.split(separator: "\n") where line.hasPrefix("--> ") {
                #expect(r.stdout.contains(line.dropFirst(4)), "block \(i)")
            }
            ran += 1
        }
        #expect(ran >= 3)
    }

    @Test("every picture the README shows is in the checkout, well-formed")
    func pictures() throws {
        let text = try String(contentsOfFile: repositoryRoot + "/README.md", encoding: .utf8)
        var shown: [String] = []
        var rest = Substring(text)
        while let open = rest.range(of: "](docs/") {
            rest = rest[open.upperBound...]
            guard let close = rest.firstIndex(of: ")") else { break }
            shown.append("docs/" + rest[..<close])
        }
        #expect(shown.count >= 5)
        for path in shown {
            let svg = try String(contentsOfFile: repositoryRoot + "/" + path, encoding: .utf8)
            #expect(SvgCheck.parse(svg) != nil, "\(path) is well-formed SVG")
        }
    }

    @Test("the two set-up commands are the README's first")
    func commands() throws {
        let sh = try Self.blocks().first { $0.0 == "sh" }?.1 ?? ""
        #expect(sh.hasPrefix("scripts/mmlab examples binder"))
        #expect(sh.contains("scripts/test"))
    }

    @Test("the walk from a failing explore to its shrunk schedule, replay, trace and fix runs as the README shows it")
    func explore() throws {
        let text = try String(contentsOfFile: repositoryRoot + "/README.md", encoding: .utf8)
        let section = try #require(text.components(separatedBy: "## Finding the interleaving\n").dropFirst().first?
            .components(separatedBy: "\n## ").first)
        var blocks: [(String, String)] = []
        var current: (String, [String])?
        for line in section.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") {
                if let open = current { blocks.append((open.0, open.1.joined(separator: "\n") + "\n")); current = nil }
                else { current = (String(line.dropFirst(3)), []) }
            } else {
                current?.1.append(String(line))
            }
        }
        try? FileManager.default.removeItem(atPath: "/tmp/races")
        var outputs: [RunResult] = []
        var ran = 0
        for (language, code) in blocks where language == "sh" {
            for line in code.split(separator: "\n") {
                let words = line.split(separator: " ").map(String.init)
                #expect(words.first == "mmlab")
                outputs.append(try mmlab(Array(words.dropFirst())))
                ran += 1
            }
        }
        #expect(ran == 5)
        let texts = blocks.filter { $0.0 == "text" }.map(\.1)
        #expect(texts.count == 3)
        #expect(outputs[0].status == 1)
        #expect(outputs[0].stdout == texts[0], "explore prints what the README shows")
        let shrunk = try String(contentsOfFile: "/tmp/races/bug-vma_after_guard.lua-38.shrunk.sched", encoding: .utf8)
        #expect(shrunk.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { $0 + "\n" }.joined() == texts[1])
        #expect(outputs[1].status == 1, "the replay fails as the run did")
        #expect(try String(contentsOfFile: "/tmp/races/trace.json", encoding: .utf8).contains("schedule: preempt worker at vma_after_guard.lua:36"))
        #expect(outputs[2].status == 0)
        #expect(outputs[2].stderr == "mmlab: warning: schedule /tmp/races/bug-vma_after_guard.lua-38.shrunk.sched:10: preempt worker at vma_after_guard.lua:36 (step 2 of worker) -> fault: nothing else could run at step 2 of worker in this run\n")
        #expect(outputs[3].stdout == texts[2], "dfs confirms the fix as the README shows")
        #expect(outputs[4].status == 0, "the sweep: \(outputs[4].stderr)")
        #expect(try String(contentsOfFile: "/tmp/counters.csv", encoding: .utf8).hasPrefix("tasks,events,seed,"))
    }

    /// A command line's words, as sh splits them (single and double quotes).
    static func words(_ line: String) -> [String] {
        var words: [String] = [], word = "", quote: Character?, started = false
        for c in line {
            if let q = quote {
                if c == q { quote = nil } else { word.append(c) }
            } else if c == "'" || c == "\"" {
                quote = c
                started = true
            } else if c == " " {
                if started || !word.isEmpty { words.append(word) }
                word = ""
                started = false
            } else {
                word.append(c)
            }
        }
        if started || !word.isEmpty { words.append(word) }
        return words
    }

    @Test("every command line the README's shell blocks and --help's examples show runs and does what the text says")
    func commandLines() throws {
        var lines: [String] = []
        for (language, code) in try Self.blocks().dropFirst() where language == "sh" {  // the first is the set-up
            lines += code.split(separator: "\n").map { String($0.split(separator: "#").first ?? "").trimmingCharacters(in: .whitespaces) }
        }
        for command in [["--help"], ["explore", "--help"], ["sweep", "--help"]] {
            let help = try mmlab(command).stdout
            let examples = help.components(separatedBy: "Examples:\n").dropFirst().first ?? ""
            lines += examples.split(separator: "\n", omittingEmptySubsequences: false).prefix { !$0.isEmpty }
                .map { $0.trimmingCharacters(in: .whitespaces) }
        }
        lines = lines.filter { !$0.isEmpty }
        #expect(lines.count >= 20)
        // A folder of its own, where the examples and regressions are where the lines name them.
        let dir = try temporaryDirectory("mmlab-lines")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["examples", "Tests"] {
            try FileManager.default.createSymbolicLink(atPath: dir + "/" + name, withDestinationPath: repositoryRoot + "/" + name)
        }
        try "print(...)".write(toFile: dir + "/experiment.lua", atomically: true, encoding: .utf8)
        try? FileManager.default.removeItem(atPath: "/tmp/races")
        // What each line does that can be seen: its exit status, and a file it writes.
        let failing: Set = ["explore", "--schedule"]  // explore finds the bug; the replay fails as the run did
        for line in lines {
            var words = Self.words(line)
            #expect(words.first == "mmlab" || words.first == "scripts/mmlab", "\(line)")
            words.removeFirst()
            let r = try mmlab(words, directory: dir)
            let fails = failing.contains(words.first ?? "") && !words.contains("fixed") && !words.contains("--help")
                && !words.contains("--plan") && !words.contains("--merge")
            if words.contains("--plan") {
                #expect(r.status == 0 && !r.stdout.isEmpty, "\(line): \(r.stderr)")
                continue
            }
            #expect(r.status == (fails ? 1 : 0), "\(line): \(r.stderr)")
            if let i = words.firstIndex(of: "--results") {
                #expect(FileManager.default.fileExists(atPath: words[i + 1].hasPrefix("/") ? words[i + 1] : dir + "/" + words[i + 1]), "\(line) writes its results")
            }
            if let i = words.firstIndex(of: "--trace") {
                #expect(FileManager.default.fileExists(atPath: words[i + 1].hasPrefix("/") ? words[i + 1] : dir + "/" + words[i + 1]), "\(line) writes its trace")
            }
            if words.first == "examples", let i = words.firstIndex(of: "--out") {
                let pictures = try FileManager.default.contentsOfDirectory(atPath: dir + "/" + words[i + 1])
                #expect(pictures.contains { $0.hasSuffix(".svg") }, "\(line) draws into its --out folder")
            }
        }
    }

    @Test("the checkout's root holds only what the README's layout names")
    func root() throws {
        let text = try String(contentsOfFile: repositoryRoot + "/README.md", encoding: .utf8)
        let layout = try #require(text.components(separatedBy: "## Layout\n").dropFirst().first?.components(separatedBy: "```").dropFirst().first)
        let named = Set(layout.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == ";" || $0 == "," })
            .map { $0.split(separator: "/").first.map(String.init) ?? "" })
        let root = try FileManager.default.contentsOfDirectory(atPath: repositoryRoot)
            .filter { !$0.hasPrefix(".build") && $0 != ".git" && $0 != "Package.resolved" }  // built or ignored
        for entry in root {
            #expect(named.contains(entry) || entry == ".gitignore", "\(entry) is at the root but not in the layout")
        }
    }
}

