import CLua
import LuaShim
import MMCore

/// Every native type that reaches Lua as a handle.
enum HandleType: UInt16, CaseIterable {
    case page = 1
    case borrowedPage
    case pagePointer
    case mapping
    case shrinker
    case task
    case spinLock
    case mutex
    case spinLockGuard
    case mutexGuard
    case cpuGuard
    case dynamicPerCpu
    case staticPerCpu
    case perCpuToken
    case mm
    case mmWithUser
    case mmWithUserAsync
    case mmapReadGuard
    case mmapWriteGuard
    case vmaRef
    case vmaMixedMap
    case vmaNew
    case vmaReadGuard
    case userSlice
    case userSliceReader
    case userSliceWriter
    case drmMmAllocator
    case drmMmNode
    case drmMmScan
    case rangeAllocator
    case binderAlloc
    case binderBuffer
    case waitQueue
    case completion

    /// The name `__tostring`, `__name` and error messages use.
    var name: String {
        switch self {
        case .page: "Page"
        case .borrowedPage: "BorrowedPage"
        case .pagePointer: "Pointer"
        case .mapping: "Mapping"
        case .shrinker: "Shrinker"
        case .task: "Task"
        case .spinLock: "SpinLock"
        case .mutex: "Mutex"
        case .spinLockGuard: "SpinLockGuard"
        case .mutexGuard: "MutexGuard"
        case .cpuGuard: "CpuGuard"
        case .dynamicPerCpu: "DynamicPerCpu"
        case .staticPerCpu: "StaticPerCpu"
        case .perCpuToken: "PerCpuToken"
        case .mm: "Mm"
        case .mmWithUser: "MmWithUser"
        case .mmWithUserAsync: "MmWithUserAsync"
        case .mmapReadGuard: "MmapReadGuard"
        case .mmapWriteGuard: "MmapWriteGuard"
        case .vmaRef: "VmaRef"
        case .vmaMixedMap: "VmaMixedMap"
        case .vmaNew: "VmaNew"
        case .vmaReadGuard: "VmaReadGuard"
        case .userSlice: "UserSlice"
        case .userSliceReader: "UserSliceReader"
        case .userSliceWriter: "UserSliceWriter"
        case .drmMmAllocator: "Allocator"
        case .drmMmNode: "Node"
        case .drmMmScan: "Scan"
        case .rangeAllocator: "RangeAllocator"
        case .binderAlloc: "Alloc"
        case .binderBuffer: "Buffer"
        case .waitQueue: "WaitQueue"
        case .completion: "Completion"
        }
    }
}

/// A handle's life, as `kernel.state` reports it.
enum HandleState: UInt8 {
    /// Dropping it releases what it owns.
    case owned
    /// Dropping it releases nothing: another object owns the target.
    case borrowed
    case dropped
    /// A consuming operation (`into_phys`, `downgrade`) took it.
    case moved

    var name: String {
        switch self {
        case .owned: "owned"
        case .borrowed: "borrowed"
        case .dropped: "dropped"
        case .moved: "moved"
        }
    }
}

/// How a handle went: `kernel.debug.stats()` counts each.
enum DropReason {
    case drop, close, gc
}

/// Handle flags.
enum HandleFlag {
    /// It ended with the scope that lent it (a callback returned), not by a drop.
    static let expired: UInt8 = 1
    /// Its user value is a lender it holds a counted borrow on.
    static let borrowing: UInt8 = 2
    /// Its user value is a lender it views: a borrow that stops an explicit
    /// drop of the lender, while the lender's scope may end and the view
    /// with it (a VmaRef of a guard: Rust ends the borrow at its last use).
    static let viewing: UInt8 = 8
    /// Dropped, it let go of its object and keeps a tombstone to describe it.
    static let tombstone: UInt8 = 4
}

/// Why and where a handle is being dropped.
struct DropContext {
    let reason: DropReason
    let site: Site
}

