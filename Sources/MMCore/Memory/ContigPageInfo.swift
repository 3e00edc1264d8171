/// What mm/vmstat.c's `fill_contig_page_info` counts of a zone's free
/// areas for an order, and the two indexes debugfs prints from it:
/// `extfrag_index` (`__fragmentation_index`) and `unusable_index`
/// (`unusable_free_index`). Pages on the per-CPU lists are not in the
/// free areas, as in the kernel.
public struct ContigPageInfo: Equatable, Sendable {
    public var freePages: UInt64 = 0
    public var freeBlocksTotal: UInt64 = 0
    /// Free blocks of `suitableOrder` the free areas could give.
    public var freeBlocksSuitable: UInt64 = 0

    /// `fill_contig_page_info` over the free blocks per order (`nr_free`).
    public init(nrFree: [Int], suitableOrder: Int) {
        for (order, n) in nrFree.enumerated() {
            let blocks = UInt64(n)
            freeBlocksTotal += blocks
            freePages += blocks << UInt64(order)
            if order >= suitableOrder { freeBlocksSuitable += blocks << UInt64(order - suitableOrder) }
        }
    }

    public init(_ zone: Zone, suitableOrder: Int) {
        self.init(nrFree: (0...MAX_ORDER).map(zone.nrFree), suitableOrder: suitableOrder)
    }

    /// `__fragmentation_index`, in thousandths: -1000 when a block of
    /// `order` is free (the index only means something when the request
    /// would fail); toward 0 the failure is a lack of memory, toward 1000
    /// fragmentation.
    public func fragmentationIndex(_ order: Int) -> Int {
        guard (0...MAX_ORDER).contains(order), freeBlocksTotal > 0 else { return 0 }
        if freeBlocksSuitable > 0 { return -1000 }
        let requested = UInt64(1) << UInt64(order)
        return 1000 - Int((1000 + freePages * 1000 / requested) / freeBlocksTotal)
    }

    /// `unusable_free_index`, in thousandths: how much of the free memory
    /// cannot serve a request of `order` (1000 with nothing free).
    public func unusableFreeIndex(_ order: Int) -> Int {
        guard freePages > 0 else { return 1000 }
        return Int((freePages - (freeBlocksSuitable << UInt64(order))) * 1000 / freePages)
    }
}
