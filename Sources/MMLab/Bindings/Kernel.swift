import CLua
import LuaShim
import MMCore

/// The `kernel` table: the machine, handles and errors. Each MMCore module
/// adds its own part (Memory.swift, Debug.swift).
extension Runtime {
    func openKernel(_ lua: Lua) {
        let L = lua.L
        openErrors(lua)
        for cls in [HandleClass.page, .borrowedPage, .pagePointer, .mapping, .shrinker, .task, .spinLock, .mutex,
                    .spinLockGuard, .mutexGuard, .cpuGuard, .dynamicPerCpu, .staticPerCpu, .perCpuToken,
                    .mm, .mmWithUser, .mmWithUserAsync, .mmapReadGuard, .mmapWriteGuard, .vmaRef, .vmaMixedMap,
                    .vmaNew, .vmaReadGuard, .userSlice, .userSliceReader, .userSliceWriter, .drmMmAllocator,
                    .drmMmNode, .drmMmScan, .rangeAllocator, .binderAlloc, .binderBuffer, .waitQueue, .completion] {
            register(cls, in: lua)
        }

        lua.newTable()
        lua_rawgeti(L, mmlab_registryindex(), lua_Integer(errorMetatable))
        lua.setField(-2, "Error")
        lua.setFunctions([
            ("boot", KernelBindings.boot),
            ("reboot", KernelBindings.reboot),
            ("machine", KernelBindings.machine),
            ("drop", KernelBindings.drop),
            ("state", KernelBindings.state),
        ])
        lua.newTable(hash: Int32(Errno.all.count))
        for (name, errno) in Errno.all {
            lua.push(Int(errno.rawValue))
            lua.setField(-2, name)
        }
        lua.setField(-2, "errno")
        openMemory(lua)
        openSched(lua)
        openPerCpu(lua)
        openMm(lua)
        openUaccess(lua)
        openDrmMm(lua)
        openBinder(lua)
        openOutput(lua)
        openDebug(lua)
        lua.newTable()
        lua.setField(-2, "params")  // what `mmlab sweep` varies; empty otherwise

        lua_pushvalue(L, -1)
        lua_setglobal(L, "kernel")
        lua_getglobal(L, "package")
        lua.getField(-1, "loaded")
        lua_rotate(L, -3, -1)
        lua.setField(-2, "kernel")
        lua.pop(2)

        // math.random follows the machine's seed.
        lua_getglobal(L, "math")
        lua.getField(-1, "randomseed")
        lua.push(configuration.seed)
        if lua_pcallk(L, 1, 0, 0, 0, nil) != LUA_OK { lua.pop() }
        lua.pop()
    }

    /// The `kernel.Error` metatable.
    private func openErrors(_ lua: Lua) {
        lua.newTable(hash: 2)
        lua.push("kernel.Error")
        lua.setField(-2, "__name")
        lua.pushBinding(KernelBindings.errorToString, name: "__tostring")
        lua.setField(-2, "__tostring")
        errorMetatable = luaL_ref(lua.L, mmlab_registryindex())
    }

    /// The KernelError a `kernel.Error` value at `idx` describes, if it is one.
    func kernelError(_ lua: Lua, at idx: Int32) -> KernelError? {
        let idx = lua.absIndex(idx)
        guard lua.type(idx) == LUA_TTABLE, lua_getmetatable(lua.L, idx) != 0 else { return nil }
        lua_rawgeti(lua.L, mmlab_registryindex(), lua_Integer(errorMetatable))
        let isError = lua_rawequal(lua.L, -1, -2) != 0
        lua.pop(2)
        guard isError else { return nil }
        lua.getField(idx, "message")
        let message = lua.string(at: -1) ?? ""
        lua.getField(idx, "errno")
        let name = lua.string(at: -1)
        lua.pop(2)
        guard let name, let errno = Errno.all.first(where: { $0.0 == name })?.1 else { return .bug(message) }
        return KernelError(errno, message)
    }
}

