/// Rust Binder's range allocator (drivers/android/binder/range_alloc/):
/// the buffers of one process's binder mmap. Every buffer is reserved (a
/// transaction is being written into it) or allocated (delivered, owned by
/// userspace until it frees it).
///
/// As Rust Binder's `Impl`, it has three representations, and which one
/// decides where buffers go:
/// - *Empty* (`mod.rs`): no buffers; `reservation_commit`,
///   `reserve_existing` and `reservation_abort` answer EINVAL.
/// - *Array* (`array.rs`): at most `TREE_THRESHOLD` buffers in a sorted
///   array, free space not stored. A new buffer goes after the last one
///   when it fits there, else into the first gap that fits: never best
///   fit, and oneway spam is never detected.
/// - *Tree* (`tree.rs`): every range, free ones included (free ranges never
///   touch), with the free ones indexed by `(size, offset)`: best fit, and
///   oneway spam detection.
///
/// The first reservation turns Empty into an Array; a reservation while the
/// Array is full turns it into a Tree first (even if the reservation then
/// fails); a Tree whose last buffer goes becomes Empty again, while an
/// Array that empties stays an Array.
///
/// Oneway (async) buffers may use half the space in total; in the tree,
/// when they leave less than a tenth of the whole, the calling pid is
/// checked for spamming.
///
/// # Invariants
///
/// Empty: `array` and `ranges` are empty. Array: `array` is sorted by
/// offset, disjoint, inside `[0, size)`, at most `treeThreshold` long, and
/// holds no free range. Tree: `ranges` tiles `[0, size)` without gaps, no
/// two free ranges are adjacent, `free` holds exactly the free ranges.
public final class RangeAllocator<Data>: CustomStringConvertible {
    public enum State: String, Sendable {
        case free, reserved, allocated
    }

    /// Which of Rust Binder's representations holds the ranges.
    public enum Mode: String, Sendable {
        case empty, array, tree
    }

    public struct Range {
        public let offset: Int
        public var size: Int
        public var state: State
        public var isOneway = false
        public var pid = 0
        var data: Data?

        var end: Int { offset + size }
    }

    struct FreeKey: Comparable {
        let size: Int, offset: Int
        static func < (a: FreeKey, b: FreeKey) -> Bool { (a.size, a.offset) < (b.size, b.offset) }
    }

    /// Pages `[start, end)` that no range uses any more (`FreedRange`).
    public struct FreedRange: Equatable, Sendable {
        public var start: Int
        public var end: Int

        /// `FreedRange::interior_pages`: the pages wholly inside the range.
        static func interior(_ offset: Int, _ size: Int) -> FreedRange {
            FreedRange(start: (offset + PAGE_SIZE - 1) / PAGE_SIZE, end: (offset + size) / PAGE_SIZE)
        }
    }

    /// `TREE_THRESHOLD`: an Array holds at most this many buffers.
    public static var treeThreshold: Int { 8 }

    public let size: Int
    public private(set) var mode = Mode.empty
    // Changed only by this class's methods, which call nothing outside it
    // meanwhile: exclusivity holds by construction, and its dynamic checks
    // were a fifth of a new_buf.
    @exclusivity(unchecked) public private(set) var freeOnewaySpace: Int
    /// The Array's buffers, by offset.
    @exclusivity(unchecked) private var array: [Range] = []
    /// The Tree's ranges by offset, and its free ones by `(size, offset)`.
    @exclusivity(unchecked) private var ranges = OrderedTree<Int, Range>()
    @exclusivity(unchecked) private var free = OrderedTree<FreeKey, Int>()
    /// Ranges reserved or allocated (`count_buffers`).
    @exclusivity(unchecked) public private(set) var buffers = 0

    /// A range allocator over `size` bytes, Empty.
    public init(size: Int) throws(KernelError) {
        guard size >= 0 else { throw KernelError(.EINVAL, "RangeAllocator of \(size) bytes") }
        self.size = size
        freeOnewaySpace = size / 2
        array.reserveCapacity(Self.treeThreshold)
    }

    public var description: String { "RangeAllocator{size=\(size), buffers=\(buffers), mode=\(mode.rawValue)}" }

    // MARK: Reserving

