/// One node's links in one red-black tree (`struct rb_node`); -1 is none.
public struct RBNode {
    var parent: Int32 = -1
    var left: Int32 = -1
    var right: Int32 = -1
    var red = false
}

/// What an augmented tree keeps per node (`struct rb_augment_callbacks`):
/// a value computed from the node and its children's values, such as the
/// largest hole in a subtree.
protocol RBAugment {
    /// Recomputes `n`'s value from its own and its children's (`RBCOMPUTE`);
    /// whether it changed.
    func update(_ n: Int32, left: Int32, right: Int32) -> Bool
    /// `to` takes `from`'s value (the `copy` and `rotate` callbacks).
    func copy(_ from: Int32, to: Int32)
}

/// No augmentation (`rb_insert_color`, `rb_erase`).
struct RBPlain: RBAugment {
    func update(_ n: Int32, left: Int32, right: Int32) -> Bool { false }
    func copy(_ from: Int32, to: Int32) {}
}

/// An intrusive red-black tree over nodes that live in a caller's array of
/// entries (lib/rbtree.c). The caller finds where a new node goes, as
/// kernel code does with `rb_link_node`, and the tree rebalances it; the
/// rebalancing is the textbook one lib/rbtree.c implements, so that a tree
/// built by the same sequence of insertions and erasures has the kernel's
/// shape, which searches that stop early (drm_mm's `find_hole_addr`)
/// depend on.
///
/// The links of node `i` are at `base + i * stride + offset`: the caller's
/// entries embed one `RBNode` per tree they are in.
///
/// # Invariants
///
/// The root is black; a red node has black children; every path from a
/// node to its leaves has as many black nodes; augmented values are what
/// `update` computes from the children.
struct RBTree<A: RBAugment> {
    var base: UnsafeMutableRawPointer
    let stride: Int
    let offset: Int
    var root: Int32 = -1
    var augment: A

    init(base: UnsafeMutableRawPointer, stride: Int, offset: Int, augment: A) {
        self.base = base
        self.stride = stride
        self.offset = offset
        self.augment = augment
    }

    @inline(__always)
    func node(_ i: Int32) -> UnsafeMutablePointer<RBNode> {
        // SAFETY: the caller keeps `base` pointing at its entries, every id
        // in the tree indexes one, and `offset` is that of an RBNode field.
        (base + Int(i) * stride + offset).assumingMemoryBound(to: RBNode.self)
    }

    @inline(__always) func left(_ i: Int32) -> Int32 { node(i).pointee.left }
    @inline(__always) func right(_ i: Int32) -> Int32 { node(i).pointee.right }
    @inline(__always) func parent(_ i: Int32) -> Int32 { node(i).pointee.parent }
    @inline(__always) private func isRed(_ i: Int32) -> Bool { i >= 0 && node(i).pointee.red }

    // MARK: Walking

    /// The leftmost node (`rb_first`), or -1.
    func first() -> Int32 {
        var n = root
        if n < 0 { return -1 }
        while left(n) >= 0 { n = left(n) }
        return n
    }

    /// The in-order successor (`rb_next`), or -1.
    func next(_ n: Int32) -> Int32 {
        var n = n
        if right(n) >= 0 {
            n = right(n)
            while left(n) >= 0 { n = left(n) }
            return n
        }
        var p = parent(n)
        while p >= 0, n == right(p) {
            n = p
            p = parent(p)
        }
        return p
    }

    /// The in-order predecessor (`rb_prev`), or -1.
    func prev(_ n: Int32) -> Int32 {
        var n = n
        if left(n) >= 0 {
            n = left(n)
            while right(n) >= 0 { n = right(n) }
            return n
        }
        var p = parent(n)
        while p >= 0, n == left(p) {
            n = p
            p = parent(p)
        }
        return p
    }

    // MARK: Insertion

