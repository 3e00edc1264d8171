import Testing
@testable import MMCore

/// A shrinker over pages it holds: each object is a page.
final class PageCache: Shrinker {
    var held: [Page] = []
    var scans: [Int] = []
    var seeks = 2
    var stop = false
    func countObjects() -> Int { held.count }
    func scanObjects(_ n: Int) -> Int {
        scans.append(n)
        if stop { return SHRINK_STOP }
        let freed = held.prefix(n)
        for page in freed { try? page.free() }  // the test's own pages: freeing one cannot fail
        held.removeFirst(freed.count)
        return freed.count
    }
}

@Suite("Watermark checks and alloc flags (mm/page_alloc.c)")
struct AllocFlagsTests {
    @Test("gfp_to_alloc_flags: __GFP_HIGH is ALLOC_MIN_RESERVE, no direct reclaim ALLOC_NON_BLOCK, high order with both ALLOC_HIGHATOMIC")
    func flags() {
        #expect(AllocFlags(gfp: .kernel, order: 0) == [.wmarkMin, .cpuset, .kswapd])
        #expect(AllocFlags(gfp: .atomic, order: 0) == [.minReserve, .kswapd, .nonBlock])
        #expect(AllocFlags(gfp: .atomic, order: 1) == [.minReserve, .kswapd, .nonBlock, .highatomic])
        #expect(AllocFlags(gfp: .nowait, order: 0) == [.kswapd, .nonBlock, .cpuset])
        #expect(AllocFlags(gfp: [.kernel, .high], order: 3) == [.cpuset, .kswapd, .minReserve])
        #expect(AllocFlags(gfp: [], order: 0) == [.cpuset, .nonBlock])
        #expect(AllocFlags.wmarkHigh.watermark == 2 && AllocFlags.wmarkLow.watermark == 1 && AllocFlags.wmarkMin.watermark == 0)
    }

    @Test("__zone_watermark_ok: above min; __GFP_HIGH half of it; non-blocking a quarter of that more; OOM victims half again; plus the lowmem reserve")
    func watermarkOk() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20))  // min 128
        let zone = machine.pageAllocator.zones[0]
        #expect(zone.watermark.min == 128)
        func ok(_ flags: AllocFlags, _ free: Int64, order: Int = 0) -> Bool {
            zone.watermarkOk(order: order, mark: 128, highestZone: 0, flags: flags, free: free)
        }
        #expect(!ok([], 128) && ok([], 129))
        #expect(!ok(.minReserve, 64) && ok(.minReserve, 65))
        #expect(!ok([.minReserve, .nonBlock], 48) && ok([.minReserve, .nonBlock], 49))
        #expect(!ok(.nonBlock, 128), "GFP_NOWAIT: no reserve without __GFP_HIGH")
        #expect(!ok(.oom, 64) && ok(.oom, 65))
        #expect(!ok([.minReserve, .oom], 32) && ok([.minReserve, .oom], 33))
        #expect(!ok([], 129, order: 1) && ok([], 130, order: 1), "an order-1 block needs its second page above the mark")
        #expect(zone.nrFree(1...MAX_ORDER) > 0, "and a free block, which a machine just booted has")
    }

    @Test("lowmem_reserve: a HighMem-capable allocation leaves Normal's reserve alone")
    func lowmemReserve() throws {
        let machine = try Machine(MachineConfig(memory: 64 << 20, highmem: 32 << 20))
        let normal = machine.pageAllocator.zones[0]
        #expect(normal.lowmemReserve == [0, 256], "8192 HighMem pages / 32")
        let free = Int64(normal.watermark.min) + 1
        #expect(normal.watermarkOk(order: 0, mark: normal.watermark.min, highestZone: 0, flags: [], free: free))
        #expect(!normal.watermarkOk(order: 0, mark: normal.watermark.min, highestZone: 1, flags: [], free: free))
        #expect(normal.watermarkOk(order: 0, mark: normal.watermark.min, highestZone: 1, flags: [], free: free + 256))
    }
}

extension Zone {
    /// Free blocks of any of `orders`.
    func nrFree(_ orders: ClosedRange<Int>) -> Int { orders.reduce(0) { $0 + nrFree($1) } }
}