/// One handle type's behaviour in Lua: its methods, and what dropping an
/// owned handle releases (Rust's `Drop`).
/// A class, not a struct: its drop closure is then stored as a function of
/// its own type, not behind the reabstraction thunk an array of closures
/// needs, and calling it copies nothing. Every instance is a `static let`.
final class HandleClass {
    typealias Drop = (Lua, AnyObject, DropContext) throws -> Void
    /// 64 bits from which a dropped object's description can be rebuilt,
    /// and the rebuilding.
    typealias Tombstone = (make: (AnyObject) -> UInt64, describe: (UInt64) -> String)
    let type: HandleType
    let methods: [(String, Binding)]
    let drop: Drop
    /// With one, a handle lets go of its object when it is dropped rather
    /// than when it is collected: objects created and dropped in a loop are
    /// then freed while hot, not in bulk by the collector (a third of the
    /// cost of a new handle).
    let tombstone: Tombstone?
    /// Whether a live handle's object is gone nonetheless (a view whose
    /// lender ended): `kernel.state` then says "dropped".
    let isGone: ((AnyObject) -> Bool)?

    init(_ type: HandleType, methods: [(String, Binding)], drop: @escaping Drop = { _, _, _ in },
         tombstone: Tombstone? = nil, isGone: ((AnyObject) -> Bool)? = nil) {
        self.type = type
        self.methods = methods
        self.drop = drop
        self.tombstone = tombstone
        self.isGone = isGone
    }
}

typealias HandlePointer = UnsafeMutablePointer<mmlab_Handle>

/// Reading handle blocks.
enum Handles {
    static func state(_ h: HandlePointer) -> HandleState {
        HandleState(rawValue: h.pointee.state) ?? .dropped
    }

    static func type(_ h: HandlePointer) -> HandleType? {
        HandleType(rawValue: h.pointee.type)
    }

    static func object(_ h: HandlePointer) -> AnyObject? {
        guard let p = h.pointee.object else { return nil }
        // SAFETY: `object` holds the retain taken in `pushHandle` until `__gc` clears it.
        return Unmanaged<AnyObject>.fromOpaque(p).takeUnretainedValue()
    }

}

extension Lua {
    /// The handle at `arg` if it is a live handle of `type` (or of `or`);
    /// otherwise the argument error or the use-after-drop bug.
    @inline(__always)
    func handle(_ arg: Int32, _ type: HandleType, or other: HandleType? = nil) throws -> HandlePointer {
        guard let h = mmlab_tohandle(L, arg),
              h.pointee.type == type.rawValue || h.pointee.type == other?.rawValue else {
            throw typeError(arg, type.name)
        }
        guard h.pointee.state <= HandleState.borrowed.rawValue, h.pointee.object != nil else {
            throw useAfterDrop(h)
        }
        return h
    }

    /// The object of the live handle `h` of a type created over a `T`.
    @inline(__always)
    func object<T: AnyObject>(_ h: HandlePointer, as: T.Type) -> T {
        // SAFETY: `handle` checked the object is there, and handles of each
        // type are only ever created over one class (see the binding that
        // pushes them); the caller names that class.
        Unmanaged<T>.fromOpaque(h.pointee.object.unsafelyUnwrapped).takeUnretainedValue()
    }

    /// The object of the live handle at `arg` of `type`.
    @inline(__always)
    func object<T: AnyObject>(_ arg: Int32, _ type: HandleType, as: T.Type = T.self) throws -> T {
        object(try handle(arg, type), as: T.self)
    }

    /// Any of our handles at `arg`, in any state.
    func anyHandle(_ arg: Int32) throws(LuaFailure) -> HandlePointer {
        guard let h = mmlab_tohandle(L, arg) else { throw typeError(arg, "handle") }
        return h
    }

    func useAfterDrop(_ h: HandlePointer) -> KernelError {
        let site = runtime.sites.name(Site(id: h.pointee.site))
        let what = describe(h)
        if Handles.state(h) == .moved { return .bug("use after move: \(what) moved by \(site)") }
        if h.pointee.flags & HandleFlag.expired != 0 {
            return .bug("use after scope: \(what) was valid only inside the callback at \(site)")
        }
        return .bug("use after drop: \(what) dropped at \(site)")
    }

