/// Where something happened in a script (`exp.lua:12`), interned by the
/// machine's `SiteTable`. MMCore has no Lua in it: the engine names sites.
public struct Site: Hashable, Sendable {
    public let id: UInt32
    public init(id: UInt32) { self.id = id }
    /// No script position: created from Swift, or not known.
    public static let unknown = Site(id: 0)
}

/// Interns site names so that objects carry a 4-byte `Site`.
public final class SiteTable {
    private var names = ["?"]
    private var ids: [String: UInt32] = ["?": 0]

    public init() {}

    public func intern(_ name: String) -> Site {
        if let id = ids[name] { return Site(id: id) }
        let id = UInt32(names.count)
        names.append(name)
        ids[name] = id
        return Site(id: id)
    }

    public func name(_ site: Site) -> String {
        Int(site.id) < names.count ? names[Int(site.id)] : "?"
    }
}

/// A native object the accounting follows from creation to release: a page
/// reference, an mm, a lock guard, a range-allocator node.
///
/// # Invariants
///
/// An object is in its machine's `Accounting` from `track` until `untrack`,
/// which its owner calls exactly once when it releases what it holds.
public class NativeObject: CustomStringConvertible {
    /// Where the script created it.
    public let site: Site
    /// Creation order: later objects have larger serials.
    // Changed only by Accounting's track and untrack, which call nothing
    // meanwhile: no dynamic exclusivity check is needed (they cost a third
    // of creating a handle).
    @exclusivity(unchecked) public fileprivate(set) var serial: UInt64 = 0
    @exclusivity(unchecked) fileprivate var slot = -1

    init(site: Site) { self.site = site }

    /// The type's name as `__tostring` prints it (`"Page"`).
    public var typeName: String { "Object" }
    public var description: String { typeName }
    /// Whether the accounting still counts it.
    public var isLive: Bool { slot >= 0 }
}

/// The machine's record of live native objects: `kernel.debug.live()`,
/// `leaks()` and the leak report at exit.
public final class Accounting {
    // As NativeObject's serial and slot.
    @exclusivity(unchecked) private(set) var live = ContiguousArray<NativeObject>()
    @exclusivity(unchecked) private var nextSerial: UInt64 = 1

    public init() {}

    /// The serial the next object gets: objects created after reading it
    /// have a serial at least this large.
    public var serial: UInt64 { nextSerial }

    /// How many native objects are live.
    public var count: Int { live.count }

    func track(_ object: NativeObject) {
        object.serial = nextSerial
        nextSerial += 1
        object.slot = live.count
        live.append(object)
    }

    func untrack(_ object: NativeObject) {
        let i = object.slot
        guard i >= 0 else { return }
        let last = live.removeLast()
        if i < live.count {
            live[i] = last
            last.slot = i
        }
        object.slot = -1
    }

    /// Live objects per type name.
    public func liveCounts() -> [String: Int] {
        var counts: [String: Int] = [:]
        for object in live { counts[object.typeName, default: 0] += 1 }
        return counts
    }

    /// Live objects created at or after `serial`, oldest first.
    public func leaks(since serial: UInt64 = 0) -> [NativeObject] {
        live.filter { $0.serial >= serial }.sorted { $0.serial < $1.serial }
    }
}
