import MMCore

/// Script positions already named, by call site. `Runtime.currentSite`
/// runs on every binding call that records where something happened, so
/// this maps the calling function's next instruction (`mmlab_callsite`)
/// to its `Site` without asking Lua for the line: direct-mapped on the
/// instruction's address. An address names one site while its function
/// lives; after a collection, which may have freed functions (and their
/// addresses may be reused), every entry goes.
final class SiteCache {
    private struct Slot {
        var pc: UnsafeRawPointer?
        var site = Site.unknown
    }

    private static let size = 1024
    private var slots = [Slot](repeating: Slot(), count: SiteCache.size)
    /// The collections counted when the entries were made (`site_epoch`).
    private var epoch: UInt64 = 0

    @inline(__always)
    private func index(_ pc: UnsafeRawPointer) -> Int {
        let h = (UInt(bitPattern: pc) >> 2) &* 0x9E37_79B9_7F4A_7C15
        return Int((h >> 40) & UInt(SiteCache.size - 1))
    }

    /// The site of the call site `pc`, if named since the last collection.
    @inline(__always)
    func lookup(_ pc: UnsafeRawPointer, epoch now: UInt64) -> Site? {
        if now != epoch {
            for i in slots.indices { slots[i] = Slot() }
            epoch = now
            return nil
        }
        let slot = slots[index(pc)]
        return slot.pc == pc ? slot.site : nil
    }

    func insert(_ pc: UnsafeRawPointer, site: Site) {
        slots[index(pc)] = Slot(pc: pc, site: site)
    }
}
