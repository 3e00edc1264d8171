import CLua
import LuaShim
import MMCore

/// `kernel.mm`: address spaces, the mmap lock, VMAs (MMCore/Mm).
extension Runtime {
    func openMm(_ lua: Lua) {
        lua.newTable()
        lua.setFunctions([("mm_alloc", MmBindings.mmAlloc)])
        lua.setConstants([
            ("PROT_NONE", Mmap.PROT_NONE), ("PROT_READ", Mmap.PROT_READ), ("PROT_WRITE", Mmap.PROT_WRITE),
            ("PROT_EXEC", Mmap.PROT_EXEC), ("MAP_SHARED", Mmap.MAP_SHARED), ("MAP_PRIVATE", Mmap.MAP_PRIVATE),
            ("MAP_SHARED_VALIDATE", Mmap.MAP_SHARED_VALIDATE), ("MAP_TYPE", Mmap.MAP_TYPE),
            ("MAP_FIXED", Mmap.MAP_FIXED), ("MAP_ANONYMOUS", Mmap.MAP_ANONYMOUS),
            ("MAP_FIXED_NOREPLACE", Mmap.MAP_FIXED_NOREPLACE),
        ])
        lua.setConstants(VmFlags.named.map { ("VM_" + $0.0, Int($0.1.rawValue)) })
        lua.set("TASK_SIZE", Mmap.taskSize)
        lua.set("mmap_min_addr", Mmap.minAddr)
        lua.setField(-2, "mm")
    }
}

extension Runtime {
    /// The driver file a mmap `hook` stands for: one per function, so that
    /// mapping the same driver twice can merge as mapping one file does.
    func file(_ lua: Lua, of hook: Int32, machine: Machine) -> Int {
        let hook = lua.absIndex(hook)
        if files == LUA_NOREF {
            lua.newTable()
            lua.newTable(hash: 1)
            lua.push("k")
            lua.setField(-2, "__mode")  // a collected hook's file is forgotten
            lua_setmetatable(lua.L, -2)
            files = luaL_ref(lua.L, mmlab_registryindex())
        }
        lua_rawgeti(lua.L, mmlab_registryindex(), lua_Integer(files))
        lua_pushvalue(lua.L, hook)
        lua_rawget(lua.L, -2)
        var isnum: Int32 = 0
        var id = Int(lua_tointegerx(lua.L, -1, &isnum))
        lua.pop()
        if isnum == 0 {
            id = machine.newFile()
            lua_pushvalue(lua.L, hook)
            lua.push(id)
            lua_rawset(lua.L, -3)
        }
        lua.pop()
        return id
    }
}

extension Lua {
    /// The live handle at `arg` if it is of one of `types`; else the
    /// argument error naming `expected`, or the use-after-drop bug.
    func handle(_ arg: Int32, oneOf types: [HandleType], expected: String) throws -> (HandlePointer, HandleType) {
        guard let h = mmlab_tohandle(L, arg), let type = Handles.type(h), types.contains(type) else {
            throw typeError(arg, expected)
        }
        guard h.pointee.state <= HandleState.borrowed.rawValue, h.pointee.object != nil else { throw useAfterDrop(h) }
        return (h, type)
    }

    /// The mm reference at `arg`: any `Mm`, `MmWithUser` or
    /// `MmWithUserAsync`; with `users`, only the last two, whose address
    /// space must still be there.
    func mmReference(_ arg: Int32, users: Bool) throws -> MmReference {
        let types: [HandleType] = users ? [.mmWithUser, .mmWithUserAsync] : [.mm, .mmWithUser, .mmWithUserAsync]
        let (h, _) = try handle(arg, oneOf: types, expected: users ? "MmWithUser" : "Mm")
        let ref = object(h, as: MmReference.self)
        runtime.activeL = L  // page-table allocations may run the collector
        if users { try ref.checkUsers() } else { try ref.checkLive() }
        return ref
    }

    /// The VMA behind a `VmaRef`, `VmaMixedMap`, `VmaNew` or `VmaReadGuard`
    /// at `arg`, checked to be still protected.
    func vmaRef(_ arg: Int32) throws -> VmaRef {
        let (h, type) = try handle(arg, oneOf: [.vmaRef, .vmaMixedMap, .vmaNew, .vmaReadGuard], expected: "VmaRef")
        let ref = type == .vmaReadGuard ? object(h, as: VmaReadGuard.self).vmaRef : object(h, as: VmaRef.self)
        try ref.check()
        return ref
    }

