/// The DRM range allocator (`struct drm_mm`, drivers/gpu/drm/drm_mm.c):
/// nodes placed in `[start, start + size)` with alignment, colors and
/// range limits, holes indexed by size and by address so that every
/// operation is O(log n), and the eviction scan (DrmMmScan.swift).
///
/// As in the kernel, the allocator keeps a head node standing for the
/// space before the first node: its "start" is the end of the range and
/// its "size" the range's size negated, so that the hole after it begins
/// at the range's start. Node `i`'s hole runs from its end to the start of
/// the node after it. All arithmetic is unsigned and wraps as the kernel's.
///
/// # Invariants
///
/// Nodes (the head included) form a circular list in address order. A node
/// has a hole after it exactly when `holeSize > 0`; such holes are in
/// `holesByAddress` (weighted by size), `holesBySize` and the hole stack
/// (newest first), and nowhere else. While `scanActive > 0` the list lacks
/// the scanned nodes and the hole indexes are stale.
public final class DrmMm: NativeObject {
    /// One node's bookkeeping, by id; id 0 is the head.
    struct Entry {
        var start: UInt64 = 0
        var size: UInt64 = 0
        var color: UInt64 = 0
        var prev: Int32 = 0
        var next: Int32 = 0
        var holeSize: UInt64 = 0
        var holeSeq: UInt64 = 0
        var stackPrev: Int32 = -1
        var stackNext: Int32 = -1
        var allocated = false
        var scanned = false
    }

    /// Holes by size, smallest first; of equal size, the newest first (the
    /// order `best_hole` and `next_hole` walk drm_mm's size tree in).
    struct SizeKey: Comparable {
        let size: UInt64
        let age: UInt64  // ~holeSeq: newer holes sort first

        static func < (a: SizeKey, b: SizeKey) -> Bool { (a.size, a.age) < (b.size, b.age) }
    }

    public let start: UInt64
    public let size: UInt64
    var entries: [Entry]
    private var unusedIds: [Int32] = []
    /// The node object of each allocated id. Nodes and their allocator keep
    /// each other alive until the node is removed, as an embedded
    /// `drm_mm_node` must be removed before it goes.
    var objects: [DrmMmNode?]
    let accounting: Accounting?
    var nodesByStart = OrderedTree<UInt64, Int32>()
    var holesByAddress = OrderedTree<UInt64, Int32>()
    var holesBySize = OrderedTree<SizeKey, Int32>()
    var stackHead: Int32 = -1
    private var holeSeq: UInt64 = 0
    public private(set) var nodeCount = 0

    /// `color_adjust(node before the hole or nil, color, &start, &end)`.
    public var colorAdjust: ((DrmMmNode?, UInt64, inout UInt64, inout UInt64) throws -> Void)?
    /// Blocks added to an eviction scan and not yet removed (`scan_active`).
    public internal(set) var scanActive = 0
    /// Inside an operation that runs `colorAdjust`: no other may start.
    var busy = false
    /// Nodes the collector dropped while the allocator could not take them
    /// out (a scan, a callback): removed once it can.
    var deferredRemovals: [DrmMmNode] = []
    public private(set) var isTakenDown = false

    /// `drm_mm_init`: EINVAL unless `start + size` stays within 2^64 − 1.
    /// Nodes are tracked in `accounting`, if given.
    public init(start: UInt64, size: UInt64, accounting: Accounting? = nil, site: Site) throws(KernelError) {
        let (end, overflow) = start.addingReportingOverflow(size)
        guard size > 0, !overflow, end != 0 else {
            throw KernelError(.EINVAL, "drm_mm of \(size) bytes at 0x\(String(start, radix: 16)): the range must be non-empty and end within 2^64 - 1")
        }
        self.start = start
        self.size = size
        self.accounting = accounting
        entries = [Entry(start: end, size: 0 &- size)]
        objects = [nil]
        super.init(site: site)
        addHole(0)
        accounting?.track(self)
    }

    /// Its owner lets go (the Rust `Allocator` is dropped): no more callbacks;
    /// the structure lives on while nodes hold it.
    public func close() {
        colorAdjust = nil
        accounting?.untrack(self)
    }

    override public var typeName: String { "Allocator" }
    override public var description: String {
        "Allocator{start=0x\(String(start, radix: 16)), size=0x\(String(size, radix: 16)), nodes=\(nodeCount)}"
    }

    // MARK: Holes

    @inline(__always) func holeStart(_ id: Int32) -> UInt64 { entries[Int(id)].start &+ entries[Int(id)].size }
    @inline(__always) func holeEnd(_ id: Int32) -> UInt64 { entries[Int(entries[Int(id)].next)].start }