    /// `reserve_new`: the offset of a new reserved range, and whether the
    /// caller looks like a oneway spammer. ENOSPC when nothing fits or the
    /// oneway space is short.
    public func reserveNew(size: Int, isOneway: Bool = false, pid: Int = 0) throws(KernelError) -> (offset: Int, spamDetected: Bool) {
        guard size > 0 else {
            throw .bug("reserve_new of \(size) bytes: a range of size 0 would share its offset with the next one (binder pads buffers to at least 8 bytes)")
        }
        switch mode {
        case .empty:
            mode = .array
        case .array where array.count == Self.treeThreshold:
            becomeTree()
        default:
            break
        }
        // The new oneway space, set only on success.
        var newOnewaySpace = freeOnewaySpace
        if isOneway {
            guard size <= freeOnewaySpace else {
                throw KernelError(.ENOSPC, "reserve_new of \(size) oneway bytes: \(freeOnewaySpace) of the oneway space left")
            }
            newOnewaySpace -= size
        }
        let range = Range(offset: 0, size: size, state: .reserved, isOneway: isOneway, pid: pid)
        let offset = mode == .tree ? try treeReserve(range) : try arrayReserve(range)
        freeOnewaySpace = newOnewaySpace
        buffers += 1
        // Spammers are looked for only by the tree, once less than a tenth
        // of the space is left for oneway buffers.
        let spam = mode == .tree && isOneway && newOnewaySpace < self.size / 10 && lowOnewaySpace(pid)
        return (offset, spam)
    }

    /// `ArrayRangeAllocator::reserve_new`: after the last range if it fits
    /// there (`find_empty_range`), else in the first gap that fits.
    private func arrayReserve(_ range: Range) throws(KernelError) -> Int {
        var index = array.count, offset = array.last?.end ?? 0
        if range.size > size - offset {
            var endOfPrevious = 0
            index = -1
            for (i, r) in array.enumerated() {
                if range.size <= r.offset - endOfPrevious {
                    index = i
                    break
                }
                endOfPrevious = r.end
            }
            guard index >= 0 else { throw KernelError(.ENOSPC, "reserve_new of \(range.size) bytes: no gap is that large") }
            offset = endOfPrevious
        }
        array.insert(Range(offset: offset, size: range.size, state: .reserved, isOneway: range.isOneway, pid: range.pid),
                     at: index)
        return offset
    }

    /// `TreeRangeAllocator::reserve_new`: the smallest free range that fits,
    /// the lowest of those (`find_best_match`).
    private func treeReserve(_ range: Range) throws(KernelError) -> Int {
        guard let found = free.first(after: FreeKey(size: range.size, offset: 0)) else {
            throw KernelError(.ENOSPC, "reserve_new of \(range.size) bytes: no free range is that large")
        }
        let offset = found.value, foundSize = found.key.size
        free.remove(found.key)
        ranges.insert(offset, Range(offset: offset, size: range.size, state: .reserved, isOneway: range.isOneway, pid: range.pid))
        if foundSize > range.size { addFree(offset: offset + range.size, size: foundSize - range.size) }
        return offset
    }

    /// `TreeRangeAllocator::from_array`: the Array's ranges and the gaps
    /// between them, the oneway space recounted from the oneway buffers.
    private func becomeTree() {
        var freeOffset = 0
        freeOnewaySpace = size / 2
        for range in array {
            if range.offset > freeOffset { addFree(offset: freeOffset, size: range.offset - freeOffset) }
            freeOffset = range.end
            if range.isOneway { freeOnewaySpace = max(0, freeOnewaySpace - range.size) }
            ranges.insert(range.offset, range)
        }
        if freeOffset < size { addFree(offset: freeOffset, size: size - freeOffset) }
        array.removeAll(keepingCapacity: true)
        mode = .tree
    }

    private func addFree(offset: Int, size: Int) {
        ranges.insert(offset, Range(offset: offset, size: size, state: .free))
        free.insert(FreeKey(size: size, offset: offset), offset)
    }

    /// `low_oneway_space`: whether `pid` holds more than 50 oneway buffers,
    /// or more than a quarter of the space in them.
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

    // MARK: Changing a buffer's state

    /// The buffer starting at `offset`: in the Array its index, in the Tree
    /// the range (free ones included). EINVAL in the Empty state.
    private func find(_ offset: Int, _ what: String) throws(KernelError) -> (index: Int?, range: Range?) {
        switch mode {
        case .empty:
            throw KernelError(.EINVAL, "\(what) at offset \(offset): the allocator is empty")
        case .array:
            guard let i = array.firstIndex(where: { $0.offset == offset }) else { return (nil, nil) }
            return (i, array[i])
        case .tree:
            return (nil, ranges.find(offset))
        }
    }

    private func store(_ range: Range, at index: Int?) {
        if let index { array[index] = range } else { ranges.insert(range.offset, range) }
    }

