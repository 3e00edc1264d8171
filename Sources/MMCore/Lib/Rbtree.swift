/// One node's links in one red-black tree (`struct rb_node`); -1 is none.
public struct RBNode {
    var parent: Int32 = -1
    var left: Int32 = -1
    var right: Int32 = -1
    var red = false
}

/// What a tree's nodes are embedded in, and what an augmented tree keeps
/// per node (`struct rb_augment_callbacks`): a value computed from the node
/// and its children's, such as the largest hole in a subtree. Static, so
/// that the tree code is specialized for each use with no calls through
/// witnesses and no loads of constants.
protocol RBAugment {
    /// The entries the nodes live in.
    associatedtype Entry
    /// Where an entry keeps its links in this tree.
    static var linksOffset: Int { get }
    /// Recomputes entry `n`'s value from its own and its children's
    /// (`RBCOMPUTE`); whether it changed.
    static func update(_ entries: UnsafeMutablePointer<Entry>, _ n: Int32, left: Int32, right: Int32) -> Bool
    /// `to` takes `from`'s value (the `copy` and `rotate` callbacks).
    static func copy(_ entries: UnsafeMutablePointer<Entry>, _ from: Int32, to: Int32)
}

/// The links of every node of one tree, over its entries: what the tree
/// operations walk. A value, taken at the start of each operation, so
/// that the compiler keeps the base in a register while nodes are written.
struct RBLinks<A: RBAugment> {
    let entries: UnsafeMutablePointer<A.Entry>
    let base: UnsafeMutableRawPointer

    @inline(__always)
    init(_ entries: UnsafeMutablePointer<A.Entry>) {
        self.entries = entries
        base = UnsafeMutableRawPointer(entries) + A.linksOffset
    }

    @inline(__always)
    func node(_ i: Int32) -> UnsafeMutablePointer<RBNode> {
        // SAFETY: the tree's owner keeps `entries` pointing at its entries,
        // every id in the tree indexes one, and `linksOffset` is that of an
        // RBNode field of an entry.
        (base + Int(i) &* MemoryLayout<A.Entry>.stride).assumingMemoryBound(to: RBNode.self)
    }

    @inline(__always) func left(_ i: Int32) -> Int32 { node(i).pointee.left }
    @inline(__always) func right(_ i: Int32) -> Int32 { node(i).pointee.right }
    @inline(__always) func parent(_ i: Int32) -> Int32 { node(i).pointee.parent }
    @inline(__always) func isRed(_ i: Int32) -> Bool { i >= 0 && node(i).pointee.red }
    @inline(__always) func update(_ n: Int32) -> Bool { A.update(entries, n, left: left(n), right: right(n)) }

    /// The leftmost node below `n` (`rb_first` from the root), or -1.
    func first(_ n: Int32) -> Int32 {
        var n = n
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

    /// `p`'s child `old` is now `new` (or the root, without `p`).
    @inline(__always)
    func replaceChild(_ p: Int32, _ old: Int32, with new: Int32, root: inout Int32) {
        if p < 0 { root = new } else if left(p) == old { node(p).pointee.left = new } else { node(p).pointee.right = new }
    }

    /// `x`'s right child takes its place; `x` becomes its left child. The
    /// new top takes `x`'s augmented value, `x` is recomputed (`augment_rotate`).
    @inline(__always)
    func rotateLeft(_ x: Int32, root: inout Int32) {
        let y = right(x), p = parent(x)
        let b = left(y)
        node(x).pointee.right = b
        if b >= 0 { node(b).pointee.parent = x }
        node(y).pointee.left = x
        node(x).pointee.parent = y
        node(y).pointee.parent = p
        replaceChild(p, x, with: y, root: &root)
        A.copy(entries, x, to: y)
        _ = update(x)
    }

    @inline(__always)
    func rotateRight(_ x: Int32, root: inout Int32) {
        let y = left(x), p = parent(x)
        let b = right(y)
        node(x).pointee.left = b
        if b >= 0 { node(b).pointee.parent = x }
        node(y).pointee.right = x
        node(x).pointee.parent = y
        node(y).pointee.parent = p
        replaceChild(p, x, with: y, root: &root)
        A.copy(entries, x, to: y)
        _ = update(x)
    }

    /// Recomputes augmented values from `n` up, stopping below `stop` or
    /// where a value does not change (`propagate`).
    @inline(__always)
    func propagate(from n: Int32, to stop: Int32) {
        var n = n
        while n >= 0, n != stop {
            if !update(n) { return }
            n = parent(n)
        }
    }
}

/// An intrusive red-black tree over nodes that live in a caller's array of
/// entries (lib/rbtree.c). The caller finds where a new node goes, as
/// kernel code does with `rb_link_node`, and the tree rebalances it; the
/// rebalancing is the textbook one lib/rbtree.c implements, so that a tree
/// built by the same sequence of insertions and erasures has the kernel's
/// shape, which searches that stop early (drm_mm's `find_hole_addr`)
/// depend on.
///
/// # Invariants
///
/// The root is black; a red node has black children; every path from a
/// node to its leaves has as many black nodes; augmented values are what
/// `update` computes from the children.
struct RBTree<A: RBAugment> {
    /// The entries; the owner moves it when it moves them.
    var entries: UnsafeMutablePointer<A.Entry>
    var root: Int32 = -1

