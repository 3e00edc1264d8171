/// An eviction scan (`struct drm_mm_scan`): the driver adds nodes it could
/// evict (walking its LRU) until a hole for the wanted allocation appears,
/// then removes every added node in reverse order; those `removeBlock`
/// reports as overlapping the hole are the ones to evict. While blocks are
/// added, the allocator's node list lacks them and nothing else may run.
public final class DrmMmScan: NativeObject {
    public let mm: DrmMm
    public let size: UInt64
    public let alignment: UInt64
    public let color: UInt64
    public let rangeStart: UInt64
    public let rangeEnd: UInt64
    public let mode: DrmMm.Mode
    let remainderMask: UInt64
    public private(set) var hitStart: UInt64 = .max
    public private(set) var hitEnd: UInt64 = 0
    /// Blocks added and not yet removed.
    public private(set) var blocks = 0
    public private(set) var isClosed = false

    /// `drm_mm_scan_init_with_range`: bugs for an empty range, a size of 0
    /// or larger than the range, and a scan with blocks added on `mm`
    /// (`mm->scan_active`). Every insert mode is accepted, and kept as given:
    /// `drm_mm_scan_add_block` takes the top of the hole only when it is
    /// exactly DRM_MM_INSERT_HIGH, so "highest" (HIGH | ONCE) scans as
    /// "low" does (6.12 and the current kernel alike; the oracle checks).
    public init(mm: DrmMm, size: UInt64, alignment: UInt64 = 0, color: UInt64 = 0, rangeStart: UInt64 = 0,
                rangeEnd: UInt64 = .max, mode: DrmMm.Mode = .low, site: Site) throws(KernelError) {
        try mm.checkUsable("scan")
        guard rangeStart < rangeEnd else { throw .bug("scan with range_start 0x\(String(rangeStart, radix: 16)) not below range_end 0x\(String(rangeEnd, radix: 16))") }
        guard size > 0, size <= rangeEnd - rangeStart else { throw .bug("scan for \(size) bytes: empty, or larger than the range") }
        self.mm = mm
        self.size = size
        let alignment = alignment <= 1 ? 0 : alignment
        self.alignment = alignment
        remainderMask = alignment.nonzeroBitCount == 1 ? alignment - 1 : 0
        self.color = color
        self.rangeStart = rangeStart
        self.rangeEnd = rangeEnd
        self.mode = mode
        super.init(site: site)
        mm.accounting?.track(self)
    }

    override public var typeName: String { "Scan" }
    override public var description: String {
        "Scan{size=0x\(String(size, radix: 16)), blocks=\(blocks)" + (hitEnd > hitStart ? ", hit=0x\(String(hitStart, radix: 16))-0x\(String(hitEnd, radix: 16))}" : "}")
    }

    private func checkNode(_ node: DrmMmNode, _ what: String) throws(KernelError) {
        guard !isClosed else { throw .bug("\(what) on a closed \(self)") }
        guard node.mm === mm else { throw .bug("\(what) of \(node), which belongs to another allocator") }
        guard node.isAllocated else { throw .bug("\(what) of a removed node") }
    }

    /// `drm_mm_scan_add_block`: true once a hole fits.
    public func addBlock(_ node: DrmMmNode) throws -> Bool {
        try checkNode(node, "add_block")
        let id = node.id
        guard !mm.entries[Int(id)].scanned else { throw KernelError.bug("add_block of \(node), which the scan has already") }
        guard !mm.busy else { throw KernelError.bug("add_block from \(mm)'s own color_adjust callback") }
        mm.entries[Int(id)].scanned = true
        mm.scanActive += 1
        blocks += 1
        // Unlink the node, keeping its own links to put it back.
        let hole = mm.entries[Int(id)].prev, next = mm.entries[Int(id)].next
        mm.entries[Int(hole)].next = next
        mm.entries[Int(next)].prev = hole

        let hs = mm.holeStart(hole), he = mm.holeEnd(hole)
        var colStart = hs, colEnd = he
        try mm.adjust(hole, color, &colStart, &colEnd)
        guard let adjStart = DrmMm.fit(size, colStart, colEnd, range: rangeStart, rangeEnd,
                                       alignment: alignment, remainderMask: remainderMask, high: mode == .high) else {
            return false
        }
        // DRM_MM_BUG_ON: the hit lies in the hole (a color_adjust that
        // wrapped around 2^64 can break this, and the kernel BUG()s).
        let end = adjStart &+ size
        guard adjStart < end, adjStart >= hs, end <= he else {
            throw KernelError.bug("drm_mm_scan_add_block: the hit [0x\(String(adjStart, radix: 16)), 0x\(String(end, radix: 16))) is not inside the hole [0x\(String(hs, radix: 16)), 0x\(String(he, radix: 16))): the color_adjust moved it out")
        }
        hitStart = adjStart
        hitEnd = end
        return true
    }