    /// Pushes a new handle over `object`. A handle with a `lender` (a stack
    /// index) borrows it: the lender stays reachable while the handle lives
    /// and cannot be dropped until the borrow ends. One with `keepAlive`
    /// only keeps that value reachable: a view checked on each use (a
    /// VmaRef and its guard), which the guard's drop makes invalid.
    @discardableResult
    func pushHandle(_ object: AnyObject, _ type: HandleType, state: HandleState = .owned,
                    lender: Int32? = nil, keepAlive: Int32? = nil, viewing: Int32? = nil) -> HandlePointer {
        let lender = lender.map(absIndex), keepAlive = keepAlive.map(absIndex), viewing = viewing.map(absIndex)
        let raw = lua_newuserdatauv(L, MemoryLayout<mmlab_Handle>.size,
                                    lender == nil && keepAlive == nil && viewing == nil ? 0 : 1)
        // SAFETY: Lua returned a fresh block of exactly this size, aligned for any C type.
        let h = raw.unsafelyUnwrapped.bindMemory(to: mmlab_Handle.self, capacity: 1)
        h.initialize(to: mmlab_Handle(
            magic: MMLAB_HANDLE_MAGIC, object: Unmanaged.passRetained(object).toOpaque(),
            borrows: 0, site: 0, type: type.rawValue, state: state.rawValue, flags: 0, views: 0, tombstone: 0))
        lua_rawgeti(L, mmlab_registryindex(), lua_Integer(withRuntime {
            $0.state.pointee.live_handles += 1
            return $0.metatables[Int(type.rawValue)]
        }))
        lua_setmetatable(L, -2)
        if let lender, let lent = mmlab_tohandle(L, lender) {
            lua_pushvalue(L, lender)
            lua_setiuservalue(L, -2, 1)
            lent.pointee.borrows += 1
            h.pointee.flags |= HandleFlag.borrowing
            noteBorrow(h, of: lent)
        } else if let viewing, let viewed = mmlab_tohandle(L, viewing) {
            lua_pushvalue(L, viewing)
            lua_setiuservalue(L, -2, 1)
            viewed.pointee.views += 1
            h.pointee.flags |= HandleFlag.viewing
            noteBorrow(h, of: viewed)
        } else if let keepAlive = keepAlive ?? lender ?? viewing {
            lua_pushvalue(L, keepAlive)
            lua_setiuservalue(L, -2, 1)
        }
        return h
    }

    /// Pushes a handle over `object`, or nil without one: a Rust `Option`.
    /// Returns the result count, 1.
    func pushOptionalHandle(_ object: AnyObject?, _ type: HandleType, state: HandleState = .owned,
                            lender: Int32? = nil, keepAlive: Int32? = nil, viewing: Int32? = nil) -> Int32 {
        if let object {
            pushHandle(object, type, state: state, lender: lender, keepAlive: keepAlive, viewing: viewing)
        } else {
            pushNil()
        }
        return 1
    }

    /// A borrower keeps where it was taken (a live handle's `site` is
    /// otherwise unused) and is listed under its lender.
    private func noteBorrow(_ h: HandlePointer, of lender: HandlePointer) {
        h.pointee.site = site().id
        runtime.borrowers[lender, default: []].append(h)
    }

    /// Ends the borrow the handle `h` at `idx` holds on its lender, if any.
    @inline(__always)
    private func endBorrow(_ idx: Int32, _ h: HandlePointer) {
        if h.pointee.flags & (HandleFlag.borrowing | HandleFlag.viewing) != 0 { endLoan(idx, h) }
    }