    private func sizeKey(_ id: Int32) -> SizeKey {
        SizeKey(size: entries[Int(id)].holeSize, age: ~entries[Int(id)].holeSeq)
    }

    /// `add_hole`: the space after `id` becomes a hole, the newest.
    private func addHole(_ id: Int32) {
        let i = Int(id)
        let size = holeEnd(id) &- holeStart(id)
        guard size > 0 else { return }
        holeSeq += 1
        entries[i].holeSize = size
        entries[i].holeSeq = holeSeq
        holesBySize.insert(sizeKey(id), id)
        holesByAddress.insert(holeStart(id), id, weight: size)
        entries[i].stackPrev = -1
        entries[i].stackNext = stackHead
        if stackHead >= 0 { entries[Int(stackHead)].stackPrev = id }
        stackHead = id
    }

    /// `rm_hole`.
    private func removeHole(_ id: Int32) {
        let i = Int(id)
        guard entries[i].holeSize > 0 else { return }
        holesBySize.remove(sizeKey(id))
        holesByAddress.remove(holeStart(id))
        let prev = entries[i].stackPrev, next = entries[i].stackNext
        if prev >= 0 { entries[Int(prev)].stackNext = next } else { stackHead = next }
        if next >= 0 { entries[Int(next)].stackPrev = prev }
        entries[i].holeSize = 0
        entries[i].stackPrev = -1
        entries[i].stackNext = -1
    }

    // MARK: Checks

    /// Operations other than a scan's own are bugs while a scan is active
    /// and after `takedown`; changes are bugs inside a `color_adjust`
    /// callback, where `query`s (looking at neighbours) are fine.
    public func checkUsable(_ what: String, query: Bool = false) throws(KernelError) {
        if isTakenDown { throw .bug("\(what) on \(self) after drm_mm_takedown") }
        if busy {
            if query { return }
            throw .bug("\(what) on \(self) from its own color_adjust callback: drm_mm is not reentrant")
        }
        if scanActive > 0 {
            throw .bug("\(what) on \(self) while an eviction scan has \(scanActive) block(s) added: remove them first")
        }
    }

    func object(_ id: Int32) -> DrmMmNode? {
        guard id > 0, id < objects.count else { return nil }
        return objects[Int(id)]
    }

    /// Runs `colorAdjust` for the hole after `id`, with the allocator busy.
    func adjust(_ id: Int32, _ color: UInt64, _ start: inout UInt64, _ end: inout UInt64) throws {
        guard let colorAdjust else { return }
        busy = true
        defer { busy = false }
        try colorAdjust(object(id), color, &start, &end)
    }

    // MARK: Insert, reserve, remove

    /// Insert modes (`enum drm_mm_insert_mode`); the `once` ones try one hole.
    public enum Mode: String, CaseIterable, Sendable {
        case best, low, high, evict, lowest, highest

        var base: Mode {
            switch self {
            case .lowest: .low
            case .highest: .high
            default: self
            }
        }
        var once: Bool { self == .lowest || self == .highest }
    }

    /// `drm_mm_insert_node_in_range`: a node of `size` in a hole of
    /// `[rangeStart, rangeEnd)`, placed as `mode` says. ENOSPC when `size`
    /// is zero, larger than the range or than every hole, or no hole fits.
    public func insert(size: UInt64, alignment: UInt64 = 0, color: UInt64 = 0, rangeStart: UInt64 = 0,
                       rangeEnd: UInt64 = .max, mode: Mode = .best, site: Site) throws -> DrmMmNode {
        try checkUsable("insert_node")
        defer { processDeferred() }
        guard rangeStart <= rangeEnd else {
            throw KernelError.bug("insert_node with range_start 0x\(String(rangeStart, radix: 16)) above range_end 0x\(String(rangeEnd, radix: 16))")
        }
        guard size > 0, rangeEnd - rangeStart >= size else {
            throw KernelError(.ENOSPC, size == 0 ? "insert_node of size 0" : "insert_node of \(size) bytes: the range [0x\(String(rangeStart, radix: 16)), 0x\(String(rangeEnd, radix: 16))) is smaller")
        }
        guard holesBySize.last.map({ $0.key.size >= size }) == true else {
            throw KernelError(.ENOSPC, "insert_node of \(size) bytes: no hole is that large")
        }
        let alignment = alignment <= 1 ? 0 : alignment
        let remainderMask = alignment.nonzeroBitCount == 1 ? alignment - 1 : 0
        let base = mode.base
        var hole = firstHole(rangeStart, rangeEnd, size, base)
        while let id = hole {
            let hs = holeStart(id), he = hs &+ entries[Int(id)].holeSize
            if base == .low, hs >= rangeEnd { break }
            if base == .high, he <= rangeStart { break }
            var colStart = hs, colEnd = he
            try adjust(id, color, &colStart, &colEnd)
            if let start = Self.fit(size, colStart, colEnd, range: rangeStart, rangeEnd, alignment: alignment,
                                    remainderMask: remainderMask, high: base == .high) {
                return place(after: id, start: start, size: size, color: color, site: site)
            }
            hole = mode.once ? nil : nextHole(id, size, base)
        }
        throw KernelError(.ENOSPC, "insert_node of \(size) bytes (alignment \(alignment), color \(color), mode \(mode.rawValue)): no hole fits")
    }

