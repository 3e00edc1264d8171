/// The DRM range allocator (`struct drm_mm`, drivers/gpu/drm/drm_mm.c):
/// nodes placed in `[start, start + size)` with alignment, colors and
/// range limits, and the eviction scan (DrmMmScan.swift).
///
/// Laid out as the kernel's: one entry per node, which embeds its links in
/// the node list, the hole stack and three red-black trees (Rbtree.swift):
/// the interval tree of nodes by start (augmented with the subtree's last
/// byte), holes by size (largest first, of equal sizes the oldest first)
/// and holes by address (augmented with the subtree's largest hole). The
/// trees are rebalanced as lib/rbtree.c rebalances them, so they have the
/// kernel's shapes, which `find_hole_addr` (and with it the "lowest" and
/// "highest" modes, and `reserve_node`) depends on: every placement is the
/// kernel's. An oracle test runs the kernel's own drm_mm.c beside it.
///
/// As in the kernel, the allocator keeps a head node standing for the
/// space before the first node: its "start" is the end of the range and
/// its "size" the range's size negated, so that the hole after it begins
/// at the range's start. A node's hole runs from its end to the start of
/// the node after it. All arithmetic is unsigned and wraps as the kernel's.
///
/// # Invariants
///
/// Entries (the head, id 0, included) form a circular list in address
/// order. An entry has a hole after it exactly when `holeSize > 0`; such
/// holes are in both hole trees and on the hole stack (newest first), and
/// nowhere else. Allocated nodes are in the interval tree. While
/// `scanActive > 0` the list lacks the scanned nodes and the hole indexes
/// are stale.
public final class DrmMm: NativeObject {
    /// One node's bookkeeping (`struct drm_mm_node`), by id; id 0 is the head.
    struct Entry {
        var start: UInt64 = 0
        var size: UInt64 = 0
        var color: UInt64 = 0
        var holeSize: UInt64 = 0
        /// The largest hole in its subtree of the address tree (`subtree_max_hole`).
        var subtreeMaxHole: UInt64 = 0
        /// The last byte of any node in its subtree of the interval tree (`__subtree_last`).
        var subtreeLast: UInt64 = 0
        /// `node_list`.
        var prev: Int32 = 0
        var next: Int32 = 0
        /// `hole_stack`, newest first.
        var stackPrev: Int32 = -1
        var stackNext: Int32 = -1
        var rbInterval = RBNode()
        var rbHoleSize = RBNode()
        var rbHoleAddr = RBNode()
        var allocated = false
        var scanned = false
        /// The node object of an allocated entry, retained: nodes and their
        /// allocator keep each other alive until the node is removed, as an
        /// embedded `drm_mm_node` must be removed before it goes.
        var object: Unmanaged<DrmMmNode>?
    }

    /// The holes-by-size tree: no augmentation.
    enum HoleSizeTree: RBAugment {
        static var linksOffset: Int { 80 }
        @inline(__always)
        static func update(_ entries: UnsafeMutablePointer<Entry>, _ n: Int32, left: Int32, right: Int32) -> Bool { false }
        @inline(__always)
        static func copy(_ entries: UnsafeMutablePointer<Entry>, _ from: Int32, to: Int32) {}
    }

    /// `subtree_max_hole` of the holes-by-address tree (`RB_DECLARE_CALLBACKS_MAX`).
    enum HoleAddrTree: RBAugment {
        static var linksOffset: Int { 96 }

        @inline(__always)
        static func update(_ entries: UnsafeMutablePointer<Entry>, _ n: Int32, left: Int32, right: Int32) -> Bool {
            // SAFETY: ids in the tree index live entries (RBTree's invariant).
            var m = entries[Int(n)].holeSize
            if left >= 0 { m = max(m, entries[Int(left)].subtreeMaxHole) }
            if right >= 0 { m = max(m, entries[Int(right)].subtreeMaxHole) }
            if entries[Int(n)].subtreeMaxHole == m { return false }
            entries[Int(n)].subtreeMaxHole = m
            return true
        }

        @inline(__always)
        static func copy(_ entries: UnsafeMutablePointer<Entry>, _ from: Int32, to: Int32) {
            // SAFETY: as update.
            entries[Int(to)].subtreeMaxHole = entries[Int(from)].subtreeMaxHole
        }
    }

