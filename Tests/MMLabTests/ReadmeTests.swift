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
}