    /// Where a node of `size` goes in the (color-adjusted) hole
    /// `[colStart, colEnd)` clipped to `[rangeStart, rangeEnd)`: at the
    /// bottom, or `high` at the top, moved to the alignment; nil when it
    /// does not fit. The arithmetic of `drm_mm_insert_node_in_range` and
    /// `drm_mm_scan_add_block`; a callback may leave `colStart > colEnd`.
    static func fit(_ size: UInt64, _ colStart: UInt64, _ colEnd: UInt64, range rangeStart: UInt64, _ rangeEnd: UInt64,
                    alignment: UInt64, remainderMask: UInt64, high: Bool) -> UInt64? {
        var adjStart = max(colStart, rangeStart)
        let adjEnd = min(colEnd, rangeEnd)
        guard adjEnd > adjStart, adjEnd - adjStart >= size else { return nil }
        if high { adjStart = adjEnd - size }
        if alignment != 0 {
            let rem = remainderMask != 0 ? adjStart & remainderMask : adjStart % alignment
            if rem != 0 {
                adjStart &-= rem
                if !high { adjStart &+= alignment }
                guard adjStart >= max(colStart, rangeStart), min(colEnd, rangeEnd) &- adjStart >= size,
                      adjEnd > adjStart, adjEnd - adjStart >= size else { return nil }
            }
        }
        return adjStart
    }

    /// The first hole a mode tries (`first_hole`). Low and high skip holes
    /// smaller than `size`, as drm_mm's `subtree_max_hole` does.
    private func firstHole(_ rangeStart: UInt64, _ rangeEnd: UInt64, _ size: UInt64, _ mode: Mode) -> Int32? {
        switch mode {
        case .low:
            if let below = holesByAddress.lastFit(before: rangeStart, weight: size),
               holeStart(below.value) &+ entries[Int(below.value)].holeSize > rangeStart {
                return below.value
            }
            return holesByAddress.firstFit(after: rangeStart, inclusive: false, weight: size)?.value
        case .high:
            return holesByAddress.lastFit(before: rangeEnd, inclusive: false, weight: size)?.value
        case .evict:
            return stackHead >= 0 ? stackHead : nil
        default:
            return holesBySize.first(after: SizeKey(size: size, age: 0))?.value
        }
    }

    /// The hole a mode tries after `id` (`next_hole`).
    private func nextHole(_ id: Int32, _ size: UInt64, _ mode: Mode) -> Int32? {
        switch mode {
        case .low: return holesByAddress.firstFit(after: holeStart(id), inclusive: false, weight: size)?.value
        case .high: return holesByAddress.lastFit(before: holeStart(id), inclusive: false, weight: size)?.value
        case .evict:
            let next = entries[Int(id)].stackNext
            return next >= 0 ? next : nil
        default: return holesBySize.first(after: sizeKey(id), inclusive: false)?.value
        }
    }

    /// Links a new node into the hole after `hole`.
    private func place(after hole: Int32, start: UInt64, size: UInt64, color: UInt64, site: Site) -> DrmMmNode {
        let hs = holeStart(hole), he = holeEnd(hole)
        let id: Int32
        if let reused = unusedIds.popLast() {
            id = reused
        } else {
            id = Int32(entries.count)
            entries.append(Entry())
            objects.append(nil)
        }
        let next = entries[Int(hole)].next
        entries[Int(id)] = Entry(start: start, size: size, color: color, prev: hole, next: next, allocated: true)
        removeHole(hole)
        entries[Int(hole)].next = id
        entries[Int(next)].prev = id
        nodesByStart.insert(start, id)
        nodeCount += 1
        if start > hs { addHole(hole) }
        if start &+ size < he { addHole(id) }
        let node = DrmMmNode(mm: self, id: id, site: site)
        objects[Int(id)] = node
        accounting?.track(node)
        return node
    }

