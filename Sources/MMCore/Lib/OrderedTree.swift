/// A balanced search tree (AVL) over unique keys: what the kernel's
/// rbtrees are to drm_mm and the binder range allocator. Entries may carry
/// a weight; each subtree keeps its largest weight, so that "the first entry
/// at or after `k` weighing at least `w`" is found in O(log n), as drm_mm's
/// `subtree_max_hole` augmentation finds a hole that fits.
///
/// Nodes live in one array and refer to each other by index: no reference
/// counting on the hot paths.
///
/// # Invariants
///
/// In-order traversal visits keys in increasing order; every node's height
/// is one more than its taller child's, and its children's heights differ
/// by at most one; `maxWeight` is the largest weight in the subtree.
public struct OrderedTree<Key: Comparable, Value> {
    private struct Node {
        var key: Key
        var value: Value
        var left: Int32
        var right: Int32
        var height: Int8
        var weight: UInt64
        var maxWeight: UInt64
    }

    private var nodes: [Node] = []
    private var unused: [Int32] = []
    private var root: Int32 = -1
    public private(set) var count = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

    // MARK: Lookup

    /// The value at `key`.
    public func find(_ key: Key) -> Value? {
        var n = root
        while n >= 0 {
            let node = nodes[Int(n)]
            if key < node.key { n = node.left } else if node.key < key { n = node.right } else { return node.value }
        }
        return nil
    }

    /// The first entry with a key at or after `key` (`inclusive`), or after it.
    public func first(after key: Key, inclusive: Bool = true) -> (key: Key, value: Value)? {
        var n = root, found: Int32 = -1
        while n >= 0 {
            let node = nodes[Int(n)]
            if inclusive ? !(node.key < key) : key < node.key {
                found = n
                n = node.left
            } else {
                n = node.right
            }
        }
        return entry(found)
    }

    /// The last entry with a key at or before `key` (`inclusive`), or before it.
    public func last(before key: Key, inclusive: Bool = true) -> (key: Key, value: Value)? {
        var n = root, found: Int32 = -1
        while n >= 0 {
            let node = nodes[Int(n)]
            if inclusive ? !(key < node.key) : node.key < key {
                found = n
                n = node.right
            } else {
                n = node.left
            }
        }
        return entry(found)
    }

    public var first: (key: Key, value: Value)? { extreme(left: true) }
    public var last: (key: Key, value: Value)? { extreme(left: false) }

    private func extreme(left: Bool) -> (key: Key, value: Value)? {
        var n = root
        guard n >= 0 else { return nil }
        while true {
            let next = left ? nodes[Int(n)].left : nodes[Int(n)].right
            if next < 0 { return entry(n) }
            n = next
        }
    }

    private func entry(_ n: Int32) -> (key: Key, value: Value)? {
        n < 0 ? nil : (nodes[Int(n)].key, nodes[Int(n)].value)
    }

    private func maxWeight(_ n: Int32) -> UInt64 { n < 0 ? 0 : nodes[Int(n)].maxWeight }

    /// The first entry at or after `key` (or after it, unless `inclusive`)
    /// whose weight is at least `weight`.
    public func firstFit(after key: Key, inclusive: Bool = true, weight: UInt64) -> (key: Key, value: Value)? {
        entry(firstFit(root, key, inclusive, weight))
    }

    private func firstFit(_ n: Int32, _ key: Key, _ inclusive: Bool, _ weight: UInt64) -> Int32 {
        guard n >= 0, nodes[Int(n)].maxWeight >= weight else { return -1 }
        let node = nodes[Int(n)]
        guard inclusive ? !(node.key < key) : key < node.key else { return firstFit(node.right, key, inclusive, weight) }
        let inLeft = firstFit(node.left, key, inclusive, weight)
        if inLeft >= 0 { return inLeft }
        if node.weight >= weight { return n }
        return firstFit(node.right, key, inclusive, weight)
    }

    /// The last entry at or before `key` (or before it, unless `inclusive`)
    /// whose weight is at least `weight`.
    public func lastFit(before key: Key, inclusive: Bool = true, weight: UInt64) -> (key: Key, value: Value)? {
        entry(lastFit(root, key, inclusive, weight))
    }

    private func lastFit(_ n: Int32, _ key: Key, _ inclusive: Bool, _ weight: UInt64) -> Int32 {
        guard n >= 0, nodes[Int(n)].maxWeight >= weight else { return -1 }
        let node = nodes[Int(n)]
        guard inclusive ? !(key < node.key) : node.key < key else { return lastFit(node.left, key, inclusive, weight) }
        let inRight = lastFit(node.right, key, inclusive, weight)
        if inRight >= 0 { return inRight }
        if node.weight >= weight { return n }
        return lastFit(node.left, key, inclusive, weight)
    }

    /// The largest weight of any entry.
    public var maxWeight: UInt64 { maxWeight(root) }

    /// Every entry, in key order.
    public func forEach(_ body: (Key, Value) throws -> Void) rethrows {
        var stack: [Int32] = []
        var n = root
        while n >= 0 || !stack.isEmpty {
            while n >= 0 {
                stack.append(n)
                n = nodes[Int(n)].left
            }
            guard let top = stack.popLast() else { break }
            try body(nodes[Int(top)].key, nodes[Int(top)].value)
            n = nodes[Int(top)].right
        }
    }

