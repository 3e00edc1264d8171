/// The OOM killer (mm/oom_kill.c): when reclaim cannot free memory for an
/// allocation of order ≤ 3, it picks the process whose death frees the
/// most (`oom_badness`), kills every task using its mm, and the OOM reaper
/// unmaps the victim's private memory at once, even while others still
/// hold `mm_users`. A process is an mm and the tasks that use it; tasks
/// without an mm are kernel threads, which it never kills, and neither is
/// `main` (init).
extension Machine {
    /// `oom_score_adj`'s bounds: -1000 (`OOM_SCORE_ADJ_MIN`) is never killed.
    public static let oomScoreAdjRange = -1000...1000

    /// An mm's counters in pages (`get_mm_counter`, `total_vm`, `mm_pgtables_bytes`).
    struct MmCounters {
        var totalVm = 0, anon = 0, file = 0, shmem = 0, pgtables = 0
        var rss: Int { anon + file + shmem }
    }

    func counters(_ mm: MmStruct) -> MmCounters {
        var c = MmCounters(pgtables: mm.pageTables)
        for vma in mm.vmas {
            c.totalVm += Int((vma.end - vma.start) >> UInt64(PAGE_SHIFT))
            for addr in mm.pageTable.mapped(in: vma.start..<vma.end) {
                guard let pfn = mm.pageTable.lookup(addr)?.pfn, pfn != ZERO_PAGE_PFN else { continue }
                if case .shmem = vma.backing { c.shmem += 1 }
                else if pageAllocator.isAnonymous(pfn) { c.anon += 1 }
                else { c.file += 1 }
            }
        }
        return c
    }

    /// `totalram_pages() + total_swap_pages`.
    var oomTotalPages: Int { Int(pageAllocator.totalPages) }

    /// The first task of each process, in creation order (`for_each_process`).
    private var processes: [Task] {
        var seen: Set<ObjectIdentifier> = []
        return scheduler.tasks.filter { task in
            guard let mm = task.mm, task !== scheduler.main, !task.isFinished else { return false }
            return seen.insert(ObjectIdentifier(mm)).inserted
        }
    }

    /// `oom_badness`: the process's RSS and page tables, in pages, plus
    /// `oom_score_adj` thousandths of all memory; nil when it is not a
    /// candidate (no mm, `OOM_SCORE_ADJ_MIN`, or reaped already).
    public func oomBadness(_ task: Task) -> Int? {
        guard task !== scheduler.main, let mm = task.mm, !task.isFinished,
              task.oomScoreAdj != Machine.oomScoreAdjRange.lowerBound, !mm.oomSkip else { return nil }
        let c = counters(mm)
        return c.rss + c.pgtables + task.oomScoreAdj * (oomTotalPages / 1000)
    }

    /// `/proc/PID/oom_score` (`proc_oom_score`): the badness scaled into 0 ... 1000.
    public func oomScore(_ task: Task) -> Int {
        guard let badness = oomBadness(task) else { return 0 }
        return max(0, (1000 + badness * 1000 / max(oomTotalPages, 1)) * 2 / 3)
    }

    /// `select_bad_process`: the highest badness; a tie goes to the later process.
    public func oomVictim() -> Task? {
        var chosen: (task: Task, points: Int)?
        for task in processes {
            guard let points = oomBadness(task) else { continue }
            if let chosen, points < chosen.points { continue }
            chosen = (task, points)
        }
        return chosen?.task
    }

    /// `out_of_memory`: a task already killed retries with the OOM
    /// reserves; an allocation without `__GFP_FS` kills nothing (the
    /// kernel has it retry, which mmlab, where nothing else runs meanwhile,
    /// ends with the failure); else the victim dies. True when the
    /// allocation should retry.
    func outOfMemory(_ gfp: Gfp, order: Int) -> Bool {
        let current = scheduler.current
        if current.oomKilled { return true }  // task_will_free_mem(current)
        guard gfp.contains(.fs) else { return false }
        let log: (String) -> Void = { self.pageAllocator.onLog?($0) }
        log("\(current.name) invoked oom-killer: gfp_mask=\(gfp.kernelFormat), order=\(order), oom_score_adj=\(current.oomScoreAdj)")
        dumpTasks(log)
        guard let victim = oomVictim() else {
            log("Out of memory and no killable processes...")
            return false
        }
        oomKill(victim, log)
        return true
    }

    /// `dump_tasks`: a line per process, memory in pages.
    private func dumpTasks(_ log: (String) -> Void) {
        log("Tasks state (memory values in pages):")
        log("[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name")
        for task in processes {
            guard let mm = task.mm else { continue }
            let c = counters(mm)
            func pad(_ v: Int, _ n: Int) -> String { let s = String(v); return String(repeating: " ", count: max(0, n - s.count)) + s }
            log("[\(pad(task.id, 7))] \(pad(0, 5)) \(pad(task.id, 5)) \(pad(c.totalVm, 8)) \(pad(c.rss, 8)) \(pad(c.anon, 8)) \(pad(c.file, 8)) \(pad(c.shmem, 9)) \(pad(c.pgtables * PAGE_SIZE, 8)) \(pad(0, 8))         \(pad(task.oomScoreAdj, 5)) \(task.name)")
        }
    }

    /// `oom_kill_process`: every task using the victim's mm is killed
    /// (each ends at its next scheduling point), then the reaper frees
    /// the mm's private memory, unless its mmap lock is held for writing.
    func oomKill(_ victim: Task, _ log: (String) -> Void) {
        guard let mm = victim.mm else { return }
        let k = { (pages: Int) in "\(pages * (PAGE_SIZE >> 10))kB" }
        let c = counters(mm)
        for task in scheduler.tasks where task.mm === mm && !task.isFinished { scheduler.kill(task) }
        pageAllocator.events.oomKill &+= 1
        log("Out of memory: Killed process \(victim.id) (\(victim.name)) total-vm:\(k(c.totalVm)), anon-rss:\(k(c.anon)), file-rss:\(k(c.file)), shmem-rss:\(k(c.shmem)), UID:0 pgtables:\(k(c.pgtables)) oom_score_adj:\(victim.oomScoreAdj)")
        trace?.emit(.instant, "oom kill", category: "memory", track: .task(victim.id), args: [.init("victim", victim.name)])
        mm.oomSkip = true
        guard mm.mmapLock.owner == nil else {
            log("oom_reaper: unable to reap pid:\(victim.id) (\(victim.name))")
            return
        }
        // __oom_reap_task_mm: private mappings only; shared ones may be in use elsewhere.
        for vma in mm.vmas where vma.isAnonymous || !vma.flags.contains(.shared) {
            guard vma.flags.isDisjoint(with: .special) else { continue }  // a driver's pages stay its own
            mm.zap(vma.start..<vma.end)
        }
        let after = counters(mm)
        log("oom_reaper: reaped process \(victim.id) (\(victim.name)), now anon-rss:\(k(after.anon)), file-rss:\(k(after.file)), shmem-rss:\(k(after.shmem))")
    }
}