    /// An address argument: any integer, unsigned as the kernel's `unsigned long`.
    func address(_ arg: Int32) throws(LuaFailure) -> UInt64 { UInt64(bitPattern: Int64(try integer(arg))) }
}

enum MmBindings {
    /// `kernel.mm.mm_alloc()` → MmWithUser (users 1, count 1).
    static let mmAlloc: Binding = { L in
        bind(L) { lua in
            let runtime = lua.runtime
            lua.pushHandle(try lua.machine().mmAlloc(site: lua.site()), .mmWithUser)
            return 1
        }
    }
}

extension HandleClass {
    /// What every mm handle has (`Mm`'s methods): safe with `mm_users` zero.
    private static let mmMethods: [(String, Binding)] = [
        ("mmget_not_zero", MmMethods.mmgetNotZero),
        ("mm_users", { L in bind(L) { lua in lua.push(try lua.mmReference(1, users: false).mm.users); return 1 } }),
        ("mm_count", { L in bind(L) { lua in lua.push(try lua.mmReference(1, users: false).mm.count); return 1 } }),
        ("id", { L in bind(L) { lua in lua.push(try lua.mmReference(1, users: false).mm.id); return 1 } }),
        ("map_count", { L in bind(L) { lua in lua.push(try lua.mmReference(1, users: false).mm.mapCount); return 1 } }),
        ("pgtables_bytes", { L in
            bind(L) { lua in lua.push(try lua.mmReference(1, users: false).mm.pageTables * PAGE_SIZE); return 1 }
        }),
        ("clone", MmMethods.clone),
    ]

    /// `MmWithUser`'s own methods: they need the address space.
    private static let withUserMethods: [(String, Binding)] = mmMethods + [
        ("mmgrab", MmMethods.mmgrab),
        ("mmget", MmMethods.mmget),
        ("mmap_read_lock", MmMethods.mmapReadLock),
        ("mmap_read_lock_nested", MmMethods.mmapReadLockNested),
        ("mmap_read_trylock", MmMethods.mmapReadTrylock),
        ("mmap_write_lock", MmMethods.mmapWriteLock),
        ("mmap_write_lock_nested", MmMethods.mmapWriteLockNested),
        ("mmap_write_trylock", MmMethods.mmapWriteTrylock),
        ("lock_vma_under_rcu", MmMethods.lockVmaUnderRcu),
        ("mmap", MmMethods.mmap),
        ("munmap", MmMethods.munmap),
        ("follow_page", MmMethods.followPage),
    ]

    /// Drop: mmdrop (`Mm`), mmput (`MmWithUser`), mmput_async.
    private static func dropMm(_ lua: Lua, _ object: AnyObject, _ context: DropContext) throws {
        try unsafeDowncast(object, to: MmReference.self).release(byCollector: context.reason == .gc)
    }

    static let mm = HandleClass(.mm, methods: mmMethods, drop: dropMm)
    static let mmWithUser = HandleClass(.mmWithUser, methods: withUserMethods + [
        ("into_mmput_async", MmMethods.intoMmputAsync),
    ], drop: dropMm)
    static let mmWithUserAsync = HandleClass(.mmWithUserAsync, methods: withUserMethods, drop: dropMm)

    private static let guardMethods: [(String, Binding)] = [
        ("vma_lookup", GuardMethods.vmaLookup),
        ("vmas", GuardMethods.vmas),
    ]

    /// Dropping a guard unlocks; the collector doing it is a warning.
    private static func dropMmapGuard(_ lua: Lua, _ object: AnyObject, _ context: DropContext) throws {
        let guard_ = unsafeDowncast(object, to: MmapGuard.self)
        lua.runtime.warnIfCollected(guard_, context)
        try guard_.mm.unlock(guard_, byCollector: context.reason == .gc)
    }

    static let mmapReadGuard = HandleClass(.mmapReadGuard, methods: guardMethods, drop: dropMmapGuard)
    static let mmapWriteGuard = HandleClass(.mmapWriteGuard, methods: guardMethods + [
        ("downgrade", GuardMethods.downgrade),
    ], drop: dropMmapGuard)