@Suite("do_shrink_slab (mm/shrinker.c)")
struct ShrinkSlabTests {
    @Test("nothing below a batch: the work is deferred, and reaches a batch at a lower priority", arguments: [
        // freeable, seeks, priority, deferred in -> calls, deferred out
        (1958, 2, 12, 0, [Int](), 0),
        (1958, 2, 10, 0, [], 2),
        (1958, 2, 5, 112, [], 234),
        (1958, 2, 4, 234, [128, 128], 222),
        (100, 2, 12, 0, [], 0),
        (100, 2, 0, 0, [128], 72),  // a target (200) above what is freeable scans though less than a batch is left
        (50_000, 2, 12, 0, [], 24),
        (600, 0, 12, 0, [128, 128], 44),  // seeks 0: half of everything at any priority
        // At most twice what is freeable; the 80 left are less than a batch and than freeable.
        (1000, 2, 0, 5000, [Int](repeating: 128, count: 15), 5000 + 2000 - 1920),
    ])
    func pass(freeable: Int, seeks: Int, priority: Int, deferred: Int, calls: [Int], left: Int) {
        let pass = ShrinkPass.run(freeable: freeable, deferred: deferred, priority: priority, seeks: seeks) { $0 }
        #expect(pass.calls == calls)
        #expect(pass.scanned == calls.reduce(0, +))
        #expect(pass.deferred == min(left, 2 * freeable))
    }

    @Test("SHRINK_STOP ends the pass; what it did not scan is deferred")
    func stop() {
        var n = 0
        let pass = ShrinkPass.run(freeable: 1000, deferred: 0, priority: 0, seeks: 2) { _ in
            n += 1
            return n == 1 ? 128 : SHRINK_STOP
        }
        #expect(pass.calls == [128] && pass.freed == 128)
        #expect(pass.deferred == 2000 - 128)
    }

    @Test("count 0 makes no pass and keeps the deferred work")
    func empty() {
        let pass = ShrinkPass.run(freeable: 0, deferred: 77, priority: 3, seeks: 2) { _ in Issue.record("scanned"); return 0 }
        #expect(pass.empty && pass.deferred == 77)
    }

    @Test("shrink_slab carries each shrinker's deferred work from pass to pass; a shrinker dropped inside its scan is a bug")
    func deferredAcrossPasses() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20))
        let allocator = machine.pageAllocator
        let cache = PageCache()
        for _ in 0..<1958 { cache.held.append(try Page.allocPage(machine, .kernel)) }
        try allocator.register(cache)
        for priority in stride(from: 12, through: 5, by: -1) { allocator.shrinkSlab(priority: priority) }
        #expect(cache.scans == [])
        #expect(allocator.shrinkers[0].deferred == 234)
        allocator.shrinkSlab(priority: 4)
        #expect(cache.scans == [128, 128])
        #expect(allocator.events.slabsScanned == 256)
        allocator.shrinkers[0].running = 1  // as inside its own scan
        #expect(throws: KernelError.bug("shrinker_free of \(cache) from inside its own count or scan: it waits for that call to return, which never happens")) {
            try allocator.unregister(cache)
        }
        allocator.shrinkers[0].running = 0
        try allocator.unregister(cache)
        for page in cache.held { try page.free() }
    }
}

@Suite("The slow path (__alloc_pages_slowpath)")
struct SlowPathTests {
    /// 16M: min 128, low 160, high 192; no kswapd task.
    func machine() throws -> Machine { try Machine(MachineConfig(memory: 16 << 20, cpus: 1)) }

    /// Allocates order-0 pages with `gfp` until one fails.
    func fill(_ machine: Machine, _ gfp: Gfp) -> [Page] {
        var held: [Page] = []
        while let page = try? Page.allocPage(machine, gfp) { held.append(page) }  // the failure ends the fill
        return held
    }

    @Test("which flags succeed at which free level: NOWAIT and KERNEL stop at min, __GFP_HIGH at half of it, ATOMIC below that")
    func levels() throws {
        let machine = try machine()
        let allocator = machine.pageAllocator
        // Each fill stops at the first allocation that finds the buddy
        // pages (the per-CPU lists left out) at its mark; a refill before
        // it may have taken a batch below.
        var held = fill(machine, [])
        #expect(allocator.freePages <= 128 && allocator.freePages > 64)
        held += fill(machine, .nowait)
        #expect(allocator.freePages <= 128 && allocator.freePages > 64, "GFP_NOWAIT: no reserve")
        held += fill(machine, [.high, .kswapdReclaim, .directReclaim, .io, .fs, .noretry])
        #expect(allocator.freePages <= 64 && allocator.freePages > 48, "__GFP_HIGH: half the min reserve")
        held += fill(machine, .atomic)
        #expect(allocator.freePages <= 48 && allocator.freePages > 16, "GFP_ATOMIC: a quarter of that more")
        #expect(allocator.events.allocstall[0] >= 1)
        for page in held { try page.free() }
    }

