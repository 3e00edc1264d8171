/// Reclaims memory on request, as a shrinker does (`struct shrinker`,
/// mm/shrinker.c): Binder's LRU registers one, and scripts theirs.
public protocol Shrinker: AnyObject {
    /// Objects it could free now (`count_objects`); 0 or `SHRINK_EMPTY`: none.
    func countObjects() -> Int
    /// Frees up to `n` of them (`scan_objects`): how many it freed, or
    /// `SHRINK_STOP` when it cannot go on now (a lock it must not wait for).
    func scanObjects(_ n: Int) -> Int
    /// `seeks`: the cost of making an object again (`DEFAULT_SEEKS` 2);
    /// 0 trims half the objects at any priority.
    var seeks: Int { get }
}

/// `SHRINK_STOP` (`~0UL`): a scan that cannot make progress now.
public let SHRINK_STOP = -1
/// `SHRINK_EMPTY` (`~0UL - 1`): a count with nothing to free.
public let SHRINK_EMPTY = -2
/// `SHRINK_BATCH`: objects a scan is asked for at once.
public let SHRINK_BATCH = 128
/// `DEF_PRIORITY`: reclaim scans `1 >> priority` of everything, from 12 down.
public let DEF_PRIORITY = 12

/// A registered shrinker and the scan work it still owes (`nr_deferred`).
final class RegisteredShrinker {
    let shrinker: Shrinker
    var deferred = 0
    /// A scan or count of it is running: unregistering now would wait for
    /// that (`shrinker_free`'s synchronize_srcu), from inside it.
    var running = 0
    init(_ shrinker: Shrinker) { self.shrinker = shrinker }
}

/// One shrinker's pass, as `do_shrink_slab` makes it: what it freed and
/// scanned, the scan calls it made and the work it defers.
public struct ShrinkPass: Equatable, Sendable {
    public var freed = 0
    public var scanned = 0
    public var calls: [Int] = []
    public var deferred = 0
    /// `count_objects` said nothing is freeable: no pass was made.
    public var empty = false

    /// `do_shrink_slab`: the scan target is `freeable >> priority`, times 4
    /// over `seeks` (half of everything with seeks 0), plus the deferred
    /// work `>> priority`, at most twice what is freeable. Scans go in
    /// batches of `batch` while at least a batch is left, or all of it when
    /// the target reaches what is freeable; `SHRINK_STOP` ends them. Work
    /// not done is deferred to the next pass, at most twice `freeable`.
    public static func run(freeable: Int, deferred nr: Int, priority: Int, seeks: Int, batch: Int = SHRINK_BATCH,
                           scan: (Int) -> Int) -> ShrinkPass {
        var pass = ShrinkPass()
        guard freeable > 0 else {
            pass.empty = true
            pass.deferred = nr
            return pass
        }
        let delta = seeks > 0 ? (freeable >> priority) * 4 / seeks : freeable / 2
        var total = min((nr >> priority) + delta, 2 * freeable)
        while total >= batch || total >= freeable {
            let n = min(batch, total)
            let freed = scan(n)
            if freed == SHRINK_STOP { break }
            pass.calls.append(n)
            pass.freed += max(freed, 0)
            total -= n
            pass.scanned += n
        }
        pass.deferred = min(max(nr + delta - pass.scanned, 0), 2 * freeable)
        return pass
    }
}
