/// Rust Binder's range allocator (drivers/android/binder/range_alloc/):
/// the buffers of one process's binder mmap. Every range is free, reserved
/// (a transaction is being written into it) or allocated (delivered, owned
/// by userspace until it frees it), and free ranges never touch.
///
/// Placement is best fit (the smallest free range that fits, then the
/// lowest offset), as the tree allocator's `(size, offset)` free tree
/// gives. Oneway (async) transactions may use half the space in total;
/// when they leave less than a tenth of the whole, the calling pid is
/// checked for spamming.
///
/// # Invariants
///
/// `ranges` tiles `[0, size)` without gaps; no two free ranges are
/// adjacent; `free` holds exactly the free ranges, keyed by
/// `(size, offset)`.
public final class RangeAllocator<Data>: CustomStringConvertible {
    public enum State: String, Sendable {
        case free, reserved, allocated
    }

    public struct Range {
        public let offset: Int
        public var size: Int
        public var state: State
        public var isOneway = false
        public var pid = 0
        var data: Data?
    }

    struct FreeKey: Comparable {
        let size: Int, offset: Int
        static func < (a: FreeKey, b: FreeKey) -> Bool { (a.size, a.offset) < (b.size, b.offset) }
    }

    /// Pages `[start, end)` that no range uses any more (`FreedRange`).
    public struct FreedRange: Equatable, Sendable {
        public var start: Int
        public var end: Int
    }

    public let size: Int
    // Changed only by this class's methods, which call nothing outside it
    // meanwhile: exclusivity holds by construction, and its dynamic checks
    // were a fifth of a new_buf.
    @exclusivity(unchecked) public private(set) var freeOnewaySpace: Int
    @exclusivity(unchecked) private var ranges = OrderedTree<Int, Range>()
    @exclusivity(unchecked) private var free = OrderedTree<FreeKey, Int>()
    /// Ranges reserved or allocated.
    @exclusivity(unchecked) public private(set) var buffers = 0

    /// A range allocator over `size` bytes.
    public init(size: Int) throws(KernelError) {
        guard size >= 0 else { throw KernelError(.EINVAL, "RangeAllocator of \(size) bytes") }
        self.size = size
        freeOnewaySpace = size / 2
        if size > 0 { addFree(offset: 0, size: size) }
    }

    public var description: String { "RangeAllocator{size=\(size), buffers=\(buffers)}" }

    private func addFree(offset: Int, size: Int) {
        ranges.insert(offset, Range(offset: offset, size: size, state: .free))
        free.insert(FreeKey(size: size, offset: offset), offset)
    }

    /// `reserve_new`: the offset of a new reserved range, and whether the
    /// caller looks like a oneway spammer. ENOSPC when nothing fits or the
    /// oneway space is short.
    public func reserveNew(size: Int, isOneway: Bool = false, pid: Int = 0) throws(KernelError) -> (offset: Int, spamDetected: Bool) {
        guard size > 0 else {
            throw .bug("reserve_new of \(size) bytes: a range of size 0 would share its offset with the next one (binder pads buffers to at least 8 bytes)")
        }
        var newOnewaySpace = freeOnewaySpace
        if isOneway {
            guard size <= freeOnewaySpace else {
                throw KernelError(.ENOSPC, "reserve_new of \(size) oneway bytes: \(freeOnewaySpace) of the oneway space left")
            }
            newOnewaySpace -= size
        }
        guard let found = free.first(after: FreeKey(size: size, offset: 0)) else {
            throw KernelError(.ENOSPC, "reserve_new of \(size) bytes: no free range is that large")
        }
        let offset = found.value, foundSize = found.key.size
        free.remove(found.key)
        ranges.insert(offset, Range(offset: offset, size: size, state: .reserved, isOneway: isOneway, pid: pid))
        if foundSize > size { addFree(offset: offset + size, size: foundSize - size) }
        freeOnewaySpace = newOnewaySpace
        buffers += 1
        let spam = isOneway && newOnewaySpace < self.size / 10 && lowOnewaySpace(pid)
        return (offset, spam)
    }

