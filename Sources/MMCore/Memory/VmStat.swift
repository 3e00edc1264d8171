/// The `/proc/vmstat` event counters that the allocator, reclaim and the
/// OOM killer move (`enum vm_event_item`, include/linux/vm_event_item.h).
/// Per-zone events are counted by zone index: Normal, HighMem, Movable.
/// mmlab has no LRU (no page cache, no swap): `pgscan_*` and `pgsteal_*`
/// stay 0, and what reclaim frees comes from the shrinkers, counted by
/// `slabs_scanned`.
public struct VmEvents: Equatable, Sendable {
    /// `PGALLOC_NORMAL`, `PGALLOC_HIGH`: pages handed out, by zone.
    public var pgallocNormal: UInt64 = 0
    public var pgallocHigh: UInt64 = 0
    /// `ALLOCSTALL_*`: direct reclaims, by the highest zone the allocation could use.
    public var allocstall = [UInt64](repeating: 0, count: 3)
    /// `PGFREE`: pages freed.
    public var pgfree: UInt64 = 0
    public var pgstealKswapd: UInt64 = 0
    public var pgstealDirect: UInt64 = 0
    public var pgscanKswapd: UInt64 = 0
    public var pgscanDirect: UInt64 = 0
    /// `SLABS_SCANNED`: objects the shrinkers were asked to scan.
    public var slabsScanned: UInt64 = 0
    /// kswapd went back to work right after its short nap: woken during it (low) or not balanced after it (high).
    public var kswapdLowWmarkHitQuickly: UInt64 = 0
    public var kswapdHighWmarkHitQuickly: UInt64 = 0
    /// `PAGEOUTRUN`: kswapd's `balance_pgdat` runs.
    public var pageoutrun: UInt64 = 0
    /// `OOM_KILL`: processes the OOM killer killed.
    public var oomKill: UInt64 = 0

    /// The counters under their `/proc/vmstat` names, in its order; the
    /// `_high` ones only on a machine with HighMem (a kernel with CONFIG_HIGHMEM).
    public func named(highmem: Bool, freePages: UInt64) -> [(String, UInt64)] {
        let zones = highmem ? ["normal", "high", "movable"] : ["normal", "movable"]
        let pgalloc: [String: UInt64] = ["normal": pgallocNormal, "high": pgallocHigh, "movable": 0]
        let stall: [String: UInt64] = ["normal": allocstall[0], "high": allocstall[1], "movable": allocstall[2]]
        return [("nr_free_pages", freePages)]
            + zones.map { ("pgalloc_\($0)", pgalloc[$0] ?? 0) }
            + zones.map { ("allocstall_\($0)", stall[$0] ?? 0) }
            + [("pgfree", pgfree), ("pgsteal_kswapd", pgstealKswapd), ("pgsteal_direct", pgstealDirect),
               ("pgscan_kswapd", pgscanKswapd), ("pgscan_direct", pgscanDirect), ("slabs_scanned", slabsScanned),
               ("kswapd_low_wmark_hit_quickly", kswapdLowWmarkHitQuickly),
               ("kswapd_high_wmark_hit_quickly", kswapdHighWmarkHitQuickly),
               ("pageoutrun", pageoutrun), ("oom_kill", oomKill)]
    }
}

extension PageAllocator {
    /// `/proc/vmstat`'s lines that mmlab keeps, in its order.
    public var vmstat: [(String, UInt64)] { events.named(highmem: zones.count > 1, freePages: freePages) }

    /// `/proc/zoneinfo` (`zoneinfo_show_print`), without the per-node
    /// counters mmlab does not keep: per zone, its free pages, watermarks,
    /// sizes, protection (`lowmem_reserve`), `nr_free_pages`, and each
    /// CPU's list.
    public var zoneinfo: String {
        zones.map { zone in
            var lines = ["Node 0, zone " + String(repeating: " ", count: max(0, 8 - zone.name.count)) + zone.name]
            let spanned = (zone.spans.last?.upperBound ?? 0) - (zone.spans.first?.lowerBound ?? 0)
            for (name, value) in [("pages free", zone.freePages), ("      boost", 0), ("      min", zone.watermark.min),
                                  ("      low", zone.watermark.low), ("      high", zone.watermark.high),
                                  ("      promo", zone.watermark.promo), ("      spanned", spanned),
                                  ("      present", zone.managedPages), ("      managed", zone.managedPages),
                                  ("      cma", 0)] as [(String, UInt64)] {
                lines.append("  " + name + String(repeating: " ", count: max(1, 15 - name.count)) + String(value))
            }
            lines.append("        protection: (" + zone.lowmemReserve.map(String.init).joined(separator: ", ") + ")")
            guard zone.managedPages > 0 else { return lines.joined(separator: "\n") + "\n" }
            lines.append("      nr_free_pages " + String(zone.freePages))
            lines.append("  pagesets")
            for cpu in 0..<zone.pcp.cpus {
                lines += ["    cpu: \(cpu)", "              count: \(zone.pcp.count(cpu))",
                          "              high:  \(zone.pcp.high(cpu, zone))", "              batch: \(zone.batch)"]
            }
            lines.append("  node_unreclaimable:  \(kswapd.failures >= MAX_RECLAIM_RETRIES ? 1 : 0)")
            lines.append("  start_pfn:           \(zone.spans.first?.lowerBound ?? 0)")
            return lines.joined(separator: "\n") + "\n"
        }.joined()
    }
}
