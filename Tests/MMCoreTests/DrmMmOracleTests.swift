import Foundation
import Testing
@testable import MMCore

/// The kernel's own drm_mm as an oracle: Tests/Oracle/drm_mm/build.sh
/// compiles drivers/gpu/drm/drm_mm.c and lib/rbtree.c from Debian's
/// linux-source-6.12 (which scripts/test installs) against our shim
/// headers, into a command driver; random operation sequences go through
/// it and through MMCore's DrmMm, and every answer must be the same:
/// placements, errors, hole lists in address and stack order, node lists,
/// scan verdicts, color_evict, drm_mm_print.
///
/// 6.12 and the current kernel's drm_mm.c differ only in an include, a
/// `__maybe_unused` and where `DECLARE_NEXT_HOLE_ADDR` takes an address:
/// no behaviour (checked against the newest copy the library holds).
@Suite("drm_mm against the kernel's drivers/gpu/drm/drm_mm.c")
struct DrmMmOracleTests {
    static let tarball = "/usr/src/linux-source-6.12.tar.xz"

    /// Builds the oracle's driver into a fresh folder; its path.
    static func buildDriver() throws -> String {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let script = here.deletingLastPathComponent().appendingPathComponent("Oracle/drm_mm/build.sh").path
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("mmlab-drm_mm-oracle-\(getpid())").path
        let build = Process()
        build.executableURL = URL(fileURLWithPath: "/bin/sh")
        build.arguments = [script, out]
        let log = Pipe()
        build.standardOutput = log
        build.standardError = log
        try build.run()
        let text = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        build.waitUntilExit()
        guard build.terminationStatus == 0 else {
            throw OracleError("the oracle did not build (scripts/test installs linux-source-6.12):\n\(text)")
        }
        return out + "/driver"
    }

    /// Runs `commands` through the kernel's drm_mm; its answers, a line each.
    static func kernel(_ driver: String, _ commands: [String]) throws -> [Substring] {
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("mmlab-drm_mm-oracle-\(getpid()).cmd")
        try (commands.joined(separator: "\n") + "\n").write(to: input, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: input) }
        let run = Process()
        run.executableURL = URL(fileURLWithPath: driver)
        run.arguments = ["--batch"]
        run.standardInput = try FileHandle(forReadingFrom: input)
        let output = Pipe()
        run.standardOutput = output
        try run.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        run.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).dropLast()
    }

    @Test("thousands of random sequences: every placement, error, hole, scan verdict and print is the kernel's")
    func oracle() throws {
        #expect(FileManager.default.fileExists(atPath: Self.tarball), "scripts/test installs linux-source-6.12")
        let driver = try Self.buildDriver()
        defer { try? FileManager.default.removeItem(atPath: (driver as NSString).deletingLastPathComponent) }
        let generator = Generator(seed: 0x6472_6d5f_6d6d)
        var owner: [Int] = [], firstCommand: [Int] = []
        for sequence in 0..<3000 {
            let first = generator.commands.count
            firstCommand.append(first)
            do { try generator.sequence() } catch {
                Issue.record("sequence \(sequence): MMCore failed: \(error)\n\(generator.commands[first...].joined(separator: "\n"))")
                return
            }
            owner += Array(repeating: sequence, count: generator.expected.count - owner.count)
        }
        firstCommand.append(generator.commands.count)
        let expected = generator.expected
        let got = try Self.kernel(driver, generator.commands)
        // Commands and answers line up one to one, but a print answers with
        // many lines: compare answers, and show the first sequence that
        // differs, its commands and both sets of answers.
        guard let i = (0..<min(got.count, expected.count)).first(where: { got[$0] != expected[$0] })
                ?? (got.count == expected.count ? nil : min(got.count, expected.count)) else { return }
        let sequence = owner[min(i, owner.count - 1)]
        let answers = owner.indices.filter { owner[$0] == sequence }
        let commands = generator.commands[firstCommand[sequence]..<firstCommand[sequence + 1]]
        Issue.record("""
            sequence \(sequence) differs at answer \(i): the kernel says "\(i < got.count ? String(got[i]) : "nothing")", MMCore "\(i < expected.count ? expected[i] : "nothing")"
            commands:
            \(commands.joined(separator: "\n"))
            the kernel's answers:
            \(answers.compactMap { $0 < got.count ? String(got[$0]) : nil }.joined(separator: "\n"))
            MMCore's answers:
            \(answers.map { expected[$0] }.joined(separator: "\n"))
            """)
    }
}

struct OracleError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// MMCore's DrmMm behind the driver's commands, answering as the driver does.
struct ModelDriver {
    var mm: DrmMm?
    var slots: [Int: DrmMmNode] = [:]
    var scan: DrmMmScan?

