/// Physical memory frame by frame, summarised (what /proc/kpageflags and
/// page_owner show a frame at a time): for each of `cells` equal slices of
/// the physical address range, how many frames are free, allocated (and
/// the largest allocation order among them), reserved, or not RAM at all.
public struct FrameMap: Sendable {
    public struct Cell: Sendable, Equatable {
        public var free = 0
        public var allocated = 0
        public var reserved = 0
        /// MMIO and holes: no `struct page`.
        public var absent = 0
        /// The largest order of an allocation in the cell (-1: none).
        public var maxOrder = -1
        /// RAM frames in Unmovable, Movable, Reclaimable and HighAtomic pageblocks.
        public var unmovable = 0, movable = 0, reclaimable = 0, highatomic = 0

        /// The migratetype of most of its pageblocks' frames, if it has RAM.
        public var pageblockType: MigrateType? {
            let most = max(unmovable, movable, reclaimable, highatomic)
            guard most > 0 else { return nil }
            return most == unmovable ? .unmovable : most == movable ? .movable : most == reclaimable ? .reclaimable : .highatomic
        }
    }

    /// The first frame the map covers, and how many frames each cell holds.
    public let firstPfn: UInt64
    public let framesPerCell: UInt64
    public var cells: [Cell]
    public let regions: [MemoryRegion]
}

extension PageAllocator {
    /// The frame map of physical memory (or of the frames in `range`) in at
    /// most `cells` cells. Sections never touched are free RAM without
    /// looking at them.
    public func frameMap(cells wanted: Int, range: Range<UInt64>? = nil) -> FrameMap {
        let all = memory.regions
        let first = range?.lowerBound ?? all.first?.startPfn.rawValue ?? 0
        let last = max(first, range?.upperBound ?? all.last?.endPfn.rawValue ?? first)
        // The regions, clipped to the frames shown.
        let regions = all.compactMap { r -> MemoryRegion? in
            let s = max(r.startPfn.rawValue, first), e = min(r.endPfn.rawValue, last)
            guard s < e else { return nil }
            return MemoryRegion(start: Pfn(s).phys, size: (e - s) << UInt64(PAGE_SHIFT), kind: r.kind)
        }
        let frames = max(1, last - first)
        let perCell = max(1, (frames + UInt64(max(1, wanted)) - 1) / UInt64(max(1, wanted)))
        let count = Int((frames + perCell - 1) / perCell)
        var map = FrameMap(firstPfn: first, framesPerCell: perCell, cells: Array(repeating: FrameMap.Cell(), count: count),
                           regions: regions)

        /// Adds `n` frames from `pfn` to the cells they fall in.
        func add(_ pfn: UInt64, _ n: UInt64, _ update: (inout FrameMap.Cell, Int) -> Void) {
            var at = pfn, left = n
            while left > 0 {
                let cell = Int((at - first) / perCell)
                let inCell = min(left, perCell - (at - first) % perCell)
                update(&map.cells[cell], Int(inCell))
                at += inCell
                left -= inCell
            }
        }

        var cursor = first
        for region in regions {
            let start = region.startPfn.rawValue, end = region.endPfn.rawValue
            if start > cursor { add(cursor, start - cursor) { $0.absent += $1 } }  // a hole
            cursor = end
            switch region.kind {
            case .mmio: add(start, end - start) { $0.absent += $1 }
            case .reserved: add(start, end - start) { $0.reserved += $1 }
            case .ram:
                var block = start
                while block < end {  // each pageblock's type
                    let next = min(end, (block | (PAGEBLOCK_PAGES - 1)) + 1)
                    switch blockType(block) {
                    case .unmovable: add(block, next - block) { $0.unmovable += $1 }
                    case .movable: add(block, next - block) { $0.movable += $1 }
                    case .reclaimable: add(block, next - block) { $0.reclaimable += $1 }
                    case .highatomic: add(block, next - block) { $0.highatomic += $1 }
                    }
                    block = next
                }
                var pfn = start
                while pfn < end {
                    guard let page = memory.existingPage(Pfn(pfn)) else {
                        // An untouched section: every frame is free.
                        let sectionEnd = min(end, (pfn >> UInt64(sectionShift) + 1) << UInt64(sectionShift))
                        add(pfn, sectionEnd - pfn) { $0.free += $1 }
                        pfn = sectionEnd
                        continue
                    }
                    let p = page.pointee
                    if p.has(StructPage.Flag.buddy) {
                        let n = min(UInt64(1) << UInt64(p.order), end - pfn)
                        add(pfn, n) { $0.free += $1 }
                        pfn += n
                    } else if p.has(StructPage.Flag.head) {
                        let n = min(UInt64(1) << UInt64(p.order), end - pfn)
                        let order = Int(p.order)
                        add(pfn, n) { cell, k in
                            cell.allocated += k
                            cell.maxOrder = max(cell.maxOrder, order)
                        }
                        pfn += n
                    } else if p.has(StructPage.Flag.allocated) {
                        add(pfn, 1) { $0.allocated += $1 }
                        pfn += 1
                    } else {
                        add(pfn, 1) { $0.free += $1 }  // pristine, or on a per-CPU list
                        pfn += 1
                    }
                }
            }
        }
        if cursor < last { add(cursor, last - cursor) { $0.absent += $1 } }  // past the last region
        return map
    }
}