    private func endLoan(_ idx: Int32, _ h: HandlePointer) {
        let viewing = h.pointee.flags & HandleFlag.viewing != 0
        h.pointee.flags &= ~(HandleFlag.borrowing | HandleFlag.viewing)
        if lua_getiuservalue(L, idx, 1) != LUA_TNONE, let lender = mmlab_tohandle(L, -1) {
            if viewing, lender.pointee.views > 0 { lender.pointee.views -= 1 }
            if !viewing, lender.pointee.borrows > 0 { lender.pointee.borrows -= 1 }
            let runtime = self.runtime
            if let i = runtime.borrowers[lender]?.lastIndex(of: h) {
                runtime.borrowers[lender]?.remove(at: i)
                if runtime.borrowers[lender]?.isEmpty == true { runtime.borrowers[lender] = nil }
            }
        }
        pop()
    }

    /// `dropped while borrowed: X has 1 live borrow: Y taken at x.lua:3`.
    func droppedWhileBorrowed(_ h: HandlePointer) -> KernelError {
        let live = runtime.borrowers[h] ?? []
        let sites = runtime.sites
        let list = live.map { "\(describe($0)) taken at \(sites.name(Site(id: $0.pointee.site)))" }
        let n = Int(h.pointee.borrows + h.pointee.views)
        return .bug("dropped while borrowed: \(describe(h)) has \(n) live borrow\(n == 1 ? "" : "s")"
                    + (list.isEmpty ? "" : ": " + list.joined(separator: ", ")))
    }

    /// Drops the handle at `idx`: an owned one releases what it owns.
    /// `kernel.drop` of a dead handle is a bug; `__close` and `__gc` of one
    /// do nothing.
    func drop(_ idx: Int32, _ h: HandlePointer, _ reason: DropReason) throws {
        let idx = absIndex(idx)
        let state = Handles.state(h)
        guard state == .owned || state == .borrowed else {
            guard reason == .drop else { return }
            let site = runtime.sites.name(Site(id: h.pointee.site))
            if state == .moved { throw KernelError.bug("drop after move: \(describe(h)) moved by \(site)") }
            throw KernelError.bug("double drop: \(describe(h)) dropped at \(site)")
        }
        // The collector finalizes borrowers before their lenders, so only a
        // script calling __gc by hand gets here with a live borrow.
        if h.pointee.borrows > 0 || (reason == .drop && h.pointee.views > 0) {
            throw droppedWhileBorrowed(h)
        }
        let site = reason == .gc ? Site.unknown : self.site()
        // Release first: a drop that fails (a guard dropped by the wrong
        // task) leaves the handle as it was.
        if state == .owned, let type = Handles.type(h), let p = h.pointee.object {
            if let cls = withRuntime({ $0.classes[Int(type.rawValue)] }) {
                // SAFETY: `object` holds the retain taken in `pushHandle` until
                // `__gc` clears it; classes are static lets, never freed.
                do {
                    try Unmanaged<AnyObject>.fromOpaque(p)._withUnsafeGuaranteedRef { object in
                        try cls._withUnsafeGuaranteedRef { try $0.drop(self, object, DropContext(reason: reason, site: site)) }
                    }
                } catch where reason == .gc {
                    // The collector frees the userdata whatever __gc raises:
                    // the handle ends here, so that __gc lets go of its object.
                    h.pointee.state = HandleState.dropped.rawValue
                    endBorrow(idx, h)
                    throw error
                }
            }
        }
        h.pointee.state = HandleState.dropped.rawValue
        h.pointee.site = site.id
        if reason != .gc { bury(h) }
        endBorrow(idx, h)
        withRuntime { $0.stats.count(reason) }
    }

    /// Lets a dropped handle go of its object if its class can describe it
    /// from a tombstone.
    private func bury(_ h: HandlePointer) {
        guard let type = Handles.type(h), let p = h.pointee.object,
              let cls = withRuntime({ $0.classes[Int(type.rawValue)] }) else { return }
        // SAFETY: classes are static lets, never freed.
        guard let tombstone = cls._withUnsafeGuaranteedRef({ $0.tombstone }) else { return }
        let object = Unmanaged<AnyObject>.fromOpaque(p)
        h.pointee.tombstone = object._withUnsafeGuaranteedRef { tombstone.make($0) }
        h.pointee.flags |= HandleFlag.tombstone
        h.pointee.object = nil
        withRuntime { $0.state.pointee.live_handles -= 1 }
        // SAFETY: releases the retain `pushHandle` took; `object` is cleared first.
        object.release()
    }

