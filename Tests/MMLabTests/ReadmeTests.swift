import Foundation
import Testing

/// README examples run as written and print what the README says.
@Suite("README")
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
}