    @Test("a costly order gives up after one reclaim; __GFP_NORETRY reclaims once; neither calls the OOM killer")
    func costly() throws {
        var config = MachineConfig(memory: 16 << 20, cpus: 1)
        config.minFreeKbytes = 0
        let machine = try Machine(config)
        let allocator = machine.pageAllocator
        var ooms = 0
        allocator.outOfMemory = { _, _ in ooms += 1; return false }
        // Fragment memory: every other page held, no free block above order 0.
        var held = fill(machine, [])
        allocator.drainPages()
        for i in stride(from: 0, to: held.count, by: 2) { try held[i].free() }
        held = stride(from: 1, to: held.count, by: 2).map { held[$0] }
        allocator.drainPages()
        #expect(throws: KernelError.self) { try Page.allocPages(machine, .kernel, order: 4) }
        #expect(allocator.events.allocstall[0] == 1 && ooms == 0)
        #expect(throws: KernelError.self) { try Page.allocPages(machine, [.kernel, .noretry], order: 1) }
        #expect(allocator.events.allocstall[0] == 2 && ooms == 0)
        #expect(throws: KernelError.self) { try Page.allocPages(machine, [.kernel, .retryMayfail], order: 1) }
        #expect(ooms == 0, "__GFP_RETRY_MAYFAIL never kills")
        #expect(throws: KernelError.self) { try Page.allocPages(machine, .kernel, order: 1) }
        #expect(ooms == 1, "order 1 without either: the OOM killer")
        for page in held { try page.free() }
    }

    @Test("__GFP_NOFAIL takes from the reserves rather than fail, then is a bug; above order 1 it warns")
    func nofail() throws {
        let machine = try machine()
        let allocator = machine.pageAllocator
        var warnings: [String] = []
        allocator.onWarning = { warnings.append($0) }
        var held = fill(machine, .kernel)
        #expect(allocator.freePages <= 128)
        held.append(try Page.allocPage(machine, [.kernel, .nofail]))
        held += fill(machine, [.kernel, .nofail])
        #expect(allocator.freePages == 0, "ALLOC_NO_WATERMARKS at last")
        #expect(throws: KernelError.bug("a __GFP_NOFAIL allocation of order 0 cannot be satisfied: nothing is left to reclaim or kill, and the kernel would retry it forever")) {
            try Page.allocPage(machine, [.kernel, .nofail])
        }
        #expect(throws: KernelError.self) { try Page.allocPages(machine, [.kernel, .nofail], order: 2) }
        #expect(warnings == ["__GFP_NOFAIL allocation of order 2: only orders 0 and 1 may not fail (WARN_ON_ONCE(order > 1))"])
        for page in held { try page.free() }
    }

    @Test("the failure names the order, the flags as %pGg prints them, and the zones")
    func message() throws {
        let machine = try machine()
        let held = fill(machine, .nowait)
        let free = machine.pageAllocator.freePages  // at or below min: a refill may have taken a batch past it
        #expect(free <= 128)
        #expect(throws: KernelError(.ENOMEM, "page allocation failure: order:0, mode:0x2800(GFP_NOWAIT) (Normal free:\(free) min:128)")) {
            try Page.allocPage(machine, .nowait)
        }
        #expect(Gfp.highuserMovable.kernelFormat == "0x100cca(GFP_HIGHUSER_MOVABLE)")
        #expect(Gfp([.kernel, .zero, .nofail]).kernelFormat == "0x8dc0(GFP_KERNEL|__GFP_NOFAIL|__GFP_ZERO)")
        #expect(Gfp(rawValue: 0x200_0000).kernelFormat == "0x2000000(0x2000000)")
        for page in held { try page.free() }
    }
}

@Suite("kswapd (mm/vmscan.c)")
struct KswapdTests {
    /// 16M, one CPU, with a kswapd task and a cache of `cached` pages.
    func machine(cached: Int) throws -> (Machine, PageCache) {
        let machine = try Machine(MachineConfig(memory: 16 << 20, cpus: 1))
        let allocator = machine.pageAllocator
        allocator.spawnKswapd = { allocator.kswapd.task = try? machine.scheduler.spawnKernelThread(name: "kswapd0", site: .unknown) }
        let cache = PageCache()
        for _ in 0..<cached { cache.held.append(try Page.allocPage(machine, [])) }
        try allocator.register(cache)
        return (machine, cache)
    }

    /// Allocates without waking kswapd until a zone is at `free` buddy pages.
    func allocate(_ machine: Machine, downTo free: UInt64, gfp: Gfp = .kernel) throws -> [Page] {
        var held: [Page] = []
        let allocator = machine.pageAllocator
        while allocator.freePages + UInt64(allocator.pcpPages) > free { held.append(try Page.allocPage(machine, gfp)) }
        return held
    }