extension Lua {
    /// The regions of a `memmap` list at `idx`: `{start=, size=, type=}` each.
    func memmap(_ idx: Int32, arg: Int32) throws -> [MemoryRegion] {
        guard type(idx) == LUA_TTABLE else { throw fieldError(arg, "memmap", "list of regions") }
        var regions: [MemoryRegion] = []
        var i: lua_Integer = 1
        while lua_rawgeti(L, idx, i) != LUA_TNIL {
            let entry = top
            let name = "memmap[\(i)]"
            guard type(entry) == LUA_TTABLE else { throw fieldError(arg, name, "table") }
            try checkFields(entry, arg: arg, known: ["start", "size", "type"])
            getField(entry, "start")
            let start = try size(-1, arg: arg, field: name + ".start")
            getField(entry, "size")
            let bytes = try size(-1, arg: arg, field: name + ".size")
            getField(entry, "type")
            let kindName = string(at: -1) ?? "ram"
            guard let kind = MemoryKind(rawValue: kindName), isNoneOrNil(-1) || string(at: -1) != nil else {
                throw LuaFailure.argument(arg, "field '\(name).type': \"ram\", \"reserved\" or \"mmio\" expected, got \(describe(-1))")
            }
            pop(4)
            regions.append(MemoryRegion(start: PhysAddr(start), size: bytes, kind: kind))
            i += 1
        }
        pop()
        return regions
    }

    /// Sets each binding as a field of the table on top.
    func setFunctions(_ functions: [(String, Binding)]) {
        for (name, fn) in functions {
            pushBinding(fn, name: name)
            setField(-2, name)
        }
    }

    /// Sets each integer as a field of the table on top.
    func setConstants(_ constants: [(String, Int)]) {
        for (name, value) in constants { set(name, value) }
    }

    /// `t[name] = value` for the table on top.
    func set(_ name: String, _ value: Int) { push(value); setField(-2, name) }
    func set(_ name: String, _ value: UInt64) { push(value); setField(-2, name) }
    func set(_ name: String, _ value: Bool) { push(value); setField(-2, name) }
    func set(_ name: String, _ value: String) { push(value); setField(-2, name) }
}

enum KernelBindings {
    /// `kernel.boot{memory=, cpus=, seed=, memmap=, highmem=, init_on_alloc=, init_on_free=, page_poison=,
    /// max_map_count=}`.
    static let boot: Binding = { L in
        bind(L) { lua in
            try lua.runtime.boot(try machineConfig(lua))
            return 0
        }
    }

    /// `kernel.reboot{...}`: a fresh machine (as `boot` takes it) once
    /// nothing of the old one is alive; EBUSY naming what is.
    static let reboot: Binding = { L in
        bind(L) { lua in
            try lua.runtime.reboot(try machineConfig(lua))
            return 0
        }
    }