    /// Links `n` as the `left` or right child of `parent` (-1: the root)
    /// and rebalances (`rb_link_node`, then `rb_insert_augmented`). The
    /// caller has updated the augmented values down the path already.
    mutating func insert(_ n: Int32, parent p: Int32, left isLeft: Bool) {
        node(n).pointee = RBNode(parent: p, left: -1, right: -1, red: true)
        if p < 0 { root = n } else if isLeft { node(p).pointee.left = n } else { node(p).pointee.right = n }
        insertFixup(n)
    }

    /// Restores the colours after an insertion (`__rb_insert`): uncle red,
    /// flip colours and go up; else one or two rotations.
    private mutating func insertFixup(_ n: Int32) {
        var n = n
        while true {
            let p = parent(n)
            if p < 0 {
                node(n).pointee.red = false
                return
            }
            if !node(p).pointee.red { return }
            let g = parent(p)
            if p == left(g) {
                let uncle = right(g)
                if isRed(uncle) {
                    node(uncle).pointee.red = false
                    node(p).pointee.red = false
                    node(g).pointee.red = true
                    n = g
                    continue
                }
                var top = p
                if n == right(p) {
                    rotateLeft(p)
                    top = n
                }
                node(top).pointee.red = false
                node(g).pointee.red = true
                rotateRight(g)
                return
            } else {
                let uncle = left(g)
                if isRed(uncle) {
                    node(uncle).pointee.red = false
                    node(p).pointee.red = false
                    node(g).pointee.red = true
                    n = g
                    continue
                }
                var top = p
                if n == left(p) {
                    rotateRight(p)
                    top = n
                }
                node(top).pointee.red = false
                node(g).pointee.red = true
                rotateLeft(g)
                return
            }
        }
    }

    /// `p`'s child `old` is now `new` (or the root, without `p`).
    @inline(__always)
    private mutating func replaceChild(_ p: Int32, _ old: Int32, with new: Int32) {
        if p < 0 { root = new } else if left(p) == old { node(p).pointee.left = new } else { node(p).pointee.right = new }
    }

    /// `x`'s right child takes its place; `x` becomes its left child. The
    /// new top takes `x`'s augmented value, `x` is recomputed (`augment_rotate`).
    private mutating func rotateLeft(_ x: Int32) {
        let y = right(x), p = parent(x)
        let b = left(y)
        node(x).pointee.right = b
        if b >= 0 { node(b).pointee.parent = x }
        node(y).pointee.left = x
        node(x).pointee.parent = y
        node(y).pointee.parent = p
        replaceChild(p, x, with: y)
        augment.copy(x, to: y)
        _ = augment.update(x, left: left(x), right: right(x))
    }

    private mutating func rotateRight(_ x: Int32) {
        let y = left(x), p = parent(x)
        let b = right(y)
        node(x).pointee.left = b
        if b >= 0 { node(b).pointee.parent = x }
        node(y).pointee.right = x
        node(x).pointee.parent = y
        node(y).pointee.parent = p
        replaceChild(p, x, with: y)
        augment.copy(x, to: y)
        _ = augment.update(x, left: left(x), right: right(x))
    }

    // MARK: Erasure

    /// Recomputes augmented values from `n` up, stopping below `stop` or
    /// where a value does not change (`propagate`).
    private func propagate(from n: Int32, to stop: Int32) {
        var n = n
        while n >= 0, n != stop {
            if !augment.update(n, left: left(n), right: right(n)) { return }
            n = parent(n)
        }
    }

