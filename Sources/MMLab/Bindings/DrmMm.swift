import CLua
import LuaShim
import MMCore

/// `kernel.drm_mm`: the DRM range allocator (MMCore/DrmMm).
extension Runtime {
    func openDrmMm(_ lua: Lua) {
        lua.newTable()
        lua.setFunctions([("Allocator", DrmMmBindings.allocator)])
        lua.setField(-2, "drm_mm")
    }
}

extension Options {
    /// The insert mode in field `mode`.
    func mode(default value: DrmMm.Mode) throws(LuaFailure) -> DrmMm.Mode {
        let i = try choice("mode", DrmMm.Mode.names, default: -1)
        return i < 0 ? value : DrmMm.Mode.allCases[i]
    }
}

extension DrmMm.Mode {
    /// The modes' names, as `allCases` orders them.
    static let names: [StaticString] = ["best", "low", "high", "evict", "lowest", "highest"]
}

extension Lua {
    /// An unsigned 64-bit argument: any integer, two's complement.
    func unsigned(_ arg: Int32, default value: UInt64? = nil) throws(LuaFailure) -> UInt64 {
        if let value, isNoneOrNil(arg) { return value }
        return UInt64(bitPattern: Int64(try integer(arg)))
    }

    /// An unsigned 64-bit field of the options table at `table`.
    func unsignedField(_ table: Int32, _ name: String, arg: Int32, default value: UInt64) throws(LuaFailure) -> UInt64 {
        try integerField(table, name, arg: arg, default: nil).map { UInt64(bitPattern: Int64($0)) } ?? value
    }

    /// The allocator at `arg`; the collector and callbacks run on this thread.
    func drmMm(_ arg: Int32 = 1) throws -> DrmMm {
        let mm = try object(arg, .drmMmAllocator, as: DrmMm.self)
        runtime.activeL = L
        return mm
    }

    /// The node of a live Node handle at `arg`, still allocated.
    func drmMmNode(_ arg: Int32) throws -> DrmMmNode {
        let node = try object(arg, .drmMmNode, as: DrmMmNode.self)
        try node.checkAllocated()
        return node
    }

    /// A Node handle over `node`: owned for a new node, else borrowed.
    @discardableResult
    func pushNode(_ node: DrmMmNode?, owned: Bool = false) -> Int32 {
        pushOptionalHandle(node, .drmMmNode, state: owned ? .owned : .borrowed)
    }

    /// Keeps the value at `arg` as `node`'s data (a registry reference).
    func setNodeData(_ node: DrmMmNode, from arg: Int32) {
        if let old = node.tag { luaL_unref(L, mmlab_registryindex(), old) }
        node.tag = nil
        guard !isNoneOrNil(arg) else { return }
        lua_pushvalue(L, arg)
        node.tag = luaL_ref(L, mmlab_registryindex())
    }
}

enum DrmMmBindings {
    /// `Allocator(start, size)`: a range allocator over `[start, start + size)`.
    static let allocator: Binding = { L in
        bind(L) { lua in
            let start = try lua.unsigned(1), size = try lua.unsigned(2)
            let machine = try lua.machine()
            lua.pushHandle(try DrmMm(start: start, size: size, accounting: machine.accounting,
                                     site: lua.site()), .drmMmAllocator)
            return 1
        }
    }

    /// The iterator `nodes()` and `holes()` return: each call gives the
    /// next `width` values of the snapshot table in upvalue 1.
    static let iterate: Binding = { L in
        bind(L) { lua in
            // debug.setupvalue may have put anything there.
            guard lua.type(Lua.upvalue(1)) == LUA_TTABLE, lua_isinteger(L, Lua.upvalue(2)) != 0,
                  lua_isinteger(L, Lua.upvalue(3)) != 0, (1...4).contains(lua_tointegerx(L, Lua.upvalue(3), nil)) else {
                throw KernelError.bug("this iterator's upvalues were changed (debug.setupvalue): it cannot run")
            }
            let width = Int32(lua_tointegerx(L, Lua.upvalue(3), nil))
            let i = lua_tointegerx(L, Lua.upvalue(2), nil)
            for k in 1...width { lua_rawgeti(L, Lua.upvalue(1), i + lua_Integer(k)) }
            lua.push(Int(i) + Int(width))
            lua_copy(L, -1, Lua.upvalue(2))
            lua.pop()
            return width
        }
    }