    /// `__subtree_last` of the interval tree (`INTERVAL_TREE_DEFINE`).
    enum IntervalTree: RBAugment {
        static var linksOffset: Int { 64 }

        @inline(__always)
        static func update(_ entries: UnsafeMutablePointer<Entry>, _ n: Int32, left: Int32, right: Int32) -> Bool {
            // SAFETY: ids in the tree index live entries (RBTree's invariant).
            var m = DrmMm.last(entries[Int(n)])
            if left >= 0 { m = max(m, entries[Int(left)].subtreeLast) }
            if right >= 0 { m = max(m, entries[Int(right)].subtreeLast) }
            if entries[Int(n)].subtreeLast == m { return false }
            entries[Int(n)].subtreeLast = m
            return true
        }

        @inline(__always)
        static func copy(_ entries: UnsafeMutablePointer<Entry>, _ from: Int32, to: Int32) {
            // SAFETY: as update.
            entries[Int(to)].subtreeLast = entries[Int(from)].subtreeLast
        }
    }

    /// An entry's links in the tree `A` (the entry's own pointer in hand,
    /// walking down: one address computation per step).
    @inline(__always)
    static func links<A: RBAugment>(_ e: UnsafeMutablePointer<Entry>, _: A.Type) -> UnsafeMutablePointer<RBNode> {
        // SAFETY: `linksOffset` is the offset of an RBNode field of Entry (checked in init).
        (UnsafeMutableRawPointer(e) + A.linksOffset).assumingMemoryBound(to: RBNode.self)
    }

    /// `LAST(node)`.
    @inline(__always) static func last(_ e: Entry) -> UInt64 { e.start &+ e.size &- 1 }

    public let start: UInt64
    public let size: UInt64
    // The pool and trees are changed only by this class and DrmMmScan,
    // which call nothing outside them meanwhile (but `colorAdjust`, which
    // `busy` keeps from changing anything): no dynamic exclusivity checks.
    // SAFETY: every subscript of `entries` in this file and DrmMmScan is an
    // id below `used` (the head, or an id from the lists, trees or a node),
    // and entries below `used` are initialized; the pool moves only in `newId`.
    @exclusivity(unchecked) private(set) var entries: UnsafeMutablePointer<Entry>
    @exclusivity(unchecked) private var capacity: Int
    /// Entries initialized, ids `0 ..< used`.
    @exclusivity(unchecked) private(set) var used = 1
    @exclusivity(unchecked) private var unusedIds: [Int32] = []
    let accounting: Accounting?
    @exclusivity(unchecked) private var intervalTree: RBTree<IntervalTree>
    @exclusivity(unchecked) private var holesSize: RBTree<HoleSizeTree>
    /// `holes_size`'s cached leftmost: the largest hole.
    @exclusivity(unchecked) private var largestHoleId: Int32 = -1
    @exclusivity(unchecked) private var holesAddr: RBTree<HoleAddrTree>
    @exclusivity(unchecked) var stackHead: Int32 = -1
    @exclusivity(unchecked) public private(set) var nodeCount = 0
    @exclusivity(unchecked) public private(set) var holeCount = 0

    /// `color_adjust(node before the hole or nil, color, &start, &end)`.
    @exclusivity(unchecked) public var colorAdjust: ((DrmMmNode?, UInt64, inout UInt64, inout UInt64) throws -> Void)?
    /// Blocks added to an eviction scan and not yet removed (`scan_active`).
    @exclusivity(unchecked) public internal(set) var scanActive = 0
    /// Inside an operation that runs `colorAdjust`: no other may start.
    @exclusivity(unchecked) var busy = false
    /// Nodes the collector dropped while the allocator could not take them
    /// out (a scan, a callback): removed once it can.
    @exclusivity(unchecked) var deferredRemovals: [DrmMmNode] = []
    @exclusivity(unchecked) public private(set) var isTakenDown = false