    @Test("woken below low, it balances to high, naps, then sleeps; woken in its nap it works at once; unbalanced after it too")
    func wakeAndSleep() throws {
        let (machine, cache) = try machine(cached: 1000)
        let allocator = machine.pageAllocator
        let kswapd = allocator.kswapd
        var held = try allocate(machine, downTo: 170, gfp: [])
        #expect(kswapd.task == nil, "gfp 0 does not wake it")
        held += try allocate(machine, downTo: 150)
        let task = try #require(kswapd.task, "below low: the first wake-up starts it")
        #expect(task.name == "kswapd0" && task.isKernelThread && kswapd.wakeups == 1)
        #expect(allocator.kswapdTurn() == .nap)
        #expect(allocator.events.pageoutrun == 1)
        #expect(allocator.balanced(order: 0, highestZone: 0), "it reclaimed up to high")
        #expect(!cache.scans.isEmpty)
        #expect(allocator.kswapdTurn() == .sleep, "balanced after its nap: it sleeps")
        #expect(kswapd.queue.isQueued(task))
        // Woken from sleep: a new run.
        held += try allocate(machine, downTo: 150)
        #expect(kswapd.wakeups == 2 && !kswapd.queue.isQueued(task))
        #expect(allocator.kswapdTurn() == .nap)
        #expect(allocator.events.pageoutrun == 2)
        // Woken during its nap: kswapd_low_wmark_hit_quickly, and at work again.
        held += try allocate(machine, downTo: 150)
        #expect(kswapd.wakeups == 3)
        #expect(allocator.kswapdTurn() == .nap)
        #expect(allocator.events.kswapdLowWmarkHitQuickly == 1 && allocator.events.pageoutrun == 3)
        // Unbalanced after its nap, not woken (no wake-up flag): high_wmark_hit_quickly.
        held += try allocate(machine, downTo: 180, gfp: [])
        #expect(allocator.kswapdTurn() == .nap)
        #expect(allocator.events.kswapdHighWmarkHitQuickly == 1 && allocator.events.pageoutrun == 4)
        #expect(allocator.kswapdTurn() == .sleep)
        for page in held + cache.held { try page.free() }
    }

    @Test("a run that frees nothing is a failure; after MAX_RECLAIM_RETRIES of them it sleeps and is not woken")
    func hopeless() throws {
        let (machine, cache) = try machine(cached: 0)
        let allocator = machine.pageAllocator
        let held = try allocate(machine, downTo: 150)
        var turns = 0
        while turns < 40 {
            turns += 1
            if allocator.kswapdTurn() == .sleep { break }
        }
        #expect(allocator.kswapd.failures == MAX_RECLAIM_RETRIES)
        #expect(allocator.events.pageoutrun == UInt64(MAX_RECLAIM_RETRIES))
        #expect(allocator.events.kswapdHighWmarkHitQuickly == UInt64(MAX_RECLAIM_RETRIES - 1))
        #expect(allocator.zoneinfo.contains("\n  node_unreclaimable:  1\n"))
        let wakeups = allocator.kswapd.wakeups
        _ = try Page.allocPage(machine, .kernel).free()
        #expect(allocator.kswapd.wakeups == wakeups, "a hopeless node is left to direct reclaim")
        for page in held + cache.held { try page.free() }
    }
}

@Suite("The OOM killer (mm/oom_kill.c)")
struct OomTests {
    /// 16M with `main` running.
    func machine() throws -> Machine {
        let machine = try Machine(MachineConfig(memory: 16 << 20, cpus: 2))
        machine.scheduler.restartMain()
        _ = machine.scheduler.pickNext()
        return machine
    }

    /// A process: an mm with `pages` anonymous pages touched, and a task using it.
    func process(_ machine: Machine, _ name: String, pages: Int, adj: Int = 0) throws -> (task: Task, mm: MmWithUser) {
        let user = try machine.mmAlloc(site: .unknown)
        let mm = user.mm
        let g = try #require(try mm.mmapLock(write: true, site: .unknown))
        let addr = try mm.mmap(under: g, addr: nil, len: UInt64(pages * PAGE_SIZE), prot: Mmap.PROT_READ | Mmap.PROT_WRITE,
                               flags: Mmap.MAP_PRIVATE | Mmap.MAP_ANONYMOUS)
        try mm.unlock(g)
        for i in 0..<pages { _ = try mm.resolve(addr + UInt64(i * PAGE_SIZE), write: true) }
        return (try machine.scheduler.spawn(name: name, cpu: nil, mm: mm, oomScoreAdj: adj, site: .unknown), user)
    }

