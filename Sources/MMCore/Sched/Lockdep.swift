/// The lock validator (kernel/locking/lockdep.c): records which locks are
/// taken while which are held, and reports an acquisition that would close
/// a cycle ("possible circular locking dependency") even when this run
/// does not deadlock. Each lock is its own class.
public final class Lockdep {
    /// `a -> b`: `b` was taken while `a` was held.
    struct Dependency {
        let from: Lock, to: Lock
        let task: String
        let fromSite: Site, toSite: Site
    }

    private var after: [ObjectIdentifier: [Dependency]] = [:]

    /// Checks and records `task` taking `lock` while it holds what it holds.
    func acquire(_ lock: Lock, by task: Task, site: Site, trylock: Bool, sites: SiteTable) throws(KernelError) {
        for held in task.held {
            if held.lock === lock {
                throw .bug("possible recursive locking detected: task '\(task.name)' is trying to acquire \(lock) at \(sites.name(site)), which it already holds (locked at \(sites.name(held.site)))")
            }
        }
        // A trylock cannot wait, so it adds no dependency into `lock`.
        if trylock { return }
        for held in task.held {
            if let chain = path(from: lock, to: held.lock) {
                var lines = [
                    "possible circular locking dependency: task '\(task.name)' is trying to acquire \(lock) at \(sites.name(site)) while holding \(held.lock) (locked at \(sites.name(held.site)));",
                    "the existing dependency chain (in reverse order) is:",
                ]
                for d in chain.reversed() {
                    lines.append("  \(d.to) taken at \(sites.name(d.toSite)) by task '\(d.task)' while holding \(d.from) (locked at \(sites.name(d.fromSite)))")
                }
                throw .bug(lines.joined(separator: "\n"))
            }
        }
        for held in task.held where !(after[ObjectIdentifier(held.lock)] ?? []).contains(where: { $0.to === lock }) {
            after[ObjectIdentifier(held.lock), default: []].append(
                Dependency(from: held.lock, to: lock, task: task.name, fromSite: held.site, toSite: site))
        }
    }

    /// The dependencies leading from `start` to `target`, if any.
    private func path(from start: Lock, to target: Lock) -> [Dependency]? {
        var seen: Set<ObjectIdentifier> = [ObjectIdentifier(start)]
        var frontier: [(Lock, [Dependency])] = [(start, [])]
        while !frontier.isEmpty {
            let (lock, chain) = frontier.removeFirst()
            for d in after[ObjectIdentifier(lock)] ?? [] {
                if d.to === target { return chain + [d] }
                if seen.insert(ObjectIdentifier(d.to)).inserted { frontier.append((d.to, chain + [d])) }
            }
        }
        return nil
    }

    /// Dependencies recorded.
    public var count: Int { after.values.reduce(0) { $0 + $1.count } }
}
