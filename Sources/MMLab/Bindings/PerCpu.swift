import CLua
import LuaShim
import MMCore

/// `kernel.percpu` (MMCore/PerCpu): `CpuGuard`, static and dynamic per-CPU
/// variables, and tokens.
extension Runtime {
    func openPerCpu(_ lua: Lua) {
        lua.newTable()
        lua.setFunctions([
            ("CpuGuard", PerCpuBindings.cpuGuard),
            ("define", PerCpuBindings.define),
            ("get", PerCpuBindings.get),
            ("alloc", PerCpuBindings.alloc),
        ])
        lua.setField(-2, "percpu")
    }

    /// Pushes the table of a `value` variable's slots, by CPU.
    func pushValues(_ lua: Lua, _ area: PerCpuArea) {
        if let ref = perCpuValues[ObjectIdentifier(area)] {
            lua_rawgeti(lua.L, mmlab_registryindex(), lua_Integer(ref))
            return
        }
        lua.newTable(array: Int32(area.cpus))
        lua_pushvalue(lua.L, -1)
        perCpuValues[ObjectIdentifier(area)] = luaL_ref(lua.L, mmlab_registryindex())
    }

    /// Lets go of a freed variable's values.
    func forgetValues(_ area: PerCpuArea) {
        if let ref = perCpuValues.removeValue(forKey: ObjectIdentifier(area)) {
            luaL_unref(L, mmlab_registryindex(), ref)
        }
    }
}

extension Lua {
    /// A per-CPU type name at `arg`.
    func perCpuType(_ arg: Int32) throws -> PerCpuType {
        let name = try string(arg)
        guard let type = PerCpuType(rawValue: name) else {
            throw LuaFailure.argument(arg, "unknown per-CPU type '\(name)' (i8, i16, i32, i64, u8, u16, u32, u64, isize, usize or value)")
        }
        return type
    }

    /// The variable behind the live per-CPU handle at `arg`.
    func perCpu(_ arg: Int32) throws -> PerCpuArea {
        object(try handle(arg, .dynamicPerCpu, or: .staticPerCpu), as: PerCpuArea.self)
    }

    /// Pushes `cpu`'s slot.
    func pushSlot(_ area: PerCpuArea, _ cpu: Int) throws {
        if area.type.isNumeric {
            let v = try area.read(cpu)
            accessed("percpu read \(area.name ?? "\(area)")", [.init("of_cpu", cpu), .init("value", Int(truncatingIfNeeded: v))])
            push(v)
        } else {
            _ = try area.read(cpu)  // the CPU check
            runtime.pushValues(self, area)
            lua_rawgeti(L, -1, lua_Integer(cpu))
            lua_rotate(L, -2, 1)
            pop()
        }
    }

    /// The integer argument `arg` as a value of `type`: one outside the
    /// type is an argument error, as Rust's types make it impossible.
    func perCpuNumber(_ arg: Int32, _ type: PerCpuType) throws(LuaFailure) -> Int64 {
        let v = Int64(try integer(arg))
        guard type.holds(v) else { throw .argument(arg, "\(v) is out of range for \(type.rawValue) (\(type.valueRange))") }
        return v
    }

    /// Sets `cpu`'s slot to the value at `idx` (for a numeric type, an
    /// integer the type holds; `arg` is the argument it came as).
    func setSlot(_ area: PerCpuArea, _ cpu: Int, from idx: Int32, arg: Int32? = nil) throws {
        if area.type.isNumeric {
            let v = Int64(try integer(idx))
            guard area.type.holds(v) else {
                throw LuaFailure.argument(arg ?? idx, "\(v) is out of range for \(area.type.rawValue) (\(area.type.valueRange))")
            }
            try area.write(cpu, v)
            accessed("percpu write \(area.name ?? "\(area)")", [.init("of_cpu", cpu), .init("value", Int(truncatingIfNeeded: v))])
        } else {
            _ = try area.read(cpu)
            let idx = absIndex(idx)
            runtime.pushValues(self, area)
            lua_pushvalue(L, idx)
            lua_rawseti(L, -2, lua_Integer(cpu))
            pop()
        }
    }

