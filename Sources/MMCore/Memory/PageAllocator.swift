/// The page allocator: hands out the machine's RAM frames.
///
/// This first cut serves order-0 pages from a free stack, taking frames
/// never used before from a cursor so that boot touches nothing.
public final class PageAllocator {
    public let memory: PhysicalMemory
    /// RAM pages the allocator manages.
    public let totalPages: UInt64
    /// Pages free right now (`NR_FREE_PAGES`).
    public private(set) var freePages: UInt64

    private var freed: [Pfn] = []
    private var region = 0
    private var cursor: UInt64 = 0

    init(memory: PhysicalMemory) {
        self.memory = memory
        totalPages = memory.regions.filter { $0.kind == .ram }.reduce(0) { $0 + $1.pageCount }
        freePages = totalPages
    }

    /// Allocates `1 << order` contiguous frames (`alloc_pages`).
    public func allocPages(order: Int) throws(KernelError) -> Pfn {
        guard order == 0 else {
            throw KernelError(.EINVAL, "order \(order) is not supported by this allocator")
        }
        guard freePages > 0 else { throw KernelError(.ENOMEM, "out of memory: no free pages") }
        freePages -= 1
        if let pfn = freed.popLast() { return pfn }
        while memory.regions[region].kind != .ram || cursor == memory.regions[region].pageCount {
            region += 1
            cursor = 0
        }
        cursor += 1
        return memory.regions[region].startPfn + (cursor - 1)
    }

    /// Returns frames to the allocator (`__free_pages`).
    public func freePages(_ pfn: Pfn, order: Int) {
        freed.append(pfn)
        freePages += 1
    }
}