    init(entries: UnsafeMutablePointer<A.Entry>) { self.entries = entries }

    @inline(__always) var links: RBLinks<A> { RBLinks(entries) }

    /// The leftmost node (`rb_first`), or -1.
    func first() -> Int32 { links.first(root) }

    // MARK: Insertion

    /// Links `n` as the `left` or right child of `parent` (-1: the root)
    /// and rebalances (`rb_link_node`, then `rb_insert_augmented`). The
    /// caller has updated the augmented values down the path already.
    mutating func insert(_ n: Int32, parent p: Int32, left isLeft: Bool) {
        let t = links
        var root = self.root
        t.node(n).pointee = RBNode(parent: p, left: -1, right: -1, red: true)
        if p < 0 { root = n } else if isLeft { t.node(p).pointee.left = n } else { t.node(p).pointee.right = n }
        Self.insertFixup(t, n, root: &root)
        self.root = root
    }

    /// Restores the colours after an insertion (`__rb_insert`): uncle red,
    /// flip colours and go up; else one or two rotations.
    @inline(__always)
    private static func insertFixup(_ t: RBLinks<A>, _ n: Int32, root: inout Int32) {
        var n = n
        while true {
            let p = t.parent(n)
            if p < 0 {
                t.node(n).pointee.red = false
                return
            }
            if !t.node(p).pointee.red { return }
            let g = t.parent(p)
            if p == t.left(g) {
                let uncle = t.right(g)
                if t.isRed(uncle) {
                    t.node(uncle).pointee.red = false
                    t.node(p).pointee.red = false
                    t.node(g).pointee.red = true
                    n = g
                    continue
                }
                var top = p
                if n == t.right(p) {
                    t.rotateLeft(p, root: &root)
                    top = n
                }
                t.node(top).pointee.red = false
                t.node(g).pointee.red = true
                t.rotateRight(g, root: &root)
                return
            } else {
                let uncle = t.left(g)
                if t.isRed(uncle) {
                    t.node(uncle).pointee.red = false
                    t.node(p).pointee.red = false
                    t.node(g).pointee.red = true
                    n = g
                    continue
                }
                var top = p
                if n == t.left(p) {
                    t.rotateRight(p, root: &root)
                    top = n
                }
                t.node(top).pointee.red = false
                t.node(g).pointee.red = true
                t.rotateLeft(g, root: &root)
                return
            }
        }
    }

    // MARK: Erasure