    /// Pushes an iterator over the table on top, `width` values a step.
    static func pushIterator(_ lua: Lua, width: Int) {
        lua.push(0)
        lua.push(width)
        lua.pushBinding(iterate, name: "iterator", upvalues: 3)
    }
}

extension HandleClass {
    static let drmMmAllocator = HandleClass(.drmMmAllocator, methods: [
        ("insert_node", DrmMmMethods.insertNode),
        ("insert_node_in_range", DrmMmMethods.insertNodeInRange),
        ("reserve_node", DrmMmMethods.reserveNode),
        ("replace_node", DrmMmMethods.replaceNode),
        ("set_color_adjust", DrmMmMethods.setColorAdjust),
        ("nodes", DrmMmMethods.nodes),
        ("holes", DrmMmMethods.holes),
        ("clean", { L in bind(L) { lua in lua.push(try DrmMmMethods.query(lua, "clean").isClean); return 1 } }),
        ("largest_hole", DrmMmMethods.largestHole),
        ("interval_first", DrmMmMethods.intervalFirst),
        ("print", { L in bind(L) { lua in lua.push(try DrmMmMethods.query(lua, "print").print()); return 1 } }),
        ("takedown", { L in bind(L) { lua in try lua.drmMm().takedown(); return 0 } }),
        ("stats", DrmMmMethods.stats),
        ("scan", DrmMmMethods.scan),
    ], drop: { lua, object, _ in
        let mm = unsafeDowncast(object, to: DrmMm.self)
        if let ref = lua.runtime.colorAdjusters.removeValue(forKey: ObjectIdentifier(mm)) {
            luaL_unref(lua.L, mmlab_registryindex(), ref)
        }
        mm.close()
    })

    /// Dropping an owned Node removes it; a borrowed one releases nothing.
    static let drmMmNode = HandleClass(.drmMmNode, methods: [
        ("start", { L in bind(L) { lua in lua.push(try lua.drmMmNode(1).start); return 1 } }),
        ("size", { L in bind(L) { lua in lua.push(try lua.drmMmNode(1).size); return 1 } }),
        ("color", { L in bind(L) { lua in lua.push(try lua.drmMmNode(1).color); return 1 } }),
        ("allocated", { L in
            bind(L) { lua in lua.push(try lua.object(1, .drmMmNode, as: DrmMmNode.self).isAllocated); return 1 }
        }),
        ("hole_follows", { L in bind(L) { lua in lua.push(try lua.drmMmNode(1).holeFollows); return 1 } }),
        ("next_node", { L in
            bind(L) { lua in
                let node = try lua.drmMmNode(1)
                return lua.pushNode(node.mm.nextNode(node))
            }
        }),
        ("prev_node", { L in
            bind(L) { lua in
                let node = try lua.drmMmNode(1)
                return lua.pushNode(node.mm.prevNode(node))
            }
        }),
        ("data", { L in
            bind(L) { lua in
                guard let ref = try lua.drmMmNode(1).tag else { return 0 }
                lua_rawgeti(L, mmlab_registryindex(), lua_Integer(ref))
                return 1
            }
        }),
    ], drop: { lua, object, context in
        let node = unsafeDowncast(object, to: DrmMmNode.self)
        try node.mm.remove(node, byCollector: context.reason == .gc)
        // Its data goes with the handle, even when the removal had to wait.
        if let ref = node.tag {
            node.tag = nil
            luaL_unref(lua.L, mmlab_registryindex(), ref)
        }
    })