    /// Whether `pid` holds more than 50 oneway buffers, or more than a
    /// quarter of the space in them (`low_oneway_space`).
    private func lowOnewaySpace(_ pid: Int) -> Bool {
        var total = 0, count = 0
        ranges.forEach { _, range in
            if range.state != .free, range.isOneway, range.pid == pid {
                total += range.size
                count += 1
            }
        }
        return count > 50 || total > size / 4
    }

    /// The range at exactly `offset`, unless no range has been reserved at
    /// all (the Rust allocator's `Empty` state answers EINVAL).
    private func range(at offset: Int, _ what: String, missing: Errno) throws(KernelError) -> Range {
        guard buffers > 0 else { throw KernelError(.EINVAL, "\(what) at offset \(offset): the allocator holds no ranges") }
        guard let range = ranges.find(offset) else { throw KernelError(missing, "\(what) at offset \(offset): no range starts there") }
        return range
    }

    /// `reservation_commit`: a reserved range becomes allocated, with `data`.
    public func reservationCommit(offset: Int, data: Data?) throws(KernelError) {
        var range = try range(at: offset, "reservation_commit", missing: .ENOENT)
        guard range.state == .reserved else {
            throw KernelError(.ENOENT, "reservation_commit at offset \(offset): the range is \(range.state.rawValue), not reserved")
        }
        range.state = .allocated
        range.data = data
        ranges.insert(offset, range)
    }

    /// `reserve_existing`: an allocated range becomes reserved again (the
    /// kernel is freeing it); its size and data.
    public func reserveExisting(offset: Int) throws(KernelError) -> (size: Int, data: Data?) {
        var range = try range(at: offset, "reserve_existing", missing: .ENOENT)
        guard range.state == .allocated else {
            throw KernelError(.ENOENT, "reserve_existing at offset \(offset): the range is \(range.state.rawValue), not allocated")
        }
        let data = range.data
        range.state = .reserved
        range.data = nil
        ranges.insert(offset, range)
        return (range.size, data)
    }

    /// `reservation_abort`: a reserved range becomes free, merging with free
    /// neighbours; the pages no range uses any more. EINVAL for an unknown
    /// or free offset, EPERM for an allocated one.
    public func reservationAbort(offset: Int) throws(KernelError) -> FreedRange {
        let range = try range(at: offset, "reservation_abort", missing: .EINVAL)
        switch range.state {
        case .free: throw KernelError(.EINVAL, "reservation_abort at offset \(offset): the range is free")
        case .allocated: throw KernelError(.EPERM, "reservation_abort at offset \(offset): the range is allocated; reserve_existing it first")
        case .reserved: break
        }
        if range.isOneway { freeOnewaySpace += range.size }
        buffers -= 1
        var start = range.offset, size = range.size
        // Pages wholly inside the range are freed; a page it shares with a
        // neighbour only if that neighbour is free over the rest of it.
        var freed = FreedRange(start: (start + PAGE_SIZE - 1) / PAGE_SIZE, end: (start + size) / PAGE_SIZE)
        let nextNeeded = (start + size) % PAGE_SIZE == 0 ? Int.max : PAGE_SIZE - (start + size) % PAGE_SIZE
        let prevNeeded = start % PAGE_SIZE == 0 ? Int.max : start % PAGE_SIZE
        ranges.remove(offset)
        if let next = ranges.find(start + size), next.state == .free {
            if next.size >= nextNeeded { freed.end += 1 }
            free.remove(FreeKey(size: next.size, offset: next.offset))
            ranges.remove(next.offset)
            size += next.size
        }
        if let prev = ranges.last(before: start, inclusive: false)?.value, prev.state == .free {
            if prev.size >= prevNeeded { freed.start -= 1 }
            free.remove(FreeKey(size: prev.size, offset: prev.offset))
            ranges.remove(prev.offset)
            start = prev.offset
            size += prev.size
        }
        addFree(offset: start, size: size)
        return freed
    }

    /// Every range, free ones included, in offset order.
    public func allRanges() -> [Range] {
        var out: [Range] = []
        ranges.forEach { _, range in out.append(range) }
        return out
    }

    /// The data of every allocated range (what `take_for_each` hands out at shutdown).
    public func allData() -> [Data] {
        var out: [Data] = []
        ranges.forEach { _, range in if let data = range.data { out.append(data) } }
        return out
    }
}