    /// `drm_mm_init`: EINVAL unless `start + size` stays within 2^64 − 1.
    /// Nodes are tracked in `accounting`, if given.
    public init(start: UInt64, size: UInt64, accounting: Accounting? = nil, site: Site) throws(KernelError) {
        let (end, overflow) = start.addingReportingOverflow(size)
        guard size > 0, !overflow, end != 0 else {
            throw KernelError(.EINVAL, "drm_mm of \(size) bytes at 0x\(String(start, radix: 16)): the range must be non-empty and end within 2^64 - 1")
        }
        // The trees' link offsets are constants, so that walking them loads
        // nothing more: they must be the layout's.
        guard MemoryLayout<Entry>.offset(of: \Entry.rbInterval) == IntervalTree.linksOffset,
              MemoryLayout<Entry>.offset(of: \Entry.rbHoleSize) == HoleSizeTree.linksOffset,
              MemoryLayout<Entry>.offset(of: \Entry.rbHoleAddr) == HoleAddrTree.linksOffset else {
            throw .bug("drm_mm: the node layout moved its tree links")
        }
        self.start = start
        self.size = size
        self.accounting = accounting
        capacity = 16
        entries = .allocate(capacity: capacity)
        entries.initialize(to: Entry(start: end, size: 0 &- size))
        intervalTree = RBTree(entries: entries)
        holesSize = RBTree(entries: entries)
        holesAddr = RBTree(entries: entries)
        super.init(site: site)
        addHole(0)
        accounting?.track(self)
    }