    /// `drm_mm_scan_remove_block`: true if the node must be evicted for the
    /// hole found. Blocks must come out in the reverse order of adding.
    public func removeBlock(_ node: DrmMmNode) throws(KernelError) -> Bool {
        try checkNode(node, "remove_block")
        let id = node.id
        guard mm.entries[Int(id)].scanned else { throw .bug("remove_block of \(node), which was not added to the scan") }
        let prev = mm.entries[Int(id)].prev, next = mm.entries[Int(id)].next
        guard mm.entries[Int(prev)].next == next else {
            throw .bug("remove_block of \(node) out of order: blocks must be removed in the reverse order they were added")
        }
        mm.entries[Int(id)].scanned = false
        mm.scanActive -= 1
        blocks -= 1
        mm.entries[Int(prev)].next = id
        mm.entries[Int(next)].prev = id
        if mm.scanActive == 0 { mm.processDeferred() }
        return node.start &+ node.size > hitStart && node.start < hitEnd
    }

    /// `drm_mm_scan_color_evict`: after the eviction, a neighbour whose
    /// color still keeps the hole short, or nil; always nil without a
    /// color_adjust. With one, the hole found must be there: calling it
    /// before the blocks were removed from the scan and the nodes to evict
    /// evicted is a bug (`DRM_MM_BUG_ON`).
    public func colorEvict() throws -> DrmMmNode? {
        guard !isClosed else { throw KernelError.bug("color_evict on a closed \(self)") }
        guard mm.colorAdjust != nil else { return nil }
        guard mm.scanActive == 0 else { throw KernelError.bug("color_evict with \(mm.scanActive) block(s) still added to the scan") }
        var id = mm.stackHead
        while id >= 0 {
            let hs = mm.holeStart(id), he = hs &+ mm.entries[Int(id)].holeSize
            if hs <= hitStart, he >= hitEnd {
                var adjStart = hs, adjEnd = he
                try mm.adjust(id, color, &adjStart, &adjEnd)
                if adjStart > hitStart { return mm.object(id) }
                if adjEnd < hitEnd { return mm.object(mm.entries[Int(id)].next) }
                return nil
            }
            id = mm.entries[Int(id)].stackNext
        }
        throw KernelError.bug("color_evict found no hole covering the scan's hit [0x\(String(hitStart, radix: 16)), 0x\(String(hitEnd, radix: 16))): evict the nodes remove_block chose first")
    }

    /// Ends the scan (its handle dropped): a bug while blocks are added,
    /// unless the collector does it, which puts them back.
    public func close(byCollector: Bool = false) throws(KernelError) {
        guard !isClosed else { return }
        if blocks > 0, !byCollector {
            throw .bug("\(self) dropped with \(blocks) block(s) still added: remove_block each, in reverse order")
        }
        if blocks > 0 { restore() }
        isClosed = true
        mm.accounting?.untrack(self)
        mm.processDeferred()
    }

    /// Puts every added node back (the collector ended the scan): the last
    /// added is always one whose neighbours now point at each other.
    private func restore() {
        while blocks > 0 {
            guard let last = (0..<mm.used).first(where: { i in
                let e = mm.entries[i]
                return e.scanned && mm.entries[Int(e.prev)].next == e.next && mm.entries[Int(e.next)].prev == e.prev
            }) else { return }
            let e = mm.entries[last]
            mm.entries[last].scanned = false
            mm.entries[Int(e.prev)].next = Int32(last)
            mm.entries[Int(e.next)].prev = Int32(last)
            mm.scanActive -= 1
            blocks -= 1
        }
    }
}