    /// `drm_mm_reserve_node`: a node exactly at `[start, start + size)`;
    /// ENOSPC when that wraps, is empty, or is not inside one
    /// (color-adjusted) hole.
    public func reserve(start: UInt64, size: UInt64, color: UInt64 = 0, site: Site) throws -> DrmMmNode {
        try checkUsable("reserve_node")
        defer { processDeferred() }
        let (end, overflow) = start.addingReportingOverflow(size)
        guard !overflow, end > start else {
            throw KernelError(.ENOSPC, "reserve_node of \(size) bytes at 0x\(String(start, radix: 16)): empty or wraps")
        }
        guard let hole = holesByAddress.last(before: start)?.value else {
            throw KernelError(.ENOSPC, "reserve_node at 0x\(String(start, radix: 16)): no hole there")
        }
        let hs = holeStart(hole), he = hs &+ entries[Int(hole)].holeSize
        var adjStart = hs, adjEnd = he
        try adjust(hole, color, &adjStart, &adjEnd)
        guard adjStart <= start, adjEnd >= end else {
            throw KernelError(.ENOSPC, "reserve_node of [0x\(String(start, radix: 16)), 0x\(String(end, radix: 16))): not inside one hole")
        }
        return place(after: hole, start: start, size: size, color: color, site: site)
    }

    /// `drm_mm_remove_node`. From the collector, while the allocator cannot
    /// (a scan, a callback), it waits until it can.
    public func remove(_ node: DrmMmNode, byCollector: Bool = false) throws(KernelError) {
        guard node.mm === self, node.isAllocated else { return }
        if isTakenDown || busy || scanActive > 0 || entries[Int(node.id)].scanned {
            if byCollector {
                if !deferredRemovals.contains(where: { $0 === node }) { deferredRemovals.append(node) }
                return
            }
            if entries[Int(node.id)].scanned {
                throw .bug("remove of \(node), which is in an eviction scan: remove_block it first")
            }
            try checkUsable("remove_node")
        }
        unlink(node)
    }

    private func unlink(_ node: DrmMmNode) {
        let id = node.id, i = Int(id)
        let prev = entries[i].prev, next = entries[i].next
        removeHole(id)
        nodesByStart.remove(entries[i].start)
        entries[Int(prev)].next = next
        entries[Int(next)].prev = prev
        removeHole(prev)
        addHole(prev)
        entries[i].allocated = false
        objects[i] = nil
        unusedIds.append(id)
        nodeCount -= 1
        node.detach()
    }

    /// Removals the collector asked for while the allocator could not.
    func processDeferred() {
        guard !busy, scanActive == 0, !deferredRemovals.isEmpty else { return }
        let pending = deferredRemovals
        deferredRemovals = []
        for node in pending where node.isAllocated { unlink(node) }
    }

    /// `drm_mm_replace_node`: a new node object takes `old`'s place, color
    /// and hole; `old` is no longer allocated.
    public func replace(_ old: DrmMmNode, site: Site) throws(KernelError) -> DrmMmNode {
        try checkUsable("replace_node")
        guard old.mm === self, old.isAllocated else { throw .bug("replace_node of \(old), which is not allocated in \(self)") }
        let node = DrmMmNode(mm: self, id: old.id, site: site)
        node.tag = old.tag
        objects[Int(old.id)] = node
        accounting?.track(node)
        old.detach()
        return node
    }

    /// `drm_mm_takedown`: a bug unless clean (`show_leaks` lists the nodes).
    public func takedown() throws(KernelError) {
        try checkUsable("takedown")
        guard nodeCount == 0 else {
            let nodes = self.nodes().prefix(8).map(\.description).joined(separator: ", ")
            throw .bug("drm_mm_takedown: memory manager not clean during takedown: \(nodeCount) node(s) left: \(nodes)\(nodeCount > 8 ? ", ..." : "")")
        }
        isTakenDown = true
    }

    // MARK: Queries

    /// `drm_mm_clean`.
    public var isClean: Bool { nodeCount == 0 }

    /// Allocated nodes in address order (`drm_mm_for_each_node`).
    public func nodes() -> [DrmMmNode] {
        var out: [DrmMmNode] = []
        var id = entries[0].next
        while id != 0 {
            if let node = object(id) { out.append(node) }
            id = entries[Int(id)].next
        }
        return out
    }

    /// Holes in address order: `(start, size)`.
    public func holes() -> [(start: UInt64, size: UInt64)] {
        var out: [(UInt64, UInt64)] = []
        var id: Int32 = 0
        repeat {
            if entries[Int(id)].holeSize > 0 { out.append((holeStart(id), entries[Int(id)].holeSize)) }
            id = entries[Int(id)].next
        } while id != 0
        return out
    }