    /// The driver's `guard_color_adjust`, i915's: a guard between
    /// differently coloured neighbours.
    static func colorAdjust(_ mm: DrmMm, _ size: UInt64) -> (DrmMmNode?, UInt64, inout UInt64, inout UInt64) throws -> Void {
        { [unowned mm] node, color, start, end in
            if let node, node.color != color { start &+= size }
            if let next = mm.node(after: node), next.color != color { end &-= size }
        }
    }

    mutating func run(_ command: String) throws -> [String] {
        let t = command.split(separator: " ").map(String.init)
        let n = t.dropFirst().compactMap { UInt64($0) }
        func slot(_ s: String) -> Int { Int(s) ?? -1 }
        switch t[0] {
        case "init":
            mm = try DrmMm(start: n[0], size: n[1], site: .unknown)
            slots = [:]
            scan = nil
            return ["ok"]
        case "color_adjust":
            guard let mm else { return ["bad"] }
            mm.colorAdjust = t[1] == "on" ? Self.colorAdjust(mm, n[0]) : nil
            return ["ok"]
        case "insert":
            guard let mm, let mode = DrmMm.Mode(rawValue: t[7]) else { return ["bad"] }
            do {
                let node = try mm.insert(size: n[1], alignment: n[2], color: n[3], rangeStart: n[4], rangeEnd: n[5],
                                         mode: mode, site: .unknown)
                slots[slot(t[1])] = node
                return ["ok \(node.start)"]
            } catch let error as KernelError where error.errno == .ENOSPC {
                return ["err -28"]
            }
        case "reserve":
            guard let mm else { return ["bad"] }
            do {
                slots[slot(t[1])] = try mm.reserve(start: n[1], size: n[2], color: n[3], site: .unknown)
                return ["ok"]
            } catch let error as KernelError where error.errno == .ENOSPC {
                return ["err -28"]
            }
        case "remove":
            guard let mm, let node = slots.removeValue(forKey: slot(t[1])) else { return ["bad"] }
            try mm.remove(node)
            return ["ok"]
        case "holes":
            return [(["holes"] + (mm?.holes() ?? []).map { "\($0.start):\($0.size)" }).joined(separator: " ")]
        case "hole_stack":
            return [(["hole_stack"] + (mm?.holeStack() ?? []).map { "\($0.start):\($0.size)" }).joined(separator: " ")]
        case "nodes":
            return [(["nodes"] + (mm?.nodes() ?? []).map { "\($0.start):\($0.size):\($0.color)" }).joined(separator: " ")]
        case "scan_init":
            guard let mm, let mode = DrmMm.Mode(rawValue: t[6]) else { return ["bad"] }
            scan = try DrmMmScan(mm: mm, size: n[0], alignment: n[1], color: n[2], rangeStart: n[3], rangeEnd: n[4],
                                 mode: mode, site: .unknown)
            return ["ok"]
        case "scan_add", "scan_remove":
            guard let scan, let node = slots[slot(t[1])] else { return ["bad"] }
            return [try (t[0] == "scan_add" ? scan.addBlock(node) : scan.removeBlock(node)) ? "1" : "0"]
        case "color_evict":
            guard let scan else { return ["bad"] }
            guard let node = try scan.colorEvict() else { return ["none"] }
            return [slots.first { $0.value === node }.map { "node \($0.key)" } ?? "node head"]
        case "print":
            return (mm?.print().split(separator: "\n").map(String.init) ?? []) + ["end"]
        default:
            return ["bad"]
        }
    }
}

/// One random sequence of commands: an allocator, inserts in every mode
/// with random sizes, alignments, ranges and colors, reserves, removals,
/// eviction scans, and looks at the holes, the nodes and the print.
final class Generator {
    var random: Random
    var model = ModelDriver()
    private(set) var commands: [String] = []
    private(set) var expected: [String] = []
    var start: UInt64 = 0, size: UInt64 = 0
    /// With a color_adjust, every address and size is a multiple of its
    /// guard, as i915's are of a page: a hole is never narrower than the
    /// guard, which then never wraps around 2^64 (the kernel would BUG).
    var granule: UInt64 = 1
    var live: [Int] = []
    var nextSlot = 0

    init(seed: UInt64) { random = Random(seed: seed) }

    func draw(_ n: UInt64) -> UInt64 { random.below(n) }
    func chance(_ oneIn: UInt64) -> Bool { draw(oneIn) == 0 }

    /// Issues `command` to the model; what it answered.
    @discardableResult
    func issue(_ command: String) throws -> [String] {
        commands.append(command)
        let answer = try model.run(command)
        expected += answer
        return answer
    }

    /// A random size: small, or up to the allocator's, sometimes 0.
    func anySize() -> UInt64 {
        let units = size / granule
        switch draw(8) {
        case 0: return 0
        case 1: return (1 + draw(max(1, units))) * granule
        default: return (1 + draw(max(1, min(units, 1 << 16) / 8))) * granule
        }
    }