    /// The running task's CPU: what `this_cpu_*` operate on.
    func thisCpu() throws -> Int { try scheduler().current.cpu }

    /// `--trace-accesses`: an access on the trace.
    @inline(__always)
    func accessed(_ what: @autoclosure () -> String, _ args: @autoclosure () -> [TraceLog.Argument]) {
        if runtime.traceAccesses { runtime.traceAccess(self, what(), args()) }
    }
}

enum PerCpuBindings {
    /// `CpuGuard()`: preemption off until it is dropped.
    static let cpuGuard: Binding = { L in
        bind(L) { lua in
            let runtime = lua.runtime
            lua.pushHandle(try lua.scheduler().cpuGuard(site: lua.site()), .cpuGuard)
            return 1
        }
    }

    /// `define(name, type, init)` → StaticPerCpu; EEXIST if `name` is taken.
    static let define: Binding = { L in
        bind(L) { lua in
            let name = try lua.string(1)
            let type = try lua.perCpuType(2)
            let initial = type.isNumeric && !lua.isNoneOrNil(3) ? try lua.perCpuNumber(3, type) : 0
            let runtime = lua.runtime
            let area = try lua.machine().percpu.define(name, type, initial: initial, site: lua.site())
            if !type.isNumeric {
                for cpu in 0..<area.cpus { try lua.setSlot(area, cpu, from: 3) }
            }
            lua.pushHandle(area, .staticPerCpu, state: .borrowed)
            return 1
        }
    }

    /// `get(name)` → the StaticPerCpu, or nil.
    static let get: Binding = { L in
        bind(L) { lua in
            guard let area = try lua.machine().percpu.get(try lua.string(1)) else { return 0 }
            lua.pushHandle(area, .staticPerCpu, state: .borrowed)
            return 1
        }
    }

    /// `alloc(type, init)` → DynamicPerCpu: `init` a value for every CPU, a
    /// function of the CPU, or nothing (zero).
    static let alloc: Binding = { L in
        bind(L) { lua in
            let type = try lua.perCpuType(1)
            let machine = try lua.machine()
            let cpus = machine.config.cpus
            lua_settop(L, 2)
            lua.newTable(array: Int32(cpus))  // 3: the initial values, by CPU
            for cpu in 0..<cpus {
                if lua.type(2) == LUA_TFUNCTION {
                    lua_pushvalue(L, 2)
                    lua.push(cpu)
                    guard lua_pcallk(L, 1, 1, 0, 0, nil) == LUA_OK else { return MMLAB_RAISE }
                } else {
                    lua_pushvalue(L, 2)
                }
                if type.isNumeric && !lua.isNoneOrNil(-1) {
                    var isnum: Int32 = 0
                    let v = lua_tointegerx(L, -1, &isnum)
                    guard isnum != 0 else {
                        throw LuaFailure.argument(2, "initial value for CPU \(cpu): integer expected, got \(lua.typeName(-1))")
                    }
                    guard type.holds(v) else {
                        throw LuaFailure.argument(2, "initial value for CPU \(cpu): \(v) is out of range for \(type.rawValue) (\(type.valueRange))")
                    }
                }
                lua_rawseti(L, 3, lua_Integer(cpu))
            }
            let runtime = lua.runtime
            let area = machine.percpu.alloc(type, site: lua.site()) { cpu in
                lua_rawgeti(L, 3, lua_Integer(cpu))
                defer { lua.pop() }
                return lua_tointegerx(L, -1, nil)
            }
            if !type.isNumeric {
                for cpu in 0..<cpus { lua_rawgeti(L, 3, lua_Integer(cpu)); try lua.setSlot(area, cpu, from: -1); lua.pop() }
            }
            machine.percpu.retain(area)
            lua.pushHandle(area, .dynamicPerCpu)
            return 1
        }
    }
}