    /// The largest hole: `(start, size)`, or nil when full.
    public var largestHole: (start: UInt64, size: UInt64)? {
        holesBySize.last.map { (holeStart($0.value), $0.key.size) }
    }

    /// Free bytes: the holes' total.
    public var freeSpace: UInt64 {
        var total: UInt64 = 0
        holesBySize.forEach { key, _ in total &+= key.size }
        return total
    }

    public var holeCount: Int { holesBySize.count }

    /// The allocated node after `node` in address order.
    public func nextNode(_ node: DrmMmNode) -> DrmMmNode? {
        guard node.isAllocated else { return nil }
        return object(entries[Int(node.id)].next)
    }

    /// `__drm_mm_interval_first`: the lowest node overlapping `[start, last]`.
    public func intervalFirst(_ start: UInt64, _ last: UInt64) -> DrmMmNode? {
        if let below = nodesByStart.last(before: start),
           start - entries[Int(below.value)].start < entries[Int(below.value)].size {
            return object(below.value)
        }
        guard let above = nodesByStart.first(after: start, inclusive: false), above.key <= last else { return nil }
        return object(above.value)
    }

    /// `drm_mm_print`: each hole and node, then the totals.
    public func print() -> String {
        func hex(_ v: UInt64) -> String {
            let digits = String(v, radix: 16)
            return "0x" + String(repeating: "0", count: max(0, 16 - digits.count)) + digits
        }
        var lines: [String] = []
        var used: UInt64 = 0, free: UInt64 = 0
        var id: Int32 = 0
        repeat {
            if id != 0 {
                let e = entries[Int(id)]
                lines.append("\(hex(e.start))-\(hex(e.start &+ e.size)): \(e.size): used")
                used &+= e.size
            }
            let hole = entries[Int(id)].holeSize
            if hole > 0 {
                lines.append("\(hex(holeStart(id)))-\(hex(holeStart(id) &+ hole)): \(hole): free")
                free &+= hole
            }
            id = entries[Int(id)].next
        } while id != 0
        lines.append("total: \(used &+ free), used \(used) free \(free)")
        return lines.joined(separator: "\n")
    }

    /// Checks the invariants (for tests and `kernel.debug.check`).
    public func validate() -> Bool {
        guard scanActive == 0, holesBySize.validate(), holesByAddress.validate(), nodesByStart.validate() else {
            return scanActive > 0
        }
        var id: Int32 = 0, holes = 0, nodes = 0
        repeat {
            let e = entries[Int(id)]
            let gap = holeEnd(id) &- holeStart(id)
            if gap != e.holeSize { return false }
            if e.holeSize > 0 { holes += 1 }
            if id != 0 { nodes += 1 }
            if entries[Int(e.next)].prev != id { return false }
            id = e.next
        } while id != 0
        return holes == holesBySize.count && holes == holesByAddress.count && nodes == nodeCount
            && nodes == nodesByStart.count
    }
}

/// A node of a drm_mm (`struct drm_mm_node`). It keeps its allocator alive;
/// dropping it removes it.
public final class DrmMmNode: NativeObject {
    public let mm: DrmMm
    let id: Int32
    public private(set) var isAllocated = true
    /// The embedder's data for this node (the engine keeps a Lua reference here).
    public var tag: Int32?

    init(mm: DrmMm, id: Int32, site: Site) {
        self.mm = mm
        self.id = id
        super.init(site: site)
    }

    override public var typeName: String { "Node" }
    override public var description: String {
        guard isAllocated else { return "Node{removed}" }
        return "Node{start=0x\(String(start, radix: 16)), size=0x\(String(size, radix: 16)), color=\(color)}"
    }

    public var start: UInt64 { mm.entries[Int(id)].start }
    public var size: UInt64 { mm.entries[Int(id)].size }
    public var color: UInt64 { mm.entries[Int(id)].color }
    /// `drm_mm_hole_follows`.
    public var holeFollows: Bool { isAllocated && mm.entries[Int(id)].holeSize > 0 }

    /// No longer in the allocator (removed, or replaced).
    func detach() {
        isAllocated = false
        mm.accounting?.untrack(self)
    }

    /// Use after removal is a bug, as the kernel's `DRM_MM_BUG_ON(!drm_mm_node_allocated(node))`.
    public func checkAllocated() throws(KernelError) {
        guard isAllocated else { throw .bug("use of a drm_mm node after it was removed") }
    }
}