    /// What `kernel.state` says of the handle: a live view whose lender
    /// ended reads as "dropped".
    func state(of h: HandlePointer) -> HandleState {
        let state = Handles.state(h)
        guard state == .owned || state == .borrowed, let object = Handles.object(h), let type = Handles.type(h),
              let cls = withRuntime({ $0.classes[Int(type.rawValue)] }),
              // SAFETY: classes are static lets, never freed.
              let isGone = cls._withUnsafeGuaranteedRef({ $0.isGone }) else { return state }
        return isGone(object) ? .dropped : state
    }

    /// `Page{pfn=0x1a2, order=0}`: the handle's object's description, live or dead.
    func describe(_ h: HandlePointer) -> String {
        if let object = Handles.object(h) { return String(describing: object) }
        if h.pointee.flags & HandleFlag.tombstone != 0, let type = Handles.type(h),
           let cls = withRuntime({ $0.classes[Int(type.rawValue)] }),
           // SAFETY: classes are static lets, never freed.
           let tombstone = cls._withUnsafeGuaranteedRef({ $0.tombstone }) {
            return tombstone.describe(h.pointee.tombstone)
        }
        return Handles.type(h)?.name ?? "handle"
    }

    /// Ends the handle at `idx` without releasing anything: a consuming
    /// operation took what it owned (`moved`), or its scope ended (`expired`).
    func end(_ idx: Int32, _ h: HandlePointer, as state: HandleState, flags: UInt8 = 0) {
        h.pointee.state = state.rawValue
        h.pointee.flags |= flags
        if state == .moved, let op = lua_tolstring(L, mmlab_registryindex() - 2, nil) {  // lua_upvalueindex(2)
            // The running binding (its name is upvalue 2) is what moved it.
            let sites = runtime.sites
            h.pointee.site = sites.intern("\(String(cString: op)) at \(sites.name(site()))").id
        } else {
            h.pointee.site = site().id
        }
        endBorrow(absIndex(idx), h)
    }
}

/// The metamethods every handle type shares.
enum HandleMetamethods {
    static let gc: Binding = { L in
        bind(L) { lua in
            guard let h = mmlab_tohandle(lua.L, 1) else { return 0 }
            // Also when the drop raised: a dead handle holds nothing.
            defer {
                let state = Handles.state(h)
                if state != .owned && state != .borrowed, let p = h.pointee.object {
                    h.pointee.object = nil
                    lua.runtime.state.pointee.live_handles -= 1
                    // SAFETY: releases the retain `pushHandle` took; `object` is cleared first.
                    Unmanaged<AnyObject>.fromOpaque(p).release()
                }
            }
            try lua.drop(1, h, .gc)
            return 0
        }
    }

    /// `__close(h, err)`. While an error unwinds (`err` not nil), a drop
    /// that fails is a warning beside that error, which goes on unchanged:
    /// Lua would otherwise put the drop's error in its place.
    static let close: Binding = { L in
        bind(L) { lua in
            guard let h = mmlab_tohandle(lua.L, 1) else { return 0 }
            guard !lua.isNoneOrNil(2) else {
                try lua.drop(1, h, .close)
                return 0
            }
            let what = lua.describe(h)
            do { try lua.drop(1, h, .close) } catch {
                let message = (error as? KernelError).map { "\($0)" } ?? "\(error)"
                // No __tostring here: it could raise across this frame.
                let unwinding = lua.string(at: 2) ?? lua.runtime.kernelError(lua, at: 2).map { "\($0)" }
                    ?? "a \(String(cString: lua_typename(L, lua_type(L, 2)))) value"
                lua.runtime.warn("closing \(what) failed while an error unwound: \(message) (the error: \(unwinding))")
            }
            return 0
        }
    }

