import Testing
@testable import MMCore

@Suite("Ordered tree")
struct OrderedTreeTests {
    @Test("random inserts and removals agree with a sorted array; fits find the right entries")
    func random() {
        var tree = OrderedTree<Int, Int>()
        var reference: [Int: UInt64] = [:]
        var random = Random(seed: 42)
        for step in 0..<4000 {
            let key = Int(random.below(500))
            if random.below(3) == 0 {
                #expect((tree.remove(key) != nil) == (reference.removeValue(forKey: key) != nil))
            } else {
                let weight = random.below(100)
                tree.insert(key, key * 2, weight: weight)
                reference[key] = weight
            }
            if step % 97 == 0 {
                #expect(tree.validate())
                let sorted = reference.keys.sorted()
                var seen: [Int] = []
                tree.forEach { k, v in
                    seen.append(k)
                    #expect(v == k * 2)
                }
                #expect(seen == sorted)
                let probe = Int(random.below(500)), need = random.below(100)
                let fit = sorted.first { $0 >= probe && reference[$0]! >= need }
                #expect(tree.firstFit(after: probe, weight: need)?.key == fit)
                let lastFit = sorted.last { $0 <= probe && reference[$0]! >= need }
                #expect(tree.lastFit(before: probe, weight: need)?.key == lastFit)
                #expect(tree.first(after: probe, inclusive: false)?.key == sorted.first { $0 > probe })
                #expect(tree.last(before: probe)?.key == sorted.last { $0 <= probe })
                #expect(tree.maxWeight == (reference.values.max() ?? 0))
            }
        }
        #expect(tree.count == reference.count)
    }
}

/// The placement drm_mm promises, found by looking at every hole: what the
/// trees must agree with.
private struct ReferenceHole {
    let start: UInt64, size: UInt64, seq: UInt64
}

@Suite("drm_mm")
struct DrmMmTests {
    /// Every hole with its age, from the allocator's own stack order.
    private func holes(_ mm: DrmMm) -> [ReferenceHole] {
        let stack = mm.holeStack()
        return stack.enumerated().map { i, hole in
            ReferenceHole(start: hole.start, size: hole.size, seq: UInt64(stack.count - i))
        }
    }

    private func expected(_ holes: [ReferenceHole], size: UInt64, alignment: UInt64, mode: DrmMm.Mode) -> UInt64? {
        func place(_ h: ReferenceHole) -> UInt64? {
            guard h.size >= size else { return nil }
            let end = h.start + h.size
            var start = mode.base == .high ? end - size : h.start
            if alignment > 1, start % alignment != 0 {
                start -= start % alignment
                if mode.base != .high { start += alignment }
                guard start >= h.start, end >= start, end - start >= size else { return nil }
            }
            return start
        }
        let order: [ReferenceHole]
        switch mode.base {
        case .low: order = holes.filter { $0.size >= size }.sorted { $0.start < $1.start }
        case .high: order = holes.filter { $0.size >= size }.sorted { $0.start > $1.start }
        case .evict: order = holes.sorted { $0.seq > $1.seq }
        default: order = holes.sorted { ($0.size, UInt64.max - $0.seq) < ($1.size, UInt64.max - $1.seq) }
        }
        for hole in mode.once ? Array(order.prefix(1)) : order {
            if let at = place(hole) { return at }
        }
        return nil
    }

    // "lowest" and "highest" try the one hole find_hole_addr stops at, which
    // depends on the tree's shape: the kernel's own drm_mm checks them
    // (DrmMmOracleTests).
    @Test("every mode places where a look at every hole says, under a random workload",
          arguments: [DrmMm.Mode.best, .low, .high, .evict])
    func modes(mode: DrmMm.Mode) throws {
        let mm = try DrmMm(start: 0, size: 1 << 16, site: .unknown)
        var random = Random(seed: 7)
        var nodes: [DrmMmNode] = []
        for _ in 0..<3000 {
            if nodes.count > 40, random.below(2) == 0 {
                let i = Int(random.below(UInt64(nodes.count)))
                try mm.remove(nodes.remove(at: i))
                continue
            }
            let size = 1 + random.below(random.below(4) == 0 ? 4096 : 256)
            let alignment: UInt64 = [0, 1, 3, 8, 64, 100][Int(random.below(6))]
            let want = expected(holes(mm), size: size, alignment: alignment, mode: mode)
            do {
                let node = try mm.insert(size: size, alignment: alignment, mode: mode, site: .unknown)
                #expect(node.start == want, "size \(size) alignment \(alignment)")
                nodes.append(node)
            } catch let error as KernelError {
                #expect(want == nil && error.errno == .ENOSPC)
            }
        }
        #expect(mm.validate())
        for node in nodes { try mm.remove(node) }
        #expect(mm.isClean && mm.holes().count == 1 && mm.validate())
    }