    @Test("oom_badness is RSS plus page tables plus oom_score_adj thousandths of memory; oom_score scales it as proc_oom_score")
    func badness() throws {
        let machine = try machine()
        let a = try process(machine, "a", pages: 300)
        let b = try process(machine, "b", pages: 100, adj: 500)
        let c = try process(machine, "c", pages: 800, adj: -1000)
        let tables = a.mm.mm.pageTables  // PGD, PUD, PMD and one PTE table
        #expect(tables == 4)
        #expect(machine.oomBadness(a.task) == 300 + 4)
        #expect(machine.oomBadness(b.task) == 100 + 4 + 500 * (4096 / 1000))
        #expect(machine.oomBadness(c.task) == nil, "OOM_SCORE_ADJ_MIN is never a candidate")
        #expect(machine.oomBadness(machine.scheduler.main) == nil, "main has no mm")
        #expect(machine.oomScore(a.task) == (1000 + 304 * 1000 / 4096) * 2 / 3)
        #expect(machine.oomScore(c.task) == 0)
        #expect(machine.oomVictim() === b.task, "oom_score_adj 500 outweighs 200 more pages")
        #expect(throws: KernelError(.EINVAL, "oom_score_adj 1001 is outside -1000 ... 1000")) {
            try machine.scheduler.spawn(name: "x", cpu: nil, oomScoreAdj: 1001, site: .unknown)
        }
        for p in [a, b, c] { machine.scheduler.finish(p.task, failed: false); try p.mm.release() }
    }

    @Test("a tie goes to the process created later, as select_bad_process's `points < chosen_points` skips only smaller ones")
    func tie() throws {
        let machine = try machine()
        let first = try process(machine, "first", pages: 50)
        let second = try process(machine, "second", pages: 50)
        #expect(machine.oomVictim() === second.task)
        for p in [first, second] { machine.scheduler.finish(p.task, failed: false); try p.mm.release() }
    }

    @Test("the kill: every task of the mm is killed, the reaper frees its private memory though main still holds mm_users; the report reads as the kernel's")
    func kill() throws {
        let machine = try machine()
        var log: [String] = []
        machine.pageAllocator.onLog = { log.append($0) }
        let hog = try process(machine, "hog", pages: 500)
        let thread = try machine.scheduler.spawn(name: "hog-thread", cpu: nil, mm: hog.mm.mm, site: .unknown)
        let free = machine.pageAllocator.freePages + UInt64(machine.pageAllocator.pcpPages)
        #expect(machine.outOfMemory(.kernel, order: 0))
        #expect(hog.task.oomKilled && thread.oomKilled)
        #expect(machine.pageAllocator.events.oomKill == 1)
        #expect(machine.pageAllocator.freePages + UInt64(machine.pageAllocator.pcpPages) == free + 500, "reaped while main holds a user")
        #expect(hog.mm.mm.users == 3 && hog.mm.mm.oomSkip)
        #expect(log.first == "main invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0")
        #expect(log.contains("Out of memory: Killed process 2 (hog) total-vm:2000kB, anon-rss:2000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:16kB oom_score_adj:0"))
        #expect(log.last == "oom_reaper: reaped process 2 (hog), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB")
        #expect(machine.oomVictim() == nil, "a reaped mm is skipped (MMF_OOM_SKIP)")
        log = []
        #expect(!machine.outOfMemory(.kernel, order: 0))
        #expect(log.last == "Out of memory and no killable processes...")
        #expect(!machine.outOfMemory(.nofs, order: 0), "without __GFP_FS it kills nothing")
        for task in [hog.task, thread] { machine.scheduler.finish(task, failed: false, killed: true) }
        #expect(hog.task.state == .killed)
        try hog.mm.release()
    }

    @Test("an mm whose mmap lock is held for writing is killed but not reaped")
    func unreapable() throws {
        let machine = try machine()
        var log: [String] = []
        machine.pageAllocator.onLog = { log.append($0) }
        let hog = try process(machine, "hog", pages: 100)
        let g = try #require(try hog.mm.mm.mmapLock(write: true, site: .unknown))
        #expect(machine.outOfMemory(.kernel, order: 0))
        #expect(log.last == "oom_reaper: unable to reap pid:2 (hog)")
        #expect(machine.counters(hog.mm.mm).anon == 100)
        try hog.mm.mm.unlock(g)
        machine.scheduler.finish(hog.task, failed: false, killed: true)
        try hog.mm.release()
    }
}