    /// Two handles over the same native object are equal (an owned node
    /// and the borrowed one `nodes()` yields).
    static let eq: Binding = { L in
        bind(L) { lua in
            guard let a = mmlab_tohandle(lua.L, 1), let b = mmlab_tohandle(lua.L, 2) else {
                lua.push(false)
                return 1
            }
            lua.push(a.pointee.object != nil && a.pointee.object == b.pointee.object)
            return 1
        }
    }

    static let tostring: Binding = { L in
        bind(L) { lua in
            let h = try lua.anyHandle(1)
            let state = Handles.state(h)
            let suffix = state == .dropped || state == .moved ? " (\(state.name))" : ""
            lua.push(lua.describe(h) + suffix)
            return 1
        }
    }
}

/// A method a handle's type does not have: the methods table's own
/// `__index` (only a miss reaches it), raising what the user meant when it
/// was called as a method.
enum MissingMethod {
    /// How a handle of a type is come by from the types that lead to it.
    static let hints: [HandleType: (from: Set<HandleType>, how: String)] = [
        .mmWithUser: ([.mm], "take one with mmget_not_zero()"),
        .mmapReadGuard: ([.mmWithUser, .mmWithUserAsync], "take one with mmap_read_lock()"),
        .mmapWriteGuard: ([.mmWithUser, .mmWithUserAsync], "take one with mmap_write_lock()"),
        .vmaMixedMap: ([.vmaRef, .vmaReadGuard, .vmaNew], "take one with as_mixedmap_vma()"),
        .vmaNew: ([.vmaRef, .vmaReadGuard, .vmaMixedMap], "an mmap hook is given one"),
        .userSliceReader: ([.userSlice], "take one with reader()"),
        .userSliceWriter: ([.userSlice], "take one with writer()"),
        .mapping: ([.page, .borrowedPage], "with_page_mapped(fn) lends one"),
        .pagePointer: ([.page, .borrowedPage], "with_pointer_into_page(offset, len, fn) lends one"),
    ]

    static let index: Binding = { L in
        bind(L) { lua in
            // A field read (`if h.name then`) is nil, as for any table; a
            // method call is the error.
            guard lua_type(L, 2) == LUA_TSTRING, mmlab_calledasmethod(L) != 0, let name = lua.string(at: 2) else { return 0 }
            guard lua_getmetatable(L, 1) != 0, lua_getfield(L, -1, "type") == LUA_TNUMBER,
                  let type = HandleType(rawValue: UInt16(truncatingIfNeeded: lua_tointegerx(L, -1, nil))) else { return 0 }
            let message = "\(type.name) has no method '\(name)'" + explain(name, for: type, among: lua.runtime.classes)
            let position = lua.position().map { "\($0.shortSource):\($0.line): " } ?? ""
            lua.push(position + message)
            return MMLAB_RAISE
        }
    }

    /// ` (did you mean 'x'?)`, ` (a T method: how to get one)`, or nothing.
    static func explain(_ name: String, for type: HandleType, among classes: [Unmanaged<HandleClass>?]) -> String {
        let all = classes.compactMap { $0?.takeUnretainedValue() }
        let own = all.first { $0.type == type }?.methods.map(\.0) ?? []
        let close = own.map { ($0, distance($0, name)) }.filter { $0.1 <= (name.count < 5 ? 1 : 2) }
        if let best = close.min(by: { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }) {
            return " (did you mean '\(best.0)'?)"
        }
        let owners = all.filter { $0.type != type && $0.methods.contains { $0.0 == name } }.map(\.type)
        if let hinted = owners.first(where: { hints[$0]?.from.contains(type) == true }), let hint = hints[hinted] {
            return " (a \(hinted.name) method: \(hint.how))"
        }
        switch owners.count {
        case 0: return ""
        case 1: return " (a \(owners[0].name) method)"
        default:
            let names = owners.map(\.name)
            return " (a method of \(names.dropLast().joined(separator: ", ")) and \(names[names.count - 1]))"
        }
    }

    /// The edit distance with transpositions (optimal string alignment).
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) }
        var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { d[i][0] = i }
        for j in 0...b.count { d[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
            }
        }
        return d[a.count][b.count]
    }
}