    deinit {
        // Allocated nodes hold the allocator, so none is left here.
        // SAFETY: `used` entries were initialized; the pool is ours.
        entries.deinitialize(count: used)
        entries.deallocate()
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

    /// A fresh entry id for a new node, the pool grown if needed.
    private func newId() -> Int32 {
        if let id = unusedIds.popLast() { return id }
        if used == capacity {
            let bigger = UnsafeMutablePointer<Entry>.allocate(capacity: capacity * 2)
            // SAFETY: both hold at least `used` entries; the old pool is moved out of and freed.
            bigger.moveInitialize(from: entries, count: used)
            entries.deallocate()
            entries = bigger
            capacity *= 2
            intervalTree.entries = bigger
            holesSize.entries = bigger
            holesAddr.entries = bigger
        }
        // SAFETY: `used < capacity`: the slot is allocated, not yet initialized.
        (entries + used).initialize(to: Entry())
        used += 1
        return Int32(used - 1)
    }

    // MARK: Holes

    @inline(__always) func holeStart(_ id: Int32) -> UInt64 { entries[Int(id)].start &+ entries[Int(id)].size }
    @inline(__always) func holeEnd(_ id: Int32) -> UInt64 { entries[Int(entries[Int(id)].next)].start }

    /// `add_hole`: the space after `id` becomes a hole, the newest.
    private func addHole(_ id: Int32) {
        let i = Int(id)
        let size = holeEnd(id) &- holeStart(id)
        guard size > 0 else { return }
        entries[i].holeSize = size
        entries[i].subtreeMaxHole = size
        insertHoleSize(id)
        insertHoleAddr(id)
        entries[i].stackPrev = -1
        entries[i].stackNext = stackHead
        if stackHead >= 0 { entries[Int(stackHead)].stackPrev = id }
        stackHead = id
        holeCount += 1
    }

    /// `insert_hole_size`: larger holes to the left, an equal one to the
    /// right of those there already.
    private func insertHoleSize(_ id: Int32) {
        let entries = self.entries, x = entries[Int(id)].holeSize
        var n = holesSize.root, parent: Int32 = -1, isLeft = false, first = true
        while n >= 0 {
            parent = n
            let e = entries + Int(n), l = DrmMm.links(e, HoleSizeTree.self)
            isLeft = x > e.pointee.holeSize
            if isLeft { n = l.pointee.left } else {
                first = false
                n = l.pointee.right
            }
        }
        holesSize.insert(id, parent: parent, left: isLeft)
        if first { largestHoleId = id }
    }

    /// `insert_hole_addr`: by the hole's start, the subtree maxima raised
    /// on the way down.
    private func insertHoleAddr(_ id: Int32) {
        let entries = self.entries
        let start = holeStart(id), max = entries[Int(id)].subtreeMaxHole
        var n = holesAddr.root, parent: Int32 = -1, isLeft = false
        while n >= 0 {
            parent = n
            let e = entries + Int(n), l = DrmMm.links(e, HoleAddrTree.self)
            if e.pointee.subtreeMaxHole < max { e.pointee.subtreeMaxHole = max }
            isLeft = start < e.pointee.start &+ e.pointee.size
            n = isLeft ? l.pointee.left : l.pointee.right
        }
        holesAddr.insert(id, parent: parent, left: isLeft)
    }

    /// `rm_hole`.
    private func removeHole(_ id: Int32) {
        let i = Int(id)
        guard entries[i].holeSize > 0 else { return }
        let prev = entries[i].stackPrev, next = entries[i].stackNext
        if prev >= 0 { entries[Int(prev)].stackNext = next } else { stackHead = next }
        if next >= 0 { entries[Int(next)].stackPrev = prev }
        if id == largestHoleId { largestHoleId = holesSize.links.next(id) }
        holesSize.erase(id)
        holesAddr.erase(id)
        entries[i].holeSize = 0
        entries[i].subtreeMaxHole = 0
        entries[i].stackPrev = -1
        entries[i].stackNext = -1
        holeCount -= 1
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
        guard id > 0, id < used else { return nil }
        // SAFETY: an entry holds a retain of its object from place to unlink.
        return entries[Int(id)].object?.takeUnretainedValue()
    }

    /// Runs `colorAdjust` for the hole after `id`, with the allocator busy.
    func adjust(_ id: Int32, _ color: UInt64, _ start: inout UInt64, _ end: inout UInt64) throws {
        guard let colorAdjust else { return }
        busy = true
        defer { busy = false }
        try colorAdjust(object(id), color, &start, &end)
    }

    // MARK: Finding holes

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

    /// `best_hole`: the smallest hole that fits, of equal ones the newest.
    private func bestHole(_ size: UInt64) -> Int32 {
        let entries = self.entries
        var n = holesSize.root, best: Int32 = -1
        while n >= 0 {
            let e = entries + Int(n), l = DrmMm.links(e, HoleSizeTree.self)
            if size <= e.pointee.holeSize {
                best = n
                n = l.pointee.right
            } else {
                n = l.pointee.left
            }
        }
        return best
    }

    @inline(__always) private func usable(_ n: Int32, _ size: UInt64) -> Bool {
        n >= 0 && entries[Int(n)].subtreeMaxHole >= size
    }

    /// `find_hole_addr`: walks down to the hole holding `addr` through
    /// subtrees that have a hole of `size`, and answers the last one it
    /// reached, which need not hold `addr`.
    private func findHoleAddr(_ addr: UInt64, _ size: UInt64) -> Int32 {
        let holesAddr = self.holesAddr.links
        var n = self.holesAddr.root, found: Int32 = -1
        while n >= 0 {
            guard usable(n, size) else { break }
            found = n
            let start = holeStart(n)
            if addr < start {
                n = holesAddr.left(n)
            } else if addr > start &+ entries[Int(n)].holeSize {
                n = holesAddr.right(n)
            } else {
                break
            }
        }
        return found
    }

    /// `next_hole_low_addr` (`toHigher`) and `next_hole_high_addr`: the next
    /// hole in address order whose subtree may fit `size`.
    private func nextHoleAddr(_ entry: Int32, _ size: UInt64, toHigher: Bool) -> Int32 {
        let t = holesAddr.links
        var n = entry
        let first = toHigher ? t.right(n) : t.left(n)
        if usable(first, size) {
            n = first
            while true {
                let last = toHigher ? t.left(n) : t.right(n)
                guard usable(last, size) else { break }
                n = last
            }
            return n
        }
        var parent = t.parent(n)
        while parent >= 0, n == (toHigher ? t.right(parent) : t.left(parent)) {
            n = parent
            parent = t.parent(n)
        }
        return parent
    }

    /// `first_hole`.
    private func firstHole(_ rangeStart: UInt64, _ rangeEnd: UInt64, _ size: UInt64, _ mode: Mode) -> Int32 {
        switch mode {
        case .low: findHoleAddr(rangeStart, size)
        case .high: findHoleAddr(rangeEnd, size)
        case .evict: stackHead
        default: bestHole(size)
        }
    }

    /// `next_hole`.
    private func nextHole(_ id: Int32, _ size: UInt64, _ mode: Mode) -> Int32 {
        switch mode {
        case .low: nextHoleAddr(id, size, toHigher: true)
        case .high: nextHoleAddr(id, size, toHigher: false)
        case .evict: entries[Int(id)].stackNext
        default: holesSize.links.prev(id)
        }
    }

    // MARK: Insert, reserve, remove

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
        guard largestHoleId >= 0, entries[Int(largestHoleId)].holeSize >= size else {
            throw KernelError(.ENOSPC, "insert_node of \(size) bytes: no hole is that large")
        }
        let alignment = alignment <= 1 ? 0 : alignment
        let remainderMask = alignment.nonzeroBitCount == 1 ? alignment - 1 : 0
        let base = mode.base
        var hole = firstHole(rangeStart, rangeEnd, size, base)
        while hole >= 0 {
            let hs = holeStart(hole), he = hs &+ entries[Int(hole)].holeSize
            if base == .low, hs >= rangeEnd { break }
            if base == .high, he <= rangeStart { break }
            var colStart = hs, colEnd = he
            try adjust(hole, color, &colStart, &colEnd)
            if let start = Self.fit(size, colStart, colEnd, range: rangeStart, rangeEnd, alignment: alignment,
                                    remainderMask: remainderMask, high: base == .high) {
                return place(after: hole, start: start, size: size, color: color, site: site)
            }
            hole = mode.once ? -1 : nextHole(hole, size, base)
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

    /// Links a new node into the hole after `hole` (`list_add`, the interval
    /// tree, then the holes on either side, as the kernel orders them).
    private func place(after hole: Int32, start: UInt64, size: UInt64, color: UInt64, site: Site) -> DrmMmNode {
        let hs = holeStart(hole), he = holeEnd(hole)
        let id = newId()
        let next = entries[Int(hole)].next
        entries[Int(id)] = Entry(start: start, size: size, color: color, prev: hole, next: next, allocated: true)
        entries[Int(hole)].next = id
        entries[Int(next)].prev = id
        insertInterval(id, after: hole)
        removeHole(hole)
        if start > hs { addHole(hole) }
        if start &+ size < he { addHole(id) }
        nodeCount += 1
        let node = DrmMmNode(mm: self, id: id, site: site)
        entries[Int(id)].object = Unmanaged.passRetained(node)
        accounting?.track(node)
        return node
    }

    /// `drm_mm_interval_tree_add_node`: the new node follows `hole` in
    /// address order, so, as the kernel, it goes in starting from there
    /// rather than from the root: up from `hole` raising the subtree
    /// maxima while they are lower, then down its right subtree.
    private func insertInterval(_ id: Int32, after hole: Int32) {
        let entries = self.entries, t = intervalTree.links
        let start = entries[Int(id)].start, last = DrmMm.last(entries[Int(id)])
        entries[Int(id)].subtreeLast = last
        var parent: Int32 = -1, n: Int32, isLeft = false
        if entries[Int(hole)].allocated {
            var up = hole
            while up >= 0, entries[Int(up)].subtreeLast < last {
                entries[Int(up)].subtreeLast = last
                up = t.parent(up)
            }
            parent = hole
            n = t.right(hole)
        } else {
            n = intervalTree.root
        }
        while n >= 0 {
            parent = n
            if entries[Int(n)].subtreeLast < last { entries[Int(n)].subtreeLast = last }
            isLeft = start < entries[Int(n)].start
            n = isLeft ? t.left(n) : t.right(n)
        }
        intervalTree.insert(id, parent: parent, left: isLeft)
    }

    /// `drm_mm_reserve_node`: a node exactly at `[start, start + size)`;
    /// ENOSPC when that wraps, is empty, or is not inside the
    /// (color-adjusted) hole `find_hole_addr` finds there.
    public func reserve(start: UInt64, size: UInt64, color: UInt64 = 0, site: Site) throws -> DrmMmNode {
        try checkUsable("reserve_node")
        defer { processDeferred() }
        let (end, overflow) = start.addingReportingOverflow(size)
        guard !overflow, end > start else {
            throw KernelError(.ENOSPC, "reserve_node of \(size) bytes at 0x\(String(start, radix: 16)): empty or wraps")
        }
        let hole = findHoleAddr(start, 0)
        guard hole >= 0 else {
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
        intervalTree.erase(id)
        entries[Int(prev)].next = next
        entries[Int(next)].prev = prev
        removeHole(prev)
        addHole(prev)
        entries[i].allocated = false
        let object = entries[i].object
        entries[i].object = nil
        defer { object?.release() }  // after the node is done with: it may be the last reference
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
        entries[Int(old.id)].object?.release()
        entries[Int(old.id)].object = Unmanaged.passRetained(node)
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

    /// The allocated node after `node` in address order, the first without
    /// one (`list_next_entry` of the head).
    public func node(after node: DrmMmNode?) -> DrmMmNode? {
        if let node { return nextNode(node) }
        return object(entries[0].next)
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

    /// Holes newest first (`drm_mm_for_each_hole`, the order "evict" tries).
    public func holeStack() -> [(start: UInt64, size: UInt64)] {
        var out: [(UInt64, UInt64)] = []
        var id = stackHead
        while id >= 0 {
            out.append((holeStart(id), entries[Int(id)].holeSize))
            id = entries[Int(id)].stackNext
        }
        return out
    }

    /// The largest hole (`rb_first_cached(&mm->holes_size)`): `(start, size)`, or nil when full.
    public var largestHole: (start: UInt64, size: UInt64)? {
        largestHoleId < 0 ? nil : (holeStart(largestHoleId), entries[Int(largestHoleId)].holeSize)
    }

    /// Free bytes: the holes' total.
    public var freeSpace: UInt64 { holes().reduce(0) { $0 &+ $1.size } }

    /// The allocated node after `node` in address order.
    public func nextNode(_ node: DrmMmNode) -> DrmMmNode? {
        guard node.isAllocated else { return nil }
        return object(entries[Int(node.id)].next)
    }

    /// The allocated node before `node` in address order (`list_prev_entry`).
    public func prevNode(_ node: DrmMmNode) -> DrmMmNode? {
        guard node.isAllocated else { return nil }
        return object(entries[Int(node.id)].prev)
    }

    /// `__drm_mm_interval_first`: the lowest node overlapping `[start, last]`.
    public func intervalFirst(_ start: UInt64, _ last: UInt64) -> DrmMmNode? {
        let t = intervalTree.links
        var n = intervalTree.root
        guard n >= 0, entries[Int(n)].subtreeLast >= start else { return nil }
        while true {
            let l = t.left(n)
            if l >= 0, entries[Int(l)].subtreeLast >= start {
                n = l
                continue
            }
            guard entries[Int(n)].start <= last else { return nil }
            if DrmMm.last(entries[Int(n)]) >= start { return object(n) }
            let r = t.right(n)
            guard r >= 0, entries[Int(r)].subtreeLast >= start else { return nil }
            n = r
        }
    }

    /// `drm_mm_print`: each hole and node, then the totals.
    public func print() -> String {
        func hex(_ v: UInt64) -> String { "0x" + hex16(v) }
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

    /// Checks the invariants (for tests and `kernel.debug.check`): the list,
    /// the holes and the three trees agree, and each tree is a red-black
    /// tree with the right augmented values.
    public func validate() -> Bool {
        guard scanActive == 0 else { return true }
        guard let intervals = intervalTree.validate(), let bySize = holesSize.validate(),
              let byAddress = holesAddr.validate() else { return false }
        var id: Int32 = 0, holes = 0, nodes = 0
        repeat {
            let e = entries[Int(id)]
            if holeEnd(id) &- holeStart(id) != e.holeSize { return false }
            if e.holeSize > 0 { holes += 1 }
            if id != 0 { nodes += 1 }
            if entries[Int(e.next)].prev != id || nodes > used { return false }
            id = e.next
        } while id != 0
        let largest = holesSize.first()
        return holes == holeCount && bySize == holes && byAddress == holes && nodes == nodeCount
            && intervals == nodes && largest == largestHoleId
    }
}

/// A node of a drm_mm (`struct drm_mm_node`). It keeps its allocator alive;
/// dropping it removes it.
public final class DrmMmNode: NativeObject {
    public let mm: DrmMm
    let id: Int32
    @exclusivity(unchecked) public private(set) var isAllocated = true
    /// The embedder's data for this node (the engine keeps a Lua reference here).
    @exclusivity(unchecked) public var tag: Int32?

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