    @Test("a node reserved at the very top of the 64-bit space; interval queries")
    func top() throws {
        let mm = try DrmMm(start: 1, size: UInt64.max - 2, site: .unknown)
        let node = try mm.reserve(start: UInt64.max - 10, size: 9, site: .unknown)
        #expect(mm.intervalFirst(UInt64.max - 2, UInt64.max - 2) === node)
        #expect(mm.intervalFirst(UInt64.max - 1, UInt64.max) == nil)
        #expect(mm.intervalFirst(0, UInt64.max) === node)
        #expect(throws: KernelError.self) { try mm.reserve(start: UInt64.max - 1, size: 2, site: .unknown) }
        #expect(mm.largestHole?.size == UInt64.max - 11, "[1, 2^64 - 11)")
        try mm.remove(node)
        #expect(throws: KernelError.self) { try DrmMm(start: 2, size: UInt64.max - 1, site: .unknown) }
    }

    @Test("a scan's evictions free the hole it reported; restored if abandoned")
    func scan() throws {
        let mm = try DrmMm(start: 0, size: 256, site: .unknown)
        let nodes = try (0..<256).map { _ in try mm.insert(size: 1, site: .unknown) }
        let scan = try DrmMmScan(mm: mm, size: 16, alignment: 16, mode: .high, site: .unknown)
        var added: [DrmMmNode] = []
        // Interleaved from the top: 16 aligned free bytes appear once 240 ..< 256 are all in.
        for i in Array(stride(from: 255, through: 200, by: -2)) + Array(stride(from: 254, through: 200, by: -2)) {
            added.append(nodes[i])
            if try scan.addBlock(nodes[i]) { break }
        }
        #expect(scan.hitStart == 240 && scan.hitEnd == 256)
        #expect(throws: KernelError.self) { try mm.insert(size: 1, site: .unknown) }
        var evict: [DrmMmNode] = []
        for node in added.reversed() where try scan.removeBlock(node) { evict.append(node) }
        #expect(evict.count == 16)
        for node in evict { try mm.remove(node) }
        let hole = try mm.insert(size: 16, alignment: 16, mode: .evict, site: .unknown)
        #expect(hole.start == scan.hitStart && !hole.holeFollows)
        try scan.close()
        let abandoned = try DrmMmScan(mm: mm, size: 2, site: .unknown)
        _ = try abandoned.addBlock(nodes[0])
        _ = try abandoned.addBlock(nodes[1])
        try abandoned.close(byCollector: true)
        #expect(mm.scanActive == 0 && mm.validate())
        #expect(mm.nodes().count == 256 - evict.count + 1)
    }
}

@Suite("Binder")
struct BinderTests {
    @Test("the range allocator's free ranges never touch, and tile the space, under a random workload")
    func ranges() throws {
        let r = try RangeAllocator<Int>(size: 1 << 16)
        var random = Random(seed: 3)
        var live: [Int] = []
        for _ in 0..<2000 {
            if !live.isEmpty, random.below(2) == 0 {
                let offset = live.remove(at: Int(random.below(UInt64(live.count))))
                let freed = try r.reservationAbort(offset: offset)
                #expect(freed.start >= 0 && freed.end <= (1 << 16) / PAGE_SIZE)
            } else if let (offset, _) = try? r.reserveNew(size: 8 * Int(1 + random.below(300)), isOneway: random.below(4) == 0) {
                live.append(offset)
            }
            let all = r.allRanges()
            var end = 0
            for (i, range) in all.enumerated() {
                #expect(range.offset == end)
                end += range.size
                if i > 0, range.state == .free { #expect(all[i - 1].state != .free) }
            }
            #expect(end == 1 << 16)
        }
        #expect(r.buffers == live.count)
    }

    @Test("sanitized sizes: rounded to 8, at least 8, overflow is 0")
    func sizes() {
        #expect(BinderAlloc.sanitizedSize(0, 0, 0) == 8)
        #expect(BinderAlloc.sanitizedSize(1, 1, 1) == 24)
        #expect(BinderAlloc.sanitizedSize(UInt64.max, 0, 0) == 0)
        #expect(BinderAlloc.sanitizedSize(UInt64.max - 7, 8, 0) == 0)
        #expect(BinderAlloc.sanitizedSize(UInt64.max / 2, UInt64.max / 2, 8) == 0)
    }
}