    /// `reservation_commit`: a reserved range becomes allocated, with
    /// `data`. ENOENT unless a reserved range starts at `offset`.
    public func reservationCommit(offset: Int, data: Data?) throws(KernelError) {
        let (index, found) = try find(offset, "reservation_commit")
        guard var range = found else { throw KernelError(.ENOENT, "reservation_commit at offset \(offset): no buffer starts there") }
        guard range.state == .reserved else {
            throw KernelError(.ENOENT, "reservation_commit at offset \(offset): the range is \(range.state.rawValue), not reserved")
        }
        range.state = .allocated
        range.data = data
        store(range, at: index)
    }

    /// `reserve_existing`: an allocated range becomes reserved again (the
    /// kernel is freeing it); its size and data. ENOENT unless an allocated
    /// range starts at `offset`.
    public func reserveExisting(offset: Int) throws(KernelError) -> (size: Int, data: Data?) {
        let (index, found) = try find(offset, "reserve_existing")
        guard var range = found else { throw KernelError(.ENOENT, "reserve_existing at offset \(offset): no buffer starts there") }
        guard range.state == .allocated else {
            throw KernelError(.ENOENT, "reserve_existing at offset \(offset): the range is \(range.state.rawValue), not allocated")
        }
        let data = range.data
        range.state = .reserved
        range.data = nil
        store(range, at: index)
        return (range.size, data)
    }

    /// `reservation_abort`: a reserved range becomes free; the pages no
    /// range uses any more. EINVAL for an offset where no buffer starts (or
    /// a free range), EPERM for an allocated one.
    public func reservationAbort(offset: Int) throws(KernelError) -> FreedRange {
        let (index, found) = try find(offset, "reservation_abort")
        guard let range = found, range.state != .free else {
            throw KernelError(.EINVAL, "reservation_abort at offset \(offset): no buffer starts there")
        }
        guard range.state == .reserved else {
            throw KernelError(.EPERM, "reservation_abort at offset \(offset): the range is allocated; reserve_existing it first")
        }
        if range.isOneway { freeOnewaySpace += range.size }
        buffers -= 1
        if let index { return arrayAbort(index) }
        let freed = treeAbort(range)
        // `is_empty`: one free range left, the whole space.
        if buffers == 0 {
            ranges.removeAll()
            free.removeAll()
            mode = .empty
        }
        return freed
    }

    /// `ArrayRangeAllocator::reservation_abort`: a page the range shares
    /// with a neighbour is freed when the neighbour ends before it starts
    /// (or starts after it ends), or there is no neighbour on that side.
    private func arrayAbort(_ i: Int) -> FreedRange {
        let range = array[i]
        var freed = FreedRange.interior(range.offset, range.size)
        if range.offset % PAGE_SIZE != 0, i == 0 || array[i - 1].end <= range.offset & ~(PAGE_SIZE - 1) {
            freed.start -= 1
        }
        if range.end % PAGE_SIZE != 0 {
            let pageAfter = (range.end & ~(PAGE_SIZE - 1)) + PAGE_SIZE
            if i + 1 == array.count || pageAfter <= array[i + 1].offset { freed.end += 1 }
        }
        array.remove(at: i)
        return freed
    }

    /// `TreeRangeAllocator::reservation_abort`: the range merges with free
    /// neighbours; a page it shares with one is freed if that neighbour is
    /// free over the rest of it.
    private func treeAbort(_ range: Range) -> FreedRange {
        var start = range.offset, size = range.size
        var freed = FreedRange.interior(start, size)
        let nextNeeded = (start + size) % PAGE_SIZE == 0 ? Int.max : PAGE_SIZE - (start + size) % PAGE_SIZE
        let prevNeeded = start % PAGE_SIZE == 0 ? Int.max : start % PAGE_SIZE
        ranges.remove(range.offset)
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

    // MARK: Queries

    /// Every range in offset order, free space included: in the Empty and
    /// Array states, which do not store it, the gaps are listed as free.
    public func allRanges() -> [Range] {
        var out: [Range] = []
        switch mode {
        case .tree:
            ranges.forEach { _, range in out.append(range) }
        case .empty, .array:
            var end = 0
            for range in array {
                if range.offset > end { out.append(Range(offset: end, size: range.offset - end, state: .free)) }
                out.append(range)
                end = range.end
            }
            if end < size { out.append(Range(offset: end, size: size - end, state: .free)) }
        }
        return out
    }

    /// The data of every allocated range (what `take_for_each` hands out at shutdown).
    public func allData() -> [Data] {
        allRanges().compactMap(\.data)
    }
}