    /// A scan borrows its allocator; dropping it with blocks still added is
    /// a bug, and the collector doing so puts them back with a warning.
    static let drmMmScan = HandleClass(.drmMmScan, methods: [
        ("add_block", DrmMmMethods.addBlock),
        ("remove_block", DrmMmMethods.removeBlock),
        ("color_evict", { L in
            bind(L) { lua in
                let scan = try lua.object(1, .drmMmScan, as: DrmMmScan.self)
                lua.runtime.activeL = lua.L
                return lua.pushNode(try scan.colorEvict())
            }
        }),
        ("hit", { L in
            bind(L) { lua in
                let scan = try lua.object(1, .drmMmScan, as: DrmMmScan.self)
                guard scan.hitEnd > scan.hitStart else { return 0 }
                lua.push(scan.hitStart)
                lua.push(scan.hitEnd)
                return 2
            }
        }),
    ], drop: { lua, object, context in
        let scan = unsafeDowncast(object, to: DrmMmScan.self)
        if context.reason == .gc, scan.blocks > 0 {
            lua.runtime.warn("\(scan) was dropped by the collector with blocks still added: they were put back")
        }
        try scan.close(byCollector: context.reason == .gc)
    })
}

enum DrmMmMethods {
    /// `a:insert_node(size, {alignment=, color=, mode=, range_start=, range_end=, data=})` → Node.
    static let insertNode: Binding = { L in
        bind(L) { lua in
            let mm = try lua.drmMm()
            let size = try lua.unsigned(2)
            var alignment: UInt64 = 0, color: UInt64 = 0, rangeStart: UInt64 = 0, rangeEnd = UInt64.max
            var mode = DrmMm.Mode.best, data: Int32?
            if !lua.isNoneOrNil(3) {
                let o = try lua.options(3, arg: 3, ["alignment", "color", "mode", "range_start", "range_end", "data"])
                alignment = try o.unsigned("alignment", default: 0)
                color = try o.unsigned("color", default: 0)
                rangeStart = try o.unsigned("range_start", default: 0)
                rangeEnd = try o.unsigned("range_end", default: .max)
                mode = try o.mode(default: .best)
                if !o.isAbsent("data") { data = o.index("data") }
            }
            let node = try mm.insert(size: size, alignment: alignment, color: color, rangeStart: rangeStart,
                                     rangeEnd: rangeEnd, mode: mode, site: lua.site())
            if let data { lua.setNodeData(node, from: data) }
            return lua.pushNode(node, owned: true)
        }
    }

    /// `a:insert_node_in_range(size, alignment, color, range_start,
    /// range_end, mode)` → Node: `drm_mm_insert_node_in_range`'s arguments in its order.
    static let insertNodeInRange: Binding = { L in
        bind(L) { lua in
            let mm = try lua.drmMm()
            let size = try lua.unsigned(2), alignment = try lua.unsigned(3, default: 0), color = try lua.unsigned(4, default: 0)
            let rangeStart = try lua.unsigned(5, default: 0), rangeEnd = try lua.unsigned(6, default: .max)
            var mode = DrmMm.Mode.best
            if !lua.isNoneOrNil(7) {
                let name = try lua.string(7)
                guard let i = DrmMm.Mode.names.firstIndex(where: { "\($0)" == name }) else {
                    throw LuaFailure.argument(7, "invalid mode '\(name)' (best, low, high, evict, lowest or highest)")
                }
                mode = DrmMm.Mode.allCases[i]
            }
            let node = try mm.insert(size: size, alignment: alignment, color: color, rangeStart: rangeStart,
                                     rangeEnd: rangeEnd, mode: mode, site: lua.site())
            return lua.pushNode(node, owned: true)
        }
    }