    private static let vmaRefMethods: [(String, Binding)] = [
        ("vm_start", { L in bind(L) { lua in lua.push(try lua.vmaRef(1).vmStart()); return 1 } }),
        ("vm_end", { L in bind(L) { lua in lua.push(try lua.vmaRef(1).vmEnd()); return 1 } }),
        ("flags", { L in bind(L) { lua in lua.push(try lua.vmaRef(1).flags().rawValue); return 1 } }),
        ("anon_vma", { L in bind(L) { lua in if let id = try lua.vmaRef(1).anonVma() { lua.push(id) } else { lua.pushNil() }
            return 1 } }),
        ("mm", VmaMethods.mm),
        ("zap_vma_range", VmaMethods.zapVmaRange),
        ("zap_page_range_single", VmaMethods.zapVmaRange),  // the C name (Rust's VmaRef::zap_page_range_single)
        ("as_mixedmap_vma", VmaMethods.asMixedmapVma),
    ]

    /// A VmaRef is gone once its guard is (or its VMA unmapped).
    private static func vmaGone(_ object: AnyObject) -> Bool {
        // SAFETY: these handle types are created only over VmaRef and its subclasses.
        !unsafeDowncast(object, to: VmaRef.self).isValid
    }

    static let vmaRef = HandleClass(.vmaRef, methods: vmaRefMethods, isGone: vmaGone)
    static let vmaMixedMap = HandleClass(.vmaMixedMap, methods: vmaRefMethods + [
        ("vm_insert_page", VmaMethods.vmInsertPage),
    ], isGone: vmaGone)
    static let vmaNew = HandleClass(.vmaNew, methods: vmaRefMethods + [
        ("set_mixedmap", VmaMethods.setMixedmap),
        ("set_io", { L in VmaMethods.update(L) { try $0.setIo() } }),
        ("set_dontexpand", { L in VmaMethods.update(L) { try $0.setDontexpand() } }),
        ("set_dontcopy", { L in VmaMethods.update(L) { try $0.setDontcopy() } }),
        ("set_dontdump", { L in VmaMethods.update(L) { try $0.setDontdump() } }),
        ("readable", { L in VmaMethods.test(L) { try $0.readable() } }),
        ("writable", { L in VmaMethods.test(L) { try $0.writable() } }),
        ("executable", { L in VmaMethods.test(L) { try $0.executable() } }),
        ("try_clear_mayread", { L in VmaMethods.update(L) { try $0.tryClear(.mayread, unless: .read) } }),
        ("try_clear_maywrite", { L in VmaMethods.update(L) { try $0.tryClear(.maywrite, unless: .write) } }),
        ("try_clear_mayexec", { L in VmaMethods.update(L) { try $0.tryClear(.mayexec, unless: .exec) } }),
    ])

    /// A VMA read lock derefs to its VMA; dropping it ends the read.
    static let vmaReadGuard = HandleClass(.vmaReadGuard, methods: vmaRefMethods, drop: { lua, object, context in
        let guard_ = unsafeDowncast(object, to: VmaReadGuard.self)
        lua.runtime.warnIfCollected(guard_, context)
        try guard_.vma.mm?.unlock(guard_, byCollector: context.reason == .gc)
    })
}

enum MmMethods {
    /// `m:mmget_not_zero()` → MmWithUser, or nil once `mm_users` is zero.
    static let mmgetNotZero: Binding = { L in
        bind(L) { lua in
            let ref = try lua.mmReference(1, users: false)
            return lua.pushOptionalHandle(try ref.mmgetNotZero(site: lua.site()), .mmWithUser)
        }
    }

    /// `x:clone()` → another handle of the same kind: mmgrab for `Mm`,
    /// mmget for the others.
    static let clone: Binding = { L in
        bind(L) { lua in
            let ref = try lua.mmReference(1, users: false)
            let site = lua.site()
            switch ref {
            case let mm as Mm: lua.pushHandle(try mm.clone(site: site), .mm)
            case let user as MmWithUser: lua.pushHandle(try user.mmget(site: site), .mmWithUser)
            case let async as MmWithUserAsync: lua.pushHandle(try async.clone(site: site), .mmWithUserAsync)
            default: throw KernelError.bug("clone of \(ref), which is no kind of mm handle")
            }
            return 1
        }
    }

    /// `u:mmgrab()` → Mm.
    static let mmgrab: Binding = { L in
        bind(L) { lua in
            let ref = try lua.mmReference(1, users: true)
            lua.pushHandle(try ref.mmgrab(site: lua.site()), .mm)
            return 1
        }
    }

    /// `u:mmget()` → MmWithUser.
    static let mmget: Binding = { L in
        bind(L) { lua in
            let ref = try lua.mmReference(1, users: true)
            lua.pushHandle(try ref.mmget(site: lua.site()), .mmWithUser)
            return 1
        }
    }

