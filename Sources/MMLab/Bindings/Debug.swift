import CLua
import LuaShim
import MMCore

/// `kernel.debug`: accounting of native objects (MMCore/Debug).
extension Runtime {
    func openDebug(_ lua: Lua) {
        lua.newTable()
        lua.setFunctions([
            ("live", DebugBindings.live),
            ("stats", DebugBindings.stats),
            ("leaks", DebugBindings.leaks),
            ("assert_no_leaks", DebugBindings.assertNoLeaks),
            ("check", DebugBindings.check),
        ])
        lua.setField(-2, "debug")
        lua.newTable()
        lua.setFunctions([
            ("begin", TraceBindings.begin),
            ("finish", TraceBindings.finish),
        ])
        lua.setFunctions([("printk", TraceBindings.printk)])
        lua.setField(-2, "trace")
    }

    /// `--trace-accesses`: a per-CPU variable's or a page's access, as an
    /// instant event on the running task's track.
    func traceAccess(_ lua: Lua, _ what: String, _ args: [TraceLog.Argument]) {
        guard let machine = booted, let trace = machine.trace else { return }
        let task = machine.scheduler.current
        trace.emit(.instant, what, category: "access", track: .task(task.id),
                   args: args + [.init("cpu", task.cpu), .init("at", sites.name(lua.site()))])
    }
}

/// `kernel.trace`: marks a script puts on the trace (`--trace FILE`); with
/// no trace they cost a check and do nothing.
enum TraceBindings {
    /// `kernel.trace.printk(fmt, ...)` (trace_printk): a marker on the
    /// running task's track, its text `string.format(fmt, ...)`.
    static let printk: Binding = { L in
        bind(L) { lua in
            let site = lua.site()
            let n = lua.top
            lua_getglobal(L, "string")
            lua.getField(-1, "format")
            lua_rotate(L, -2, 1)
            lua.pop()  // the string table
            lua_rotate(L, 1, 1)  // string.format below the arguments
            return lua.pcall(arguments: n) { lua, status, first in
                guard status == LUA_OK else { return MMLAB_RAISE }
                if let machine = lua.runtime.booted, let trace = machine.trace {
                    let task = machine.scheduler.current
                    trace.emit(.instant, lua.string(at: first) ?? "", category: "printk", track: .task(task.id),
                               args: [.init("at", lua.runtime.sites.name(site))])
                }
                return 0
            }
        }
    }

    /// `kernel.trace.begin(name)`: a span on the running task's track, until `finish()`.
    static let begin: Binding = { L in
        bind(L) { lua in
            let name = try lua.string(1)
            let machine = try lua.machine()
            let task = machine.scheduler.current
            lua.runtime.spans[task.id, default: []].append(name)
            machine.trace?.emit(.begin, name, category: "span", track: .task(task.id))
            return 0
        }
    }

    /// `kernel.trace.finish()`: ends the running task's latest span.
    static let finish: Binding = { L in
        bind(L) { lua in
            let machine = try lua.machine()
            let task = machine.scheduler.current
            guard let name = lua.runtime.spans[task.id]?.popLast() else {
                throw KernelError(.EINVAL, "kernel.trace.finish() in task '\(task.name)' without a kernel.trace.begin")
            }
            machine.trace?.emit(.end, name, category: "span", track: .task(task.id))
            return 0
        }
    }
}

enum DebugBindings {
    /// `check()`: the model's invariants (the page allocator's free lists
    /// and counts, drm_mm's indexes); a violation is a bug error.
    static let check: Binding = { L in
        bind(L) { lua in
            try lua.runtime.booted?.checkConsistency()
            return 0
        }
    }

    /// `live()` → `{Page=3, ...}`.
    static let live: Binding = { L in
        bind(L) { lua in
            let counts = lua.runtime.booted?.accounting.liveCounts() ?? [:]
            lua.newTable(hash: Int32(counts.count))
            for (name, count) in counts { lua.set(name, count) }
            return 1
        }
    }

    /// `stats()` → `{dropped_by_close=, dropped_by_drop=, dropped_by_gc=, live=}`.
    static let stats: Binding = { L in
        bind(L) { lua in
            let runtime = lua.runtime
            lua.newTable(hash: 4)
            lua.setConstants([
                ("dropped_by_close", runtime.stats.byClose), ("dropped_by_drop", runtime.stats.byDrop),
                ("dropped_by_gc", runtime.stats.byGC), ("live", runtime.booted?.accounting.count ?? 0),
            ])
            return 1
        }
    }

    /// `leaks()` → `{{type=, object=, site=}, ...}`, oldest first.
    static let leaks: Binding = { L in
        bind(L) { lua in
            let runtime = lua.runtime
            pushLeaks(lua, runtime.booted?.accounting.leaks() ?? [], runtime.sites)
            return 1
        }
    }

    private static func pushLeaks(_ lua: Lua, _ objects: [NativeObject], _ sites: SiteTable) {
        lua.newTable(array: Int32(objects.count))
        for (i, object) in objects.enumerated() {
            lua.newTable(hash: 3)
            lua.set("type", object.typeName)
            lua.set("object", object.description)
            lua.set("site", sites.name(object.site))
            lua_rawseti(lua.L, -2, lua_Integer(i + 1))
        }
    }

    /// `assert_no_leaks(fn, ...)`: runs `fn(...)`, collects garbage, and
    /// raises listing the native objects `fn` created that are still
    /// alive; otherwise returns `fn`'s results.
    static let assertNoLeaks: Binding = { L in
        bind(L) { lua in
            try lua.checkFunction(1)
            let n = lua.top
            let mark = lua.runtime.booted?.accounting.serial ?? 0
            for i in 1...n { lua_pushvalue(L, i) }
            return lua.pcall(arguments: n - 1) { lua, status, first in
                try finishAssertNoLeaks(lua, status: status, first: first, mark: mark)
            }
        }
    }

    private static func finishAssertNoLeaks(_ lua: Lua, status: Int32, first: Int32, mark: UInt64) throws -> Int32 {
        guard status == LUA_OK else { return MMLAB_RAISE }
        _ = mmlab_gc(lua.L, LUA_GCCOLLECT, 0)
        let runtime = lua.runtime
        let leaks = runtime.booted?.accounting.leaks(since: mark) ?? []
        guard leaks.isEmpty else {
            let position = lua.position().map { "\($0.shortSource):\($0.line): " } ?? ""
            var message = "\(position)assert_no_leaks: \(leaks.count) native object\(leaks.count == 1 ? "" : "s") created inside \(leaks.count == 1 ? "is" : "are") still alive:"
            for object in leaks { message += "\n  \(object) created at \(runtime.sites.name(object.site))" }
            lua.push(message)
            return MMLAB_RAISE
        }
        return lua.top - first + 1
    }
}