extension HandleClass {
    /// What static and dynamic per-CPU variables share.
    static let perCpuMethods: [(String, Binding)] = [
        ("this_cpu_read", { L in bind(L) { lua in try lua.pushSlot(lua.perCpu(1), lua.thisCpu()); return 1 } }),
        ("this_cpu_write", { L in bind(L) { lua in try lua.setSlot(lua.perCpu(1), lua.thisCpu(), from: 2); return 0 } }),
        ("this_cpu_add", { L in add(L, sign: 1, returning: false) }),
        ("this_cpu_sub", { L in add(L, sign: -1, returning: false) }),
        ("this_cpu_add_return", { L in add(L, sign: 1, returning: true) }),
        ("this_cpu_sub_return", { L in add(L, sign: -1, returning: true) }),
        ("this_cpu_inc", { L in bind(L) { lua in try added(lua, lua.perCpu(1), 1); return 0 } }),
        ("this_cpu_dec", { L in bind(L) { lua in try added(lua, lua.perCpu(1), -1); return 0 } }),
        ("this_cpu_xchg", { L in
            bind(L) { lua in
                let area = try lua.perCpu(1)
                let cpu = try lua.thisCpu()
                if area.type.isNumeric {
                    lua.push(try area.exchange(cpu, lua.perCpuNumber(2, area.type)))
                } else {
                    try lua.pushSlot(area, cpu)
                    try lua.setSlot(area, cpu, from: 2)
                }
                return 1
            }
        }),
        ("this_cpu_cmpxchg", { L in
            bind(L) { lua in
                let area = try lua.perCpu(1)
                try area.checkNumeric("this_cpu_cmpxchg")
                lua.push(try area.compareExchange(lua.thisCpu(), old: lua.perCpuNumber(2, area.type),
                                                  new: lua.perCpuNumber(3, area.type)))
                return 1
            }
        }),
        ("get_mut", PerCpuMethods.getMut),
        ("per_cpu", { L in bind(L) { lua in try lua.pushSlot(lua.perCpu(1), lua.integer(2)); return 1 } }),
        ("set_per_cpu", { L in bind(L) { lua in try lua.setSlot(lua.perCpu(1), lua.integer(2), from: 3); return 0 } }),
        ("sum", { L in bind(L) { lua in lua.push(try lua.perCpu(1).sum()); return 1 } }),
        ("values", { L in
            bind(L) { lua in
                let area = try lua.perCpu(1)
                lua.newTable(array: Int32(area.cpus))
                for cpu in 0..<area.cpus {
                    try lua.pushSlot(area, cpu)
                    lua_rawseti(L, -2, lua_Integer(cpu))
                }
                return 1
            }
        }),
        ("type", { L in bind(L) { lua in lua.push(try lua.perCpu(1).type.rawValue); return 1 } }),
        ("clone", { L in
            bind(L) { lua in
                let h = try lua.handle(1, .dynamicPerCpu, or: .staticPerCpu)
                let area = lua.object(h, as: PerCpuArea.self)
                if h.pointee.type == HandleType.staticPerCpu.rawValue {
                    lua.pushHandle(area, .staticPerCpu, state: .borrowed)
                } else {
                    try lua.machine().percpu.retain(area)
                    lua.pushHandle(area, .dynamicPerCpu)
                }
                return 1
            }
        }),
        ("name", { L in bind(L) { lua in lua.push(try lua.perCpu(1).name); return 1 } }),
    ]

    /// `this_cpu_add(n)` and friends: wrapping at the type's width.
    private static func add(_ L: OpaquePointer?, sign: Int64, returning: Bool) -> Int32 {
        bind(L) { lua in
            let area = try lua.perCpu(1)
            try area.checkNumeric(sign < 0 ? "this_cpu_sub" : "this_cpu_add")
            let delta = try lua.perCpuNumber(2, area.type)
            let value = try added(lua, area, sign < 0 ? 0 &- delta : delta)
            guard returning else { return 0 }
            lua.push(value)
            return 1
        }
    }

    /// `this_cpu_add` on the running CPU, on the trace with `--trace-accesses`.
    @discardableResult
    private static func added(_ lua: Lua, _ area: PerCpuArea, _ delta: Int64) throws -> Int64 {
        let cpu = try lua.thisCpu()
        let value = try area.add(cpu, delta)
        lua.accessed("percpu add \(area.name ?? "\(area)")", [.init("of_cpu", cpu), .init("delta", Int(truncatingIfNeeded: delta)), .init("value", Int(truncatingIfNeeded: value))])
        return value
    }