    /// `u:into_mmput_async()` → MmWithUserAsync; `u` is moved.
    static let intoMmputAsync: Binding = { L in
        bind(L) { lua in
            let h = try lua.handle(1, .mmWithUser)
            try lua.object(h, as: MmWithUser.self).checkUsers()
            guard Handles.state(h) == .owned else {
                throw KernelError.bug("into_mmput_async of a borrowed \(lua.describe(h)): it holds no count to move")
            }
            let user = lua.object(h, as: MmWithUser.self)
            let async = try user.intoMmputAsync(site: lua.site())
            lua.pushHandle(async, .mmWithUserAsync)
            lua.end(1, h, as: .moved)
            return 1
        }
    }

    static let mmapReadLock: Binding = { L in lock(L, write: false, nested: false) }
    static let mmapWriteLock: Binding = { L in lock(L, write: true, nested: false) }
    static let mmapReadLockNested: Binding = { L in lock(L, write: false, nested: true) }
    static let mmapWriteLockNested: Binding = { L in lock(L, write: true, nested: true) }
    static let mmapReadTrylock: Binding = { L in trylock(L, write: false) }
    static let mmapWriteTrylock: Binding = { L in trylock(L, write: true) }

    /// `mmap_read_lock` / `mmap_write_lock` (`*_nested(subclass)` for a
    /// second mm's: they are one lockdep class): waits while contended.
    private static func lock(_ L: OpaquePointer?, write: Bool, nested: Bool) -> Int32 {
        bind(L) { lua in
            let mm = try lua.mmReference(1, users: true).mm
            let subclass = nested ? try lua.integer(2) : 0
            let site = lua.site()
            try lua.checkCanWait(mm.machine.scheduler.wouldWait(for: mm.mmapLock, write: write),
                                 write ? "mmap_write_lock" : "mmap_read_lock")
            return try lua.blocking { lua in
                guard let guard_ = try mm.mmapLock(write: write, subclass: subclass, site: site) else { return nil }
                lua.pushHandle(guard_, write ? .mmapWriteGuard : .mmapReadGuard, lender: 1)
                return 1
            }
        }
    }

    /// Runs `body` under `mm`'s write lock, taken (waiting for it) for an
    /// operation of this binding (mmap, munmap).
    private static func underWriteLock(_ lua: Lua, _ mm: MmStruct, _ what: String,
                                       _ body: @escaping (Lua, MmapGuard) throws -> Int32) throws -> Int32 {
        let site = lua.site()
        try lua.checkCanWait(mm.machine.scheduler.wouldWait(for: mm.mmapLock, write: true), what)
        return try lua.blocking { lua in
            guard let guard_ = try mm.mmapLock(write: true, site: site) else { return nil }
            return try body(lua, guard_)
        }
    }

    /// `mmap_read_trylock` / `mmap_write_trylock`: a guard or nil.
    private static func trylock(_ L: OpaquePointer?, write: Bool) -> Int32 {
        bind(L) { lua in
            let mm = try lua.mmReference(1, users: true).mm
            let guard_ = try mm.mmapTryLock(write: write, site: lua.site())
            return lua.pushOptionalHandle(guard_, write ? .mmapWriteGuard : .mmapReadGuard, lender: 1)
        }
    }

    /// `u:lock_vma_under_rcu(addr)` → VmaReadGuard, or nil when no VMA is
    /// there or a writer holds or waits for the mmap lock.
    static let lockVmaUnderRcu: Binding = { L in
        bind(L) { lua in
            let mm = try lua.mmReference(1, users: true).mm
            let guard_ = mm.lockVmaUnderRcu(try lua.address(2), site: lua.site())
            return lua.pushOptionalHandle(guard_, .vmaReadGuard, lender: 1)
        }
    }

