/// Reclaim, as mm/vmscan.c does it for a machine without an LRU: mmlab has
/// no page cache and no swap, so what reclaim can free is what the
/// shrinkers give back (`shrink_slab`) and the Lua garbage the collector
/// finds. Pages freed while reclaiming count as reclaimed, as slab pages
/// do (`mm_account_reclaimed_pages`).
extension PageAllocator {
    /// `SWAP_CLUSTER_MAX`: what direct reclaim tries to free before it stops.
    static let reclaimTarget = 32

    /// `shrink_slab`: every shrinker once at `priority`, in registration
    /// order (`do_shrink_slab`). Returns the objects freed.
    @discardableResult
    func shrinkSlab(priority: Int) -> Int {
        var freed = 0
        for entry in shrinkers {
            entry.running += 1
            let freeable = entry.shrinker.countObjects()
            let pass = ShrinkPass.run(freeable: freeable == SHRINK_EMPTY ? 0 : freeable, deferred: entry.deferred,
                                      priority: priority, seeks: entry.shrinker.seeks) { entry.shrinker.scanObjects($0) }
            entry.running -= 1
            entry.deferred = pass.deferred
            guard !pass.empty else { continue }
            events.slabsScanned &+= UInt64(pass.scanned)
            freed += pass.freed
            trace?.emit(.instant, "shrink_slab", category: "memory", track: .task(currentTask?() ?? 0),
                        args: [.init("shrinker", "\(entry.shrinker)"), .init("priority", priority),
                               .init("scanned", pass.scanned), .init("freed", pass.freed)])
        }
        return freed
    }

    /// Runs `body` as reclaim (`PF_MEMALLOC`); the pages freed meanwhile.
    func reclaim(_ body: () -> Void) -> Int {
        let before = events.pgfree
        reclaiming = true
        body()
        reclaiming = false
        return Int(events.pgfree &- before)
    }

    /// `try_to_free_pages` (`do_try_to_free_pages`): `shrink_slab` from
    /// `DEF_PRIORITY` down to 0 until `SWAP_CLUSTER_MAX` pages are freed,
    /// then the collector if that was not enough. Counts an allocation
    /// stall for the highest zone the allocation could use. The pages
    /// freed: its progress.
    func directReclaim(_ gfp: Gfp, order: Int) -> Int {
        let zone = gfp.contains(.movable) ? 2 : highestZone(gfp)
        events.allocstall[zone] &+= 1
        let task = currentTask?() ?? 0
        trace?.emit(.begin, "direct reclaim", category: "memory", track: .task(task), args: [.init("order", order)])
        let freed = reclaim {
            var reclaimed = 0
            for priority in stride(from: DEF_PRIORITY, through: 0, by: -1) {
                let before = events.pgfree
                shrinkSlab(priority: priority)
                reclaimed += Int(events.pgfree &- before)
                if reclaimed >= PageAllocator.reclaimTarget { break }
            }
            if reclaimed < PageAllocator.reclaimTarget, let collector { collector() }
        }
        if freed > 0 { kswapd.failures = 0 }
        trace?.emit(.end, "direct reclaim", category: "memory", track: .task(task), args: [.init("freed", freed)])
        return freed
    }

    /// `pgdat_balanced`: some zone up to `highestZone` has more than its
    /// high watermark free, with room for a block of `order`.
    func balanced(order: Int, highestZone: Int) -> Bool {
        zones.prefix(highestZone + 1).contains { zone in
            zone.managedPages > 0 && zone.watermarkOk(order: order, mark: zone.watermark.high, highestZone: highestZone,
                                                      flags: [], free: Int64(zone.freePages))
        }
    }

    /// `wakeup_kswapd`: records the order and zone kswapd must balance
    /// for, and wakes it if it sleeps and the node is neither balanced
    /// already nor given up (`MAX_RECLAIM_RETRIES` runs without progress).
    func wakeKswapd(order: Int, highestZone: Int, gfp: Gfp) {
        if kswapd.highestZone.map({ $0 < highestZone }) ?? true { kswapd.highestZone = highestZone }
        kswapd.order = max(kswapd.order, order)
        if kswapd.task == nil {
            guard let spawnKswapd else { return }
            spawnKswapd()  // kswapd0 starts on the first wake-up: its task is woken by being spawned
            kswapd.wakeups += 1
            return
        }
        guard !kswapd.queue.entries.isEmpty else { return }  // waitqueue_active: it is awake
        guard kswapd.failures < MAX_RECLAIM_RETRIES, !balanced(order: order, highestZone: highestZone) else { return }
        kswapd.wakeups += 1
        trace?.emit(.instant, "wakeup_kswapd", category: "memory", track: .machine, args: [.init("order", order)])
        wakeUp?(kswapd.queue)
    }