    // MARK: Changes

    /// Inserts `key`, which must not be present (a present key has its
    /// value and weight replaced).
    public mutating func insert(_ key: Key, _ value: Value, weight: UInt64 = 0) {
        root = insert(root, key, value, weight)
    }

    /// Removes `key`; its value, if it was there.
    @discardableResult
    public mutating func remove(_ key: Key) -> Value? {
        var removed: Value?
        root = remove(root, key, &removed)
        return removed
    }

    public mutating func removeAll() {
        nodes.removeAll(keepingCapacity: true)
        unused.removeAll(keepingCapacity: true)
        root = -1
        count = 0
    }

    private mutating func insert(_ n: Int32, _ key: Key, _ value: Value, _ weight: UInt64) -> Int32 {
        guard n >= 0 else { return make(key, value, weight) }
        let i = Int(n)
        if key < nodes[i].key {
            nodes[i].left = insert(nodes[i].left, key, value, weight)
        } else if nodes[i].key < key {
            nodes[i].right = insert(nodes[i].right, key, value, weight)
        } else {
            nodes[i].value = value
            nodes[i].weight = weight
        }
        return balance(n)
    }

    private mutating func remove(_ n: Int32, _ key: Key, _ removed: inout Value?) -> Int32 {
        guard n >= 0 else { return -1 }
        let i = Int(n)
        if key < nodes[i].key {
            nodes[i].left = remove(nodes[i].left, key, &removed)
        } else if nodes[i].key < key {
            nodes[i].right = remove(nodes[i].right, key, &removed)
        } else {
            removed = nodes[i].value
            let left = nodes[i].left, right = nodes[i].right
            guard left >= 0, right >= 0 else {
                release(n)
                return left >= 0 ? left : right
            }
            // Two children: the successor takes this node's place.
            var successor = right
            while nodes[Int(successor)].left >= 0 { successor = nodes[Int(successor)].left }
            let s = nodes[Int(successor)]
            var ignored: Value?
            nodes[i].right = remove(right, s.key, &ignored)
            nodes[i].key = s.key
            nodes[i].value = s.value
            nodes[i].weight = s.weight
        }
        return balance(n)
    }

    private mutating func make(_ key: Key, _ value: Value, _ weight: UInt64) -> Int32 {
        count += 1
        let node = Node(key: key, value: value, left: -1, right: -1, height: 1, weight: weight, maxWeight: weight)
        if let n = unused.popLast() {
            nodes[Int(n)] = node
            return n
        }
        nodes.append(node)
        return Int32(nodes.count - 1)
    }

    private mutating func release(_ n: Int32) {
        count -= 1
        unused.append(n)
    }

    private func height(_ n: Int32) -> Int8 { n < 0 ? 0 : nodes[Int(n)].height }

    private mutating func update(_ n: Int32) {
        let i = Int(n)
        let l = nodes[i].left, r = nodes[i].right
        nodes[i].height = max(height(l), height(r)) + 1
        nodes[i].maxWeight = max(nodes[i].weight, maxWeight(l), maxWeight(r))
    }

    private mutating func rotateRight(_ n: Int32) -> Int32 {
        let l = nodes[Int(n)].left
        nodes[Int(n)].left = nodes[Int(l)].right
        nodes[Int(l)].right = n
        update(n)
        update(l)
        return l
    }

    private mutating func rotateLeft(_ n: Int32) -> Int32 {
        let r = nodes[Int(n)].right
        nodes[Int(n)].right = nodes[Int(r)].left
        nodes[Int(r)].left = n
        update(n)
        update(r)
        return r
    }

    private mutating func balance(_ n: Int32) -> Int32 {
        update(n)
        let i = Int(n)
        let skew = Int(height(nodes[i].left)) - Int(height(nodes[i].right))
        if skew > 1 {
            let l = nodes[i].left
            if height(nodes[Int(l)].left) < height(nodes[Int(l)].right) { nodes[i].left = rotateLeft(l) }
            return rotateRight(n)
        }
        if skew < -1 {
            let r = nodes[i].right
            if height(nodes[Int(r)].right) < height(nodes[Int(r)].left) { nodes[i].right = rotateRight(r) }
            return rotateLeft(n)
        }
        return n
    }

    /// Checks the invariants (for tests): the height of the tree.
    public func validate() -> Bool {
        func check(_ n: Int32, _ low: Key?, _ high: Key?) -> (ok: Bool, height: Int8, max: UInt64) {
            guard n >= 0 else { return (true, 0, 0) }
            let node = nodes[Int(n)]
            if let low, !(low < node.key) { return (false, 0, 0) }
            if let high, !(node.key < high) { return (false, 0, 0) }
            let l = check(node.left, low, node.key), r = check(node.right, node.key, high)
            let height = max(l.height, r.height) + 1
            let maxW = max(node.weight, l.max, r.max)
            let ok = l.ok && r.ok && abs(Int(l.height) - Int(r.height)) <= 1 && height == node.height && maxW == node.maxWeight
            return (ok, height, maxW)
        }
        return check(root, nil, nil).ok
    }
}