    /// `a:reserve_node(start, size, color, data)` → Node.
    static let reserveNode: Binding = { L in
        bind(L) { lua in
            let mm = try lua.drmMm()
            let start = try lua.unsigned(2), size = try lua.unsigned(3), color = try lua.unsigned(4, default: 0)
            let node = try mm.reserve(start: start, size: size, color: color, site: lua.site())
            lua.setNodeData(node, from: 5)
            return lua.pushNode(node, owned: true)
        }
    }

    /// `a:replace_node(old)` → a new Node in old's place (with its data); old is dropped.
    static let replaceNode: Binding = { L in
        bind(L) { lua in
            let mm = try lua.drmMm()
            let h = try lua.handle(2, .drmMmNode)
            guard Handles.state(h) == .owned else {
                throw KernelError.bug("replace_node of a borrowed \(lua.describe(h)): only its owner can give it up")
            }
            let old = lua.object(h, as: DrmMmNode.self)
            try old.checkAllocated()
            let node = try mm.replace(old, site: lua.site())
            old.tag = nil
            lua.end(2, h, as: .dropped)
            return lua.pushNode(node, owned: true)
        }
    }

    /// `a:set_color_adjust(fn)`: `fn(node, color, start, end)` → start, end
    /// for every hole considered; nil clears it.
    static let setColorAdjust: Binding = { L in
        bind(L) { lua in
            let mm = try lua.drmMm()
            try mm.checkUsable("set_color_adjust")
            let runtime = lua.runtime
            if let old = runtime.colorAdjusters.removeValue(forKey: ObjectIdentifier(mm)) {
                luaL_unref(L, mmlab_registryindex(), old)
            }
            guard !lua.isNoneOrNil(2) else {
                mm.colorAdjust = nil
                return 0
            }
            try lua.checkFunction(2)
            lua_pushvalue(L, 2)
            let ref = luaL_ref(L, mmlab_registryindex())
            runtime.colorAdjusters[ObjectIdentifier(mm)] = ref
            mm.colorAdjust = { [link = runtime.link] node, color, start, end in
                guard let runtime = link.runtime else { return }
                try runtime.colorAdjust(ref, node, color, &start, &end)
            }
            return 0
        }
    }

    /// `a:nodes()`: an iterator over the nodes in address order.
    static let nodes: Binding = { L in
        bind(L) { lua in
            let mm = try lua.drmMm()
            try mm.checkUsable("nodes", query: true)
            let nodes = mm.nodes()
            lua.newTable(array: Int32(nodes.count))
            for (i, node) in nodes.enumerated() {
                lua.pushNode(node)
                lua_rawseti(L, -2, lua_Integer(i + 1))
            }
            DrmMmBindings.pushIterator(lua, width: 1)
            return 1
        }
    }

    /// `a:holes()`: an iterator of `start, size` in address order.
    static let holes: Binding = { L in
        bind(L) { lua in
            let mm = try lua.drmMm()
            try mm.checkUsable("holes", query: true)
            let holes = mm.holes()
            lua.newTable(array: Int32(holes.count * 2))
            for (i, hole) in holes.enumerated() {
                lua.push(hole.start)
                lua_rawseti(L, -2, lua_Integer(2 * i + 1))
                lua.push(hole.size)
                lua_rawseti(L, -2, lua_Integer(2 * i + 2))
            }
            DrmMmBindings.pushIterator(lua, width: 2)
            return 1
        }
    }

    /// The allocator for a method that only looks.
    static func query(_ lua: Lua, _ what: String) throws -> DrmMm {
        let mm = try lua.drmMm()
        try mm.checkUsable(what, query: true)
        return mm
    }

    /// `a:largest_hole()` → size, start (0 when full).
    static let largestHole: Binding = { L in
        bind(L) { lua in
            let mm = try query(lua, "largest_hole")
            guard let hole = mm.largestHole else {
                lua.push(0)
                return 1
            }
            lua.push(hole.size)
            lua.push(hole.start)
            return 2
        }
    }