    /// `u:mmap{addr=, len=, prot=, flags=, hook=}` → address. Takes the
    /// write lock; a `hook` runs as a driver's mmap handler, with a VmaNew
    /// valid during the call.
    static let mmap: Binding = { L in
        bind(L) { lua in
            let mm = try lua.mmReference(1, users: true).mm
            let o = try lua.options(2, arg: 2, ["addr", "len", "prot", "flags", "offset", "hook"])
            let addr = try o.integer("addr", default: nil)
            guard let len = try o.integer("len", default: nil) else { throw o.error("len", "integer", at: o.index("len")) }
            let prot = try o.integer("prot", default: Mmap.PROT_READ | Mmap.PROT_WRITE) ?? 0
            let offset = try o.integer("offset", default: 0) ?? 0
            let hook = !o.isAbsent("hook")
            if hook, lua.type(o.index("hook")) != LUA_TFUNCTION { throw o.error("hook", "function", at: o.index("hook")) }
            // A driver's mapping is MAP_PRIVATE, anonymous memory MAP_PRIVATE | MAP_ANONYMOUS.
            let flags = try o.integer("flags", default: hook ? Mmap.MAP_PRIVATE : Mmap.MAP_PRIVATE | Mmap.MAP_ANONYMOUS) ?? 0
            let file = hook ? lua.runtime.file(lua, of: o.index("hook"), machine: mm.machine) : nil
            return try underWriteLock(lua, mm, "mmap") { lua, guard_ in
                let release = { () throws in try mm.unlock(guard_) }
                return try lua.blocking { lua in
                    // prepareMmap waits for the readers of what a MAP_FIXED range covers.
                    guard let new = try stepUnder(guard_, release, {
                        try mm.prepareMmap(under: guard_, addr: addr.map { UInt64(bitPattern: Int64($0)) },
                                           len: UInt64(bitPattern: Int64(len)), prot: prot, flags: flags, file: file,
                                           offset: UInt64(bitPattern: Int64(offset)))
                    }) else { return nil }
                    guard hook else { return try commit(lua, new, guard_, release) }
                    let hookAt = o.index("hook")
                    lua.pushHandle(guard_, .mmapWriteGuard, lender: 1)  // the hook's VmaNew keeps it
                    let gh = lua.top
                    let vh = lua.pushHandle(new, .vmaNew, state: .borrowed, keepAlive: gh)
                    let vi = lua.top
                    lua_pushvalue(L, hookAt)
                    lua_pushvalue(L, vi)
                    return lua.pcall(arguments: 1) { lua, status, _ in
                        // The VmaNew expires with the hook; the guard goes through its handle.
                        lua.end(vi, vh, as: .dropped, flags: HandleFlag.expired)
                        let drop = { () throws in
                            if let h = mmlab_tohandle(lua.L, gh), Handles.state(h) == .owned { try lua.drop(gh, h, .close) }
                        }
                        guard status == LUA_OK else {
                            mm.abortMmap(new)
                            do { try drop() } catch {
                                lua.pop()  // the hook's error: the drop's takes its place
                                throw error
                            }
                            return MMLAB_RAISE
                        }
                        return try commit(lua, new, guard_, drop)
                    }
                }
            }
        }
    }

    /// A step of an operation under `guard_`, the binding's own write lock:
    /// `body`'s result, or nil to wait; a failure, or an error the task was
    /// woken with, releases the lock first.
    private static func stepUnder<T>(_ guard_: MmapGuard, _ release: () throws -> Void,
                                     _ body: () throws -> T?) throws -> T? {
        do {
            if let error = guard_.mm.machine.scheduler.current.takeWakeError() { throw error }
            return try body()
        } catch {
            try release()
            throw error
        }
    }

    /// mmap's last step: the VMA goes in (waiting for the readers of the
    /// neighbours it merges with), the lock is released, the address
    /// returned.
    private static func commit(_ lua: Lua, _ new: VmaNew, _ guard_: MmapGuard,
                               _ release: @escaping () throws -> Void) throws -> Int32 {
        try lua.blocking { lua in
            guard let address = try stepUnder(guard_, { new.vma.mm?.abortMmap(new); try release() }, {
                guard_.mm.commitMmap(new)
            }) else { return nil }
            try release()
            lua.push(address)
            return 1
        }
    }

    /// `u:munmap(addr, len)`: takes the write lock, and waits for the
    /// readers of the VMAs it changes.
    static let munmap: Binding = { L in
        bind(L) { lua in
            let mm = try lua.mmReference(1, users: true).mm
            let addr = try lua.address(2), len = try lua.address(3)
            return try underWriteLock(lua, mm, "munmap") { lua, guard_ in
                let release = { () throws in try mm.unlock(guard_) }
                return try lua.blocking { _ in
                    guard try stepUnder(guard_, release, { try mm.munmap(under: guard_, addr, len) ? true : nil }) != nil else {
                        return nil
                    }
                    try release()
                    return 0
                }
            }
        }
    }

    /// `u:follow_page(addr)` → BorrowedPage, or nil where nothing is mapped.
    static let followPage: Binding = { L in
        bind(L) { lua in
            let mm = try lua.mmReference(1, users: true).mm
            return lua.pushOptionalHandle(mm.followPage(try lua.address(2)), .borrowedPage, state: .borrowed)
        }
    }
}