    /// The machine argument 1 describes, over the configured defaults.
    private static func machineConfig(_ lua: Lua) throws -> MachineConfig {
            var config = lua.runtime.configuration.machine
            if !lua.isNoneOrNil(1) {
                try lua.checkTable(1)
                try lua.checkFields(1, arg: 1, known: [
                    "memory", "cpus", "seed", "memmap", "highmem", "init_on_alloc", "init_on_free", "page_poison",
                    "max_map_count", "min_free_kbytes", "watermark_scale_factor", "lowmem_reserve_ratio",
                ])
                var memory: UInt64?
                if lua.getField(1, "memory") > LUA_TNIL { memory = try lua.size(-1, arg: 1, field: "memory") }
                lua.pop()
                if lua.getField(1, "memmap") > LUA_TNIL {
                    let regions = try lua.memmap(lua.top, arg: 1)
                    config.memmap = regions
                    config.memory = MachineConfig.ram(regions)
                }
                lua.pop()
                if let memory { config.memory = memory }
                if lua.getField(1, "highmem") > LUA_TNIL { config.highmem = try lua.size(-1, arg: 1, field: "highmem") }
                lua.pop()
                config.cpus = try lua.integerField(1, "cpus", arg: 1, default: config.cpus) ?? config.cpus
                if let seed = try lua.integerField(1, "seed", arg: 1, default: nil) {
                    config.seed = UInt64(bitPattern: Int64(seed))
                }
                config.initOnAlloc = try lua.booleanField(1, "init_on_alloc", arg: 1, default: false)
                config.initOnFree = try lua.booleanField(1, "init_on_free", arg: 1, default: false)
                config.pagePoison = try lua.booleanField(1, "page_poison", arg: 1, default: true)
                config.maxMapCount = try lua.integerField(1, "max_map_count", arg: 1, default: config.maxMapCount)
                    ?? config.maxMapCount
                if let kb = try lua.integerField(1, "min_free_kbytes", arg: 1, default: nil) {
                    guard kb >= 0 else { throw KernelError(.EINVAL, "min_free_kbytes must not be negative, got \(kb)") }
                    config.minFreeKbytes = UInt64(kb)
                }
                if lua.getField(1, "lowmem_reserve_ratio") > LUA_TNIL {
                    // As the sysctl takes them: one per zone (Normal, HighMem); below 1 keeps nothing back.
                    let ratios = try lua.numbers(-1, arg: 1, what: "lowmem_reserve_ratio")
                    guard (1...2).contains(ratios.count), ratios.allSatisfy({ $0 == $0.rounded() && abs($0) < 1e15 }) else {
                        throw LuaFailure.argument(1, "field 'lowmem_reserve_ratio': a list of 1 or 2 integers (Normal, HighMem)")
                    }
                    for (i, r) in ratios.enumerated() { config.lowmemReserveRatio[i] = r < 1 ? 0 : UInt64(r) }
                }
                lua.pop()
                if let f = try lua.integerField(1, "watermark_scale_factor", arg: 1, default: nil) {
                    guard (1...3000).contains(f) else { throw KernelError(.EINVAL, "watermark_scale_factor must be between 1 and 3000, got \(f)") }
                    config.watermarkScaleFactor = UInt64(f)
                }
            }
            return config
    }

    /// `kernel.machine()` → the configuration as a table.
    static let machine: Binding = { L in
        bind(L) { lua in
            let machine = try lua.machine()
            let config = machine.config
            lua.newTable(hash: 8)
            lua.set("memory", config.memory)
            lua.set("cpus", config.cpus)
            lua.set("seed", config.seed)
            lua.set("highmem", config.highmem)
            lua.set("init_on_alloc", config.initOnAlloc)
            lua.set("init_on_free", config.initOnFree)
            lua.set("page_poison", config.pagePoison)
            lua.set("max_map_count", config.maxMapCount)
            lua.set("min_free_kbytes", machine.pageAllocator.minFreeKbytes)
            lua.set("watermark_scale_factor", config.watermarkScaleFactor)
            lua.newTable(array: Int32(machine.memory.regions.count))
            for (i, region) in machine.memory.regions.enumerated() {
                lua.newTable(hash: 3)
                lua.set("start", region.start.rawValue)
                lua.set("size", region.size)
                lua.set("type", region.kind.rawValue)
                lua_rawseti(lua.L, -2, lua_Integer(i + 1))
            }
            lua.setField(-2, "memmap")
            return 1
        }
    }

    /// `kernel.drop(x)`: drops now; a dead handle is a double drop.
    static let drop: Binding = { L in
        bind(L) { lua in
            let h = try lua.anyHandle(1)
            try lua.drop(1, h, .drop)
            return 0
        }
    }

    /// `kernel.state(x)` → "owned", "borrowed", "dropped" or "moved".
    static let state: Binding = { L in
        bind(L) { lua in
            lua.push(lua.state(of: try lua.anyHandle(1)).name)
            return 1
        }
    }

    /// `kernel.Error.__tostring` → `EINVAL: message` or `BUG: message`.
    static let errorToString: Binding = { L in
        bind(L) { lua in
            try lua.checkTable(1)
            lua.getField(1, "message")
            let message = lua.describe(-1)
            lua.getField(1, "errno")
            let errno = lua.string(at: -1) ?? "BUG"
            lua.push("\(errno): \(message)")
            return 1
        }
    }
}