    static let dynamicPerCpu = HandleClass(.dynamicPerCpu, methods: perCpuMethods, drop: { lua, object, _ in
        let area = unsafeDowncast(object, to: PerCpuArea.self)
        guard let machine = lua.runtime.booted else { return }
        machine.percpu.release(area)
        if area.isFreed { lua.runtime.forgetValues(area) }
    })

    /// Statics live as long as the machine: their handles are borrowed.
    static let staticPerCpu = HandleClass(.staticPerCpu, methods: perCpuMethods)

    static let cpuGuard = HandleClass(.cpuGuard, methods: [
        ("cpu", { L in bind(L) { lua in lua.push(try lua.object(1, .cpuGuard, as: CpuGuard.self).cpu); return 1 } }),
    ], drop: { lua, object, context in
        let guard_ = unsafeDowncast(object, to: CpuGuard.self)
        guard let scheduler = lua.runtime.booted?.scheduler else { return }
        lua.runtime.warnIfCollected(guard_, context)
        try scheduler.release(guard_, byCollector: context.reason == .gc)
    })

    static let perCpuToken = HandleClass(.perCpuToken, methods: [
        ("get", { L in
            bind(L) { lua in
                let token = try PerCpuMethods.token(lua)
                try lua.pushSlot(token.area, token.cpu)
                return 1
            }
        }),
        ("set", { L in
            bind(L) { lua in
                let token = try PerCpuMethods.token(lua)
                try lua.setSlot(token.area, token.cpu, from: 2)
                return 0
            }
        }),
        ("with", PerCpuMethods.with),
        ("cpu", { L in bind(L) { lua in lua.push(try PerCpuMethods.token(lua).cpu); return 1 } }),
    ], drop: { lua, object, context in
        let token = unsafeDowncast(object, to: PerCpuToken.self)
        guard let machine = lua.runtime.booted else { return }
        lua.runtime.warnIfCollected(token, context)
        try machine.percpu.release(token, byCollector: context.reason == .gc)
    })
}

enum PerCpuMethods {
    static func token(_ lua: Lua) throws -> PerCpuToken {
        try lua.object(1, .perCpuToken, as: PerCpuToken.self)
    }

    /// `v:get_mut(guard)` → PerCpuToken owning `guard` (moved). A second
    /// live token for the variable on this CPU is an aliasing bug.
    static let getMut: Binding = { L in
        bind(L) { lua in
            let area = try lua.perCpu(1)
            let g = try lua.handle(2, .cpuGuard)
            let guard_ = lua.object(g, as: CpuGuard.self)
            let runtime = lua.runtime
            let scheduler = try lua.scheduler()
            guard guard_.task === scheduler.current else {
                throw KernelError.bug("get_mut with \(guard_), which belongs to task '\(guard_.task.name)'")
            }
            guard g.pointee.borrows == 0 else { throw KernelError.bug("get_mut moves \(guard_) while it is borrowed") }
            let percpu = try lua.machine().percpu
            let token: PerCpuToken
            do {
                token = try percpu.token(area, guard_, site: lua.site())
            } catch {
                // The guard was moved into the call: it goes with it, and
                // preemption is on again.
                lua.end(2, g, as: .moved)
                try scheduler.release(guard_)
                throw error
            }
            lua.end(2, g, as: .moved)
            lua.pushHandle(token, .perCpuToken, lender: 1)
            return 1
        }
    }

    /// `tok:with(fn)`: the slot becomes what `fn(value)` returns (unchanged
    /// if it returns nothing); returns the slot's value.
    static let with: Binding = { L in
        bind(L) { lua in
            let token = try token(lua)
            try lua.checkFunction(2)
            lua_settop(L, 2)
            lua_pushvalue(L, 2)
            try lua.pushSlot(token.area, token.cpu)
            return lua.pcall(arguments: 1) { lua, status, first in
                guard status == LUA_OK else { return MMLAB_RAISE }
                let token = try Self.token(lua)
                if lua.top >= first { try lua.setSlot(token.area, token.cpu, from: first, arg: 2) }
                lua_settop(lua.L, 2)
                try lua.pushSlot(token.area, token.cpu)
                return 1
            }
        }
    }
}