    /// `balance_pgdat`: `shrink_slab` from `DEF_PRIORITY` down to 1 until
    /// a zone is balanced. A run that frees nothing counts a failure.
    func balancePgdat(order: Int, highestZone: Int) {
        events.pageoutrun &+= 1
        for zone in zones.prefix(highestZone + 1) { zone.reclaimActive = true }  // set_reclaim_active
        defer { for zone in zones { zone.reclaimActive = false } }
        let freed = reclaim {
            var priority = DEF_PRIORITY
            while priority >= 1 {
                if balanced(order: order, highestZone: highestZone) { return }
                shrinkSlab(priority: priority)
                priority -= 1
            }
            if !balanced(order: order, highestZone: highestZone), let collector { collector() }
        }
        if freed == 0 && !balanced(order: order, highestZone: highestZone) { kswapd.failures += 1 }
        if freed > 0 { kswapd.failures = 0 }
    }

    /// One turn of `kswapd()`'s loop, each time its task runs: after a
    /// wake-up it balances the node (`balance_pgdat`), then tries to
    /// sleep (`kswapd_try_to_sleep`). Balanced (or given up), it naps
    /// briefly on its wait queue first (the kernel's `HZ/10`; here until
    /// it next runs): woken during the nap it works again at once
    /// (`kswapd_low_wmark_hit_quickly`), and unbalanced after it too
    /// (`kswapd_high_wmark_hit_quickly`); else it sleeps until woken.
    public func kswapdTurn() -> Kswapd.Next {
        guard let task = kswapd.task else { return .sleep }
        while true {
            switch kswapd.phase {
            case .sleeping:
                kswapd.phase = .working
            case .working:
                let order = kswapd.order, highest = kswapd.highestZone ?? zones.count - 1
                kswapd.order = 0
                kswapd.highestZone = nil
                balancePgdat(order: order, highestZone: highest)
                kswapd.queue.prepareToWait(task)
                kswapd.balancedFor = (order, highest)
                if kswapd.failures >= MAX_RECLAIM_RETRIES || balanced(order: order, highestZone: highest) {
                    kswapd.phase = .napping
                    return .nap
                }
                events.kswapdHighWmarkHitQuickly &+= 1
                kswapd.queue.finishWait(task)
                return .nap  // cond_resched before the next run
            case .napping:
                let (order, highest) = kswapd.balancedFor
                let woken = !kswapd.queue.isQueued(task)
                if !woken, kswapd.failures >= MAX_RECLAIM_RETRIES || balanced(order: order, highestZone: highest) {
                    kswapd.phase = .sleeping
                    trace?.emit(.instant, "kswapd sleep", category: "memory", track: .task(task.id))
                    return .sleep
                }
                if woken { events.kswapdLowWmarkHitQuickly &+= 1 } else { events.kswapdHighWmarkHitQuickly &+= 1 }
                kswapd.queue.finishWait(task)
                kswapd.phase = .working
            }
        }
    }
}

/// kswapd's state (`pgdat->kswapd_*`): what it was woken for, its wait
/// queue and its task, `kswapd0`.
public final class Kswapd {
    /// `kswapd_order`, `kswapd_highest_zoneidx` (nil: `MAX_NR_ZONES`, none asked).
    public internal(set) var order = 0
    public internal(set) var highestZone: Int?
    /// `kswapd_failures`: runs in a row that freed nothing.
    public internal(set) var failures = 0
    /// Wake-ups, the first (which starts it) included.
    public internal(set) var wakeups = 0
    /// `kswapd_wait`.
    public internal(set) var queue = WaitQueueHead(id: 0, name: "kswapd_wait", site: .unknown)
    /// Its task, once started.
    public var task: Task?
    var phase = Phase.working
    var balancedFor = (0, 0)

    enum Phase { case working, napping, sleeping }

    /// What its task does after a turn: yield its CPU (a nap, or
    /// `cond_resched`) or sleep on `queue` until woken.
    public enum Next { case nap, sleep }
}