enum GuardMethods {
    static func guardObject(_ lua: Lua) throws -> MmapGuard {
        let (h, _) = try lua.handle(1, oneOf: [.mmapReadGuard, .mmapWriteGuard], expected: "MmapReadGuard")
        return lua.object(h, as: MmapGuard.self)
    }

    /// `g:vma_lookup(addr)` → VmaRef (valid while `g` is held) or nil.
    static let vmaLookup: Binding = { L in
        bind(L) { lua in
            let vma = try guardObject(lua).vmaLookup(try lua.address(2))
            return lua.pushOptionalHandle(vma, .vmaRef, state: .borrowed, viewing: 1)
        }
    }

    /// `g:vmas()` → `{{vm_start=, vm_end=, flags=, perms="rw-p"}, ...}`, in
    /// address order: what /proc/PID/maps shows.
    static let vmas: Binding = { L in
        bind(L) { lua in
            let guard_ = try guardObject(lua)
            guard !guard_.isReleased else { throw KernelError.bug("use of \(guard_) after it was released") }
            let vmas = guard_.mm.vmas
            lua.newTable(array: Int32(vmas.count))
            for (i, vma) in vmas.enumerated() {
                lua.newTable(hash: 4)
                lua.set("vm_start", vma.start)
                lua.set("vm_end", vma.end)
                lua.set("flags", vma.flags.rawValue)
                lua.set("perms", vma.perms)
                lua_rawseti(L, -2, lua_Integer(i + 1))
            }
            return 1
        }
    }

    /// `wg:downgrade()` → MmapReadGuard; `wg` is moved.
    static let downgrade: Binding = { L in
        bind(L) { lua in
            let h = try lua.handle(1, .mmapWriteGuard)
            let write = lua.object(h, as: MmapGuard.self)
            let read = try write.mm.downgrade(write, site: lua.site())
            lua_settop(L, 1)
            lua_getiuservalue(L, 1, 1)  // 2: the mm handle the write guard borrows
            lua.pushHandle(read, .mmapReadGuard, lender: 2)
            lua.end(1, h, as: .moved)
            return 1
        }
    }
}

enum VmaMethods {
    /// `v:mm()` → the VMA's mm, borrowed.
    static let mm: Binding = { L in
        bind(L) { lua in
            lua.pushHandle(try lua.vmaRef(1).mm(), .mmWithUser, state: .borrowed, keepAlive: 1)
            return 1
        }
    }

    /// `v:zap_vma_range(addr, size)`: nothing outside the VMA.
    static let zapVmaRange: Binding = { L in
        bind(L) { lua in
            try lua.vmaRef(1).zapVmaRange(try lua.address(2), try lua.address(3))
            return 0
        }
    }

    /// `v:as_mixedmap_vma()` → VmaMixedMap, or nil without VM_MIXEDMAP.
    static let asMixedmapVma: Binding = { L in
        bind(L) { lua in
            lua.pushOptionalHandle(try lua.vmaRef(1).asMixedMap(), .vmaMixedMap, state: .borrowed, keepAlive: 1)
        }
    }

    /// `v:vm_insert_page(addr, page)`: takes a reference on the page.
    static let vmInsertPage: Binding = { L in
        bind(L) { lua in
            let (h, _) = try lua.handle(1, oneOf: [.vmaMixedMap], expected: "VmaMixedMap")
            let vma = lua.object(h, as: VmaMixedMap.self)
            try vma.check()
            try vma.vmInsertPage(try lua.address(2), try lua.page(3))
            return 0
        }
    }

    static func vmaNew(_ lua: Lua) throws -> VmaNew {
        let vma = try lua.object(1, .vmaNew, as: VmaNew.self)
        try vma.check()
        return vma
    }

    /// `n:set_mixedmap()` → VmaMixedMap.
    static let setMixedmap: Binding = { L in
        bind(L) { lua in
            lua.pushHandle(try vmaNew(lua).setMixedmap(), .vmaMixedMap, state: .borrowed, keepAlive: 1)
            return 1
        }
    }

    static func update(_ L: OpaquePointer?, _ body: (VmaNew) throws -> Void) -> Int32 {
        bind(L) { lua in
            try body(try vmaNew(lua))
            return 0
        }
    }

    static func test(_ L: OpaquePointer?, _ body: (VmaNew) throws -> Bool) -> Int32 {
        bind(L) { lua in
            lua.push(try body(try vmaNew(lua)))
            return 1
        }
    }
}
