import Testing
@testable import MMLab

@Suite("The fuzzer")
struct FuzzTests {
    /// CI's bounded form of `mmlab fuzz`: a few thousand calls on fixed
    /// seeds (a local run of a million calls: `mmlab fuzz --calls 1000000`).
    @Test("a smoke run on fixed seeds finds nothing, and reaches past the argument checks", arguments: [1, 2, 3] as [UInt64])
    func smoke(seed: UInt64) {
        let report = Fuzzer(seed: seed * 1000, calls: 3000).run()
        #expect(report.failures == [])
        #expect(report.calls >= 3000)
        #expect(report.returned > 500, "calls that got through")
        #expect(report.kernelErrors > 0 && report.bugs > 0 && report.luaErrors > 0, "every kind of error was met")
    }

    @Test("the same seed replays the same round")
    func replay() {
        let a = Fuzzer(seed: 7, calls: 2000).run(), b = Fuzzer(seed: 7, calls: 2000).run()
        #expect(a.calls == b.calls && a.returned == b.returned && a.bugs == b.bugs && a.errnos == b.errnos)
    }

    @Test("mmlab fuzz prints a summary and exits 0 when nothing failed")
    func command() throws {
        let r = try mmlab(["fuzz", "--seed", "11", "--calls", "1500"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.hasPrefix("fuzz: "))
        #expect(r.stdout.contains("1 rounds (seeds 11-11)"))
        #expect(r.stdout.hasSuffix("no failures\n"))
        #expect(try mmlab(["fuzz", "--calls", "0"]).status == 2)
    }

    @Test("it calls Lua's coroutine and debug functions around kernel calls too")
    func luaFunctions() throws {
        let r = try mmlab(["fuzz", "--seed", "11", "--calls", "1500", "--print-calls"])
        #expect(r.status == 0)
        let called = Set(r.stdout.split(separator: "\n").compactMap { line -> String? in
            let words = line.split(separator: " ", maxSplits: 2)
            guard words.count == 3, let open = words[2].firstIndex(of: "(") else { return nil }
            return String(words[2][..<open])
        })
        for name in ["coroutine.create+resume", "coroutine.wrap", "coroutine.resume", "coroutine.close", "coroutine.yield",
                     "debug.sethook around a call", "debug.sethook on a coroutine", "debug.gethook"] {
            #expect(called.contains(name), "\(name) was called")
        }
    }
}
