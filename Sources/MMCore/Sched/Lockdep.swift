/// A lock class (`struct lock_class`): what lockdep's rules are about. A
/// lock's class is its initialisation site, as the `lock_class_key` that
/// `mutex_init` and `spin_lock_init` declare per call site, or a key named
/// explicitly; every mm's mmap lock is the class `mmap_lock`.
public final class LockClass: CustomStringConvertible {
    public let id: Int
    /// What reports call it: the class named, or the site of the locks'
    /// initialisation.
    public let name: String

    init(id: Int, name: String) {
        self.id = id
        self.name = name
    }

    public var description: String { name }
}

/// A lock a task holds (`struct held_lock`): the lock, where it was taken,
/// and the subclass it was taken with (`*_nested`).
public struct HeldLock {
    public let lock: Lock
    public let site: Site
    public let subclass: Int
}

/// The lock validator (kernel/locking/lockdep.c). It works on classes, not
/// instances: it records which classes are taken while which are held and
/// reports an acquisition that would close a cycle ("possible circular
/// locking dependency detected") even when this run does not deadlock and
/// the instances differ, and the taking of a second lock of a class
/// already held ("possible recursive locking detected") unless the two are
/// taken with different subclasses, as `mutex_lock_nested` allows. A
/// subclass is a class of its own for the dependencies (`(&a->lock/1)`).
public final class Lockdep {
    /// `MAX_LOCKDEP_SUBCLASSES`.
    public static let maxSubclasses = 8

    /// A node of the dependency graph: a class and subclass.
    struct Node: Hashable {
        let cls: Int
        let subclass: Int
    }

    /// `a -> b`: `b` was taken while `a` was held.
    struct Dependency {
        let to: Node
        let fromLock: String, toLock: String
        let task: String
        let fromSite: Site, toSite: Site
    }

    private var classes: [String: LockClass] = [:]
    private var classNames: [Int: String] = [:]
    private var after: [Node: [Dependency]] = [:]

    /// The class keyed `key` (a site's or a name), created on first use
    /// and called `name` in reports.
    func lockClass(key: String, name: String) -> LockClass {
        if let cls = classes[key] { return cls }
        let cls = LockClass(id: classes.count + 1, name: name)
        classes[key] = cls
        classNames[cls.id] = name
        return cls
    }

    private func node(_ lock: Lock, _ subclass: Int) -> Node { Node(cls: lock.lockClass.id, subclass: subclass) }

    /// `(class x.lua:3)`, `(class mmap_lock/1)`: a class and subclass, as
    /// lockdep prints them.
    private func name(_ node: Node) -> String {
        "(class \(classNames[node.cls] ?? "?")\(node.subclass == 0 ? "" : "/\(node.subclass)"))"
    }

    /// Checks and records `task` taking `lock` with `subclass` while it
    /// holds what it holds (`__lock_acquire`). A trylock is neither checked
    /// nor recorded: it cannot wait, so it can be taken in any order
    /// (`validate_chain` skips it).
    func acquire(_ lock: Lock, subclass: Int = 0, by task: Task, site: Site, trylock: Bool,
                 sites: SiteTable) throws(KernelError) {
        if trylock { return }
        guard (0..<Lockdep.maxSubclasses).contains(subclass) else {
            throw .bug("looking up invalid subclass: \(subclass) (lockdep has \(Lockdep.maxSubclasses), 0 to \(Lockdep.maxSubclasses - 1)) for \(lock) at \(sites.name(site))")
        }
        let next = node(lock, subclass)
        // check_deadlock: the same instance again deadlocks whatever the
        // subclass; another lock of the same class and subclass may.
        for held in task.held {
            if held.lock === lock {
                throw .bug("possible recursive locking detected: task '\(task.name)' is trying to acquire \(lock) at \(sites.name(site)), which it already holds (locked at \(sites.name(held.site)))")
            }
            if node(held.lock, held.subclass) == next {
                throw .bug("possible recursive locking detected: task '\(task.name)' is trying to acquire \(lock) \(name(next)) at \(sites.name(site)) and already holds \(held.lock) \(name(next)), locked at \(sites.name(held.site)); may be due to missing lock nesting notation: take the second one with a subclass (lock_nested), or give the locks classes of their own ({class=}; locks created on one line share one)")
            }
        }
        // check_prevs_add: a path from the new lock to one held closes a cycle.
        for held in task.held {
            let prev = node(held.lock, held.subclass)
            guard let chain = path(from: next, to: prev) else { continue }
            var lines = [
                "possible circular locking dependency detected: task '\(task.name)' is trying to acquire \(lock) \(name(next)) at \(sites.name(site)) while holding \(held.lock) \(name(prev)), locked at \(sites.name(held.site)); which lock already depends on the new lock.",
                "the existing dependency chain (in reverse order) is:",
            ]
            for (i, d) in chain.reversed().enumerated() {
                lines.append("-> #\(chain.count - i) \(name(d.to)): \(d.toLock) taken at \(sites.name(d.toSite)) by task '\(d.task)' while holding \(d.fromLock), locked at \(sites.name(d.fromSite))")
            }
            lines.append("-> #0 \(name(next)): \(lock) taken at \(sites.name(site)) by task '\(task.name)'")
            throw .bug(lines.joined(separator: "\n"))
        }
        for held in task.held {
            let prev = node(held.lock, held.subclass)
            guard !(after[prev] ?? []).contains(where: { $0.to == next }) else { continue }
            after[prev, default: []].append(Dependency(to: next, fromLock: "\(held.lock)", toLock: "\(lock)", task: task.name,
                                                       fromSite: held.site, toSite: site))
        }
    }

    /// The dependencies leading from `start` to `target`, if any: the
    /// shortest, as lockdep's breadth-first search finds.
    private func path(from start: Node, to target: Node) -> [Dependency]? {
        var seen: Set<Node> = [start]
        var frontier: [(Node, [Dependency])] = [(start, [])]
        var i = 0
        while i < frontier.count {
            let (node, chain) = frontier[i]
            i += 1
            for d in after[node] ?? [] {
                if d.to == target { return chain + [d] }
                if seen.insert(d.to).inserted { frontier.append((d.to, chain + [d])) }
            }
        }
        return nil
    }

    /// Dependencies recorded.
    public var count: Int { after.values.reduce(0) { $0 + $1.count } }
}