    /// Unlinks `z` and rebalances (`rb_erase_augmented`): a node with two
    /// children is replaced by its successor, which takes its colour.
    mutating func erase(_ z: Int32) {
        let t = links
        var root = self.root
        let zl = t.left(z), zr = t.right(z), zp = t.parent(z), zRed = t.node(z).pointee.red
        var rebalance: Int32 = -1
        var from: Int32
        if zl < 0 {
            t.replaceChild(zp, z, with: zr, root: &root)
            if zr >= 0 {
                t.node(zr).pointee.parent = zp
                t.node(zr).pointee.red = zRed
            } else if !zRed {
                rebalance = zp
            }
            from = zp
        } else if zr < 0 {
            t.replaceChild(zp, z, with: zl, root: &root)
            t.node(zl).pointee.parent = zp
            t.node(zl).pointee.red = zRed
            from = zp
        } else {
            var successor = zr, p: Int32, child2: Int32
            if t.left(zr) < 0 {
                // The successor is z's right child.
                p = successor
                child2 = t.right(successor)
                A.copy(t.entries, z, to: successor)
            } else {
                // The successor is the leftmost node under z's right child.
                p = successor
                successor = t.left(successor)
                while t.left(successor) >= 0 {
                    p = successor
                    successor = t.left(successor)
                }
                child2 = t.right(successor)
                t.node(p).pointee.left = child2
                t.node(successor).pointee.right = zr
                t.node(zr).pointee.parent = successor
                A.copy(t.entries, z, to: successor)
                t.propagate(from: p, to: successor)
            }
            t.node(successor).pointee.left = zl
            t.node(zl).pointee.parent = successor
            t.replaceChild(zp, z, with: successor, root: &root)
            let successorRed = t.node(successor).pointee.red
            if child2 >= 0 {
                t.node(child2).pointee.parent = p
                t.node(child2).pointee.red = false
            } else if !successorRed {
                rebalance = p
            }
            t.node(successor).pointee.parent = zp
            t.node(successor).pointee.red = zRed
            from = successor
        }
        t.propagate(from: from, to: -1)
        if rebalance >= 0 { Self.eraseFixup(t, rebalance, root: &root) }
        self.root = root
    }

    /// Restores the colours after erasing a black leaf below `start`
    /// (`____rb_erase_color`).
    @inline(__always)
    private static func eraseFixup(_ t: RBLinks<A>, _ start: Int32, root: inout Int32) {
        var n: Int32 = -1, p = start
        while true {
            var sibling = t.right(p)
            if n != sibling {
                if t.isRed(sibling) {
                    t.node(sibling).pointee.red = false
                    t.node(p).pointee.red = true
                    t.rotateLeft(p, root: &root)
                    sibling = t.right(p)
                }
                if !t.isRed(t.right(sibling)) {
                    if !t.isRed(t.left(sibling)) {
                        t.node(sibling).pointee.red = true
                        if t.node(p).pointee.red {
                            t.node(p).pointee.red = false
                            return
                        }
                        n = p
                        p = t.parent(n)
                        if p < 0 { return }
                        continue
                    }
                    t.node(t.left(sibling)).pointee.red = false
                    t.node(sibling).pointee.red = true
                    t.rotateRight(sibling, root: &root)
                    sibling = t.right(p)
                }
                t.node(sibling).pointee.red = t.node(p).pointee.red
                t.node(p).pointee.red = false
                t.node(t.right(sibling)).pointee.red = false
                t.rotateLeft(p, root: &root)
                return
            } else {
                sibling = t.left(p)
                if t.isRed(sibling) {
                    t.node(sibling).pointee.red = false
                    t.node(p).pointee.red = true
                    t.rotateRight(p, root: &root)
                    sibling = t.left(p)
                }
                if !t.isRed(t.left(sibling)) {
                    if !t.isRed(t.right(sibling)) {
                        t.node(sibling).pointee.red = true
                        if t.node(p).pointee.red {
                            t.node(p).pointee.red = false
                            return
                        }
                        n = p
                        p = t.parent(n)
                        if p < 0 { return }
                        continue
                    }
                    t.node(t.right(sibling)).pointee.red = false
                    t.node(sibling).pointee.red = true
                    t.rotateLeft(sibling, root: &root)
                    sibling = t.left(p)
                }
                t.node(sibling).pointee.red = t.node(p).pointee.red
                t.node(p).pointee.red = false
                t.node(t.left(sibling)).pointee.red = false
                t.rotateRight(p, root: &root)
                return
            }
        }
    }

    // MARK: Checks

    /// The red-black properties, parent links and augmented values hold
    /// (for `kernel.debug.check`); the number of nodes, or nil.
    func validate() -> Int? {
        let t = links
        var count = 0
        func check(_ n: Int32, _ p: Int32) -> Int? {
            guard n >= 0 else { return 1 }
            count += 1
            guard t.parent(n) == p, count < Int(Int32.max) else { return nil }
            if t.isRed(n), t.isRed(t.left(n)) || t.isRed(t.right(n)) { return nil }
            guard let l = check(t.left(n), n), let r = check(t.right(n), n), l == r else { return nil }
            if t.update(n) { return nil }
            return l + (t.isRed(n) ? 0 : 1)
        }
        if t.isRed(root) { return nil }
        return check(root, -1).map { _ in count }
    }
}