    func anyAlignment() -> UInt64 {
        let a: UInt64 = [0, 0, 1, 2, 8, 64, 4096, 3, 100, 1 << 20][Int(draw(10))]
        return a <= 1 || granule == 1 ? a : a * granule
    }

    /// An address in the allocator's span, on the granule.
    func anyAddress() -> UInt64 { start &+ draw(size / granule) * granule }

    /// A range inside (or around) the allocator's: `(start, end)`, start <= end.
    func anyRange() -> (UInt64, UInt64) {
        if chance(2) { return (0, granule == 1 ? .max : .max / granule * granule) }
        let a = anyAddress(), b = anyAddress()
        return (min(a, b), max(a, b))
    }

    static let modes = ["best", "low", "high", "evict", "lowest", "highest"]

    func sequence() throws {
        live = []
        // The allocator: small spans at 0, odd starts, and near the top of 2^64.
        size = [UInt64(1 << 12), 1 << 16, 1 << 20, 1 << 32, 1000, 4097][Int(draw(6))]
        switch draw(4) {
        case 0: start = 0
        case 1: start = draw(1 << 20)
        case 2: start = UInt64.max - size - draw(4096) - 1
        default: start = 1 << 40
        }
        granule = chance(3) ? [1, 16, 4096][Int(draw(3))] : 1
        if granule > 1 {
            size = max(granule, size / granule * granule)
            start = start / granule * granule
            while start.addingReportingOverflow(size).overflow || start &+ size == 0 { start -= granule }
        }
        try issue("init \(start) \(size)")
        if granule > 1 || chance(3) { try issue("color_adjust on \(granule)") }
        for _ in 0..<(20 + draw(80)) {
            switch draw(16) {
            case 0...6: try insert()
            case 7: try reserve()
            case 8...10: try remove()
            case 11: try scan()
            case 12: try issue("holes")
            case 13: try issue("hole_stack")
            case 14: try issue("nodes")
            default: if chance(4) { try issue("print") } else { try insert() }
            }
        }
        try issue("holes")
        try issue("hole_stack")
        try issue("print")
    }

    func newSlot() -> Int {
        nextSlot += 1
        return nextSlot
    }

    func insert() throws {
        let slot = newSlot()
        let (rs, re) = anyRange()
        let answer = try issue("insert \(slot) \(anySize()) \(anyAlignment()) \(draw(3)) \(rs) \(re) \(Self.modes[Int(draw(6))])")
        if answer.first?.hasPrefix("ok") == true { live.append(slot) }
    }

    func reserve() throws {
        let slot = newSlot()
        let at = chance(3) ? start : anyAddress()
        let answer = try issue("reserve \(slot) \(at) \((1 + draw(max(1, size / granule / 16))) * granule) \(draw(3))")
        if answer.first == "ok" { live.append(slot) }
    }

    func remove() throws {
        guard !live.isEmpty else { return }
        let slot = live.remove(at: Int(draw(UInt64(live.count))))
        try issue("remove \(slot)")
    }

    /// An eviction scan as a driver runs one: blocks added from an "LRU"
    /// until a hole appears, removed in reverse, the chosen ones evicted,
    /// then what color_evict still names.
    func scan() throws {
        guard !live.isEmpty else { return }
        let (rs, re) = anyRange()
        guard re > rs else { return }
        let want = (1 + draw(max(1, min(re - rs, size / 4) / granule))) * granule
        guard want <= re - rs else { return }
        try issue("scan_init \(want) \(anyAlignment()) \(draw(3)) \(rs) \(re) \(Self.modes[Int(draw(6))])")
        var lru = live
        for i in lru.indices.reversed() { lru.swapAt(i, Int(draw(UInt64(i + 1)))) }
        var added: [Int] = [], found = false
        for slot in lru.prefix(Int(1 + draw(UInt64(lru.count)))) {
            added.append(slot)
            if try issue("scan_add \(slot)") == ["1"] {
                found = true
                break
            }
        }
        var evict: [Int] = []
        for slot in added.reversed() where try issue("scan_remove \(slot)") == ["1"] { evict.append(slot) }
        for slot in evict {
            live.removeAll { $0 == slot }
            try issue("remove \(slot)")
        }
        // With a color_adjust, color_evict needs the hole found and freed: a
        // hit that wrapped around 2^64 (a guard wider than a hole) is a
        // DRM_MM_BUG_ON in the kernel, as in MMCore.
        guard found, model.mm?.colorAdjust != nil, let hit = model.scan, hit.hitStart < hit.hitEnd,
              hit.hitStart >= start, hit.hitEnd <= start &+ size else { return }
        for _ in 0..<4 {
            let answer = try issue("color_evict")
            guard let node = answer.first, node.hasPrefix("node "), let slot = Int(node.dropFirst(5)) else { return }
            live.removeAll { $0 == slot }
            try issue("remove \(slot)")
        }
    }
}
