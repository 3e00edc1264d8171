#if canImport(Glibc)
import Glibc
#endif
import MMCore

/// Script positions already named. `Runtime.currentSite` runs on every
/// binding call that records where something happened, so this maps a
/// chunk's source and a line to its `Site` without hashing strings:
/// direct-mapped on the source's address and the line. A source string's
/// address can be reused once its chunk is collected, so a hit also
/// compares the bytes.
final class SiteCache {
    private struct Slot {
        var source: UnsafeRawPointer?
        var line: Int32 = 0
        var site = Site.unknown
        /// A copy of the source's bytes, to tell a reused address.
        var copy: UnsafeMutableRawPointer?
        var length = 0
    }

    private static let size = 1024
    private let slots: UnsafeMutablePointer<Slot>

    init() {
        slots = .allocate(capacity: SiteCache.size)
        slots.initialize(repeating: Slot(), count: SiteCache.size)
    }

    deinit {
        // SAFETY: every slot was initialized in init; copies are ours to free.
        for i in 0..<SiteCache.size { free(slots[i].copy) }
        slots.deinitialize(count: SiteCache.size)
        slots.deallocate()
    }

    @inline(__always)
    private func slot(_ source: UnsafeRawPointer, _ line: Int32) -> UnsafeMutablePointer<Slot> {
        let h = (UInt(bitPattern: source) >> 4) &* 0x9E37_79B9_7F4A_7C15 ^ UInt(UInt32(bitPattern: line)) &* 0x85EB_CA6B
        // SAFETY: the mask keeps the index below `size`.
        return slots + Int((h ^ (h >> 29)) & UInt(SiteCache.size - 1))
    }

    /// The site recorded for `length` bytes of source at `source`, line `line`.
    @inline(__always)
    func lookup(_ source: UnsafeRawPointer, length: Int, line: Int32) -> Site? {
        let s = slot(source, line)
        guard s.pointee.source == source, s.pointee.line == line, s.pointee.length == length,
              let copy = s.pointee.copy, memcmp(copy, source, length) == 0 else { return nil }
        return s.pointee.site
    }

    func insert(_ source: UnsafeRawPointer, length: Int, line: Int32, site: Site) {
        let s = slot(source, line)
        free(s.pointee.copy)
        let copy = malloc(max(length, 1))
        if let copy { memcpy(copy, source, length) }
        s.pointee = Slot(source: copy == nil ? nil : source, line: line, site: site, copy: copy, length: length)
    }
}