    /// Unlinks `z` and rebalances (`rb_erase_augmented`): a node with two
    /// children is replaced by its successor, which takes its colour.
    mutating func erase(_ z: Int32) {
        let zl = left(z), zr = right(z), zp = parent(z), zRed = node(z).pointee.red
        var rebalance: Int32 = -1
        var from: Int32
        if zl < 0 {
            replaceChild(zp, z, with: zr)
            if zr >= 0 {
                node(zr).pointee.parent = zp
                node(zr).pointee.red = zRed
            } else if !zRed {
                rebalance = zp
            }
            from = zp
        } else if zr < 0 {
            replaceChild(zp, z, with: zl)
            node(zl).pointee.parent = zp
            node(zl).pointee.red = zRed
            from = zp
        } else {
            var successor = zr, p: Int32, child2: Int32
            if left(zr) < 0 {
                // The successor is z's right child.
                p = successor
                child2 = right(successor)
                augment.copy(z, to: successor)
            } else {
                // The successor is the leftmost node under z's right child.
                p = successor
                successor = left(successor)
                while left(successor) >= 0 {
                    p = successor
                    successor = left(successor)
                }
                child2 = right(successor)
                node(p).pointee.left = child2
                node(successor).pointee.right = zr
                node(zr).pointee.parent = successor
                augment.copy(z, to: successor)
                propagate(from: p, to: successor)
            }
            node(successor).pointee.left = zl
            node(zl).pointee.parent = successor
            replaceChild(zp, z, with: successor)
            let successorRed = node(successor).pointee.red
            if child2 >= 0 {
                node(child2).pointee.parent = p
                node(child2).pointee.red = false
            } else if !successorRed {
                rebalance = p
            }
            node(successor).pointee.parent = zp
            node(successor).pointee.red = zRed
            from = successor
        }
        propagate(from: from, to: -1)
        if rebalance >= 0 { eraseFixup(rebalance) }
    }

    /// Restores the colours after erasing a black leaf below `parent`
    /// (`____rb_erase_color`).
    private mutating func eraseFixup(_ start: Int32) {
        var n: Int32 = -1, p = start
        while true {
            var sibling = right(p)
            if n != sibling {
                if isRed(sibling) {
                    node(sibling).pointee.red = false
                    node(p).pointee.red = true
                    rotateLeft(p)
                    sibling = right(p)
                }
                if !isRed(right(sibling)) {
                    if !isRed(left(sibling)) {
                        node(sibling).pointee.red = true
                        if node(p).pointee.red {
                            node(p).pointee.red = false
                            return
                        }
                        n = p
                        p = parent(n)
                        if p < 0 { return }
                        continue
                    }
                    node(left(sibling)).pointee.red = false
                    node(sibling).pointee.red = true
                    rotateRight(sibling)
                    sibling = right(p)
                }
                node(sibling).pointee.red = node(p).pointee.red
                node(p).pointee.red = false
                node(right(sibling)).pointee.red = false
                rotateLeft(p)
                return
            } else {
                sibling = left(p)
                if isRed(sibling) {
                    node(sibling).pointee.red = false
                    node(p).pointee.red = true
                    rotateRight(p)
                    sibling = left(p)
                }
                if !isRed(left(sibling)) {
                    if !isRed(right(sibling)) {
                        node(sibling).pointee.red = true
                        if node(p).pointee.red {
                            node(p).pointee.red = false
                            return
                        }
                        n = p
                        p = parent(n)
                        if p < 0 { return }
                        continue
                    }
                    node(right(sibling)).pointee.red = false
                    node(sibling).pointee.red = true
                    rotateLeft(sibling)
                    sibling = left(p)
                }
                node(sibling).pointee.red = node(p).pointee.red
                node(p).pointee.red = false
                node(left(sibling)).pointee.red = false
                rotateRight(p)
                return
            }
        }
    }

    // MARK: Checks

    /// The red-black properties, parent links and augmented values hold
    /// (for `kernel.debug.check`); the number of nodes, or nil.
    func validate() -> Int? {
        var count = 0
        func check(_ n: Int32, _ p: Int32) -> Int? {
            guard n >= 0 else { return 1 }
            count += 1
            guard parent(n) == p, count < Int(Int32.max) else { return nil }
            if isRed(n), isRed(left(n)) || isRed(right(n)) { return nil }
            guard let l = check(left(n), n), let r = check(right(n), n), l == r else { return nil }
            if augment.update(n, left: left(n), right: right(n)) { return nil }
            return l + (isRed(n) ? 0 : 1)
        }
        if isRed(root) { return nil }
        return check(root, -1).map { _ in count }
    }
}