    /// `a:interval_first(start, last)` → the first node overlapping `[start, last]`, or nil.
    static let intervalFirst: Binding = { L in
        bind(L) { lua in
            let mm = try lua.drmMm()
            let start = try lua.unsigned(2), last = try lua.unsigned(3)
            try mm.checkUsable("interval_first", query: true)
            return lua.pushNode(mm.intervalFirst(start, last))
        }
    }

    /// `a:stats()` → `{nodes=, holes=, used=, free=, largest_hole=}`.
    static let stats: Binding = { L in
        bind(L) { lua in
            let mm = try query(lua, "stats")
            let free = mm.freeSpace
            lua.newTable(hash: 5)
            lua.set("nodes", mm.nodeCount)
            lua.set("holes", mm.holeCount)
            lua.set("free", free)
            lua.set("used", mm.size &- free)
            lua.set("largest_hole", mm.largestHole?.size ?? 0)
            return 1
        }
    }

    /// `a:scan{size=, alignment=, color=, mode="low", range_start=, range_end=}` → Scan.
    static let scan: Binding = { L in
        bind(L) { lua in
            let mm = try lua.drmMm()
            let o = try lua.options(2, arg: 2, ["size", "alignment", "color", "mode", "range_start", "range_end"])
            let size = try o.unsigned("size", default: 0)
            let alignment = try o.unsigned("alignment", default: 0)
            let color = try o.unsigned("color", default: 0)
            let rangeStart = try o.unsigned("range_start", default: 0)
            let rangeEnd = try o.unsigned("range_end", default: .max)
            let mode = try o.mode(default: .low)
            let scan = try DrmMmScan(mm: mm, size: size, alignment: alignment, color: color, rangeStart: rangeStart,
                                     rangeEnd: rangeEnd, mode: mode, site: lua.site())
            lua.pushHandle(scan, .drmMmScan, lender: 1)
            return 1
        }
    }

    static func scanAndNode(_ lua: Lua) throws -> (DrmMmScan, DrmMmNode) {
        let scan = try lua.object(1, .drmMmScan, as: DrmMmScan.self)
        let node = try lua.object(2, .drmMmNode, as: DrmMmNode.self)
        lua.runtime.activeL = lua.L
        return (scan, node)
    }

    /// `s:add_block(node)` → true once a hole is found.
    static let addBlock: Binding = { L in
        bind(L) { lua in
            let (scan, node) = try scanAndNode(lua)
            lua.push(try scan.addBlock(node))
            return 1
        }
    }

    /// `s:remove_block(node)` → true if the node must be evicted.
    static let removeBlock: Binding = { L in
        bind(L) { lua in
            let (scan, node) = try scanAndNode(lua)
            lua.push(try scan.removeBlock(node))
            return 1
        }
    }
}

extension Runtime {
    /// Calls a `color_adjust` function (a registry reference) under a
    /// protected call; its error, if any, is left on top of the stack and
    /// raised by the binding that is running.
    func colorAdjust(_ ref: Int32, _ node: DrmMmNode?, _ color: UInt64,
                     _ start: inout UInt64, _ end: inout UInt64) throws {
        let lua = Lua(activeL)
        let top = lua.top
        lua_rawgeti(lua.L, mmlab_registryindex(), lua_Integer(ref))
        lua.pushNode(node)
        lua.push(color)
        lua.push(start)
        lua.push(end)
        guard lua_pcallk(lua.L, 4, 2, 0, 0, nil) == LUA_OK else { throw LuaFailure.raised }
        var ok1: Int32 = 0, ok2: Int32 = 0
        let s = lua_tointegerx(lua.L, -2, &ok1), e = lua_tointegerx(lua.L, -1, &ok2)
        lua_settop(lua.L, top)
        guard ok1 != 0, ok2 != 0 else {
            lua.push("color_adjust must return two integers (start, end)")
            throw LuaFailure.raised
        }
        start = UInt64(bitPattern: s)
        end = UInt64(bitPattern: e)
    }
}
