import CLua
import LuaShim
import MMCore

/// `kernel.results`, `kernel.plot` and `kernel.progress`: what a run leaves
/// behind for the experimenter (MMLab/Output).
extension Runtime {
    func openOutput(_ lua: Lua) {
        lua.newTable()
        lua.setFunctions([
            ("record", OutputBindings.record),
            ("rows", OutputBindings.rows),
            ("count", { L in bind(L) { lua in lua.push(lua.runtime.results.rows.count); return 1 } }),
            ("clear", { L in bind(L) { lua in lua.runtime.results.clear(); return 0 } }),
        ])
        lua.setField(-2, "results")
        lua.newTable()
        lua.setFunctions([
            ("line", OutputBindings.line),
            ("drm_mm", OutputBindings.drmMm),
            ("memory", OutputBindings.memory),
            ("binder", OutputBindings.binder),
        ])
        lua.setField(-2, "plot")
        lua.setFunctions([("progress", OutputBindings.progress)])
    }
}

extension Lua {
    /// A scalar Lua value as a result value; nil for tables, functions...
    func resultValue(_ idx: Int32) -> ResultValue? {
        switch type(idx) {
        case LUA_TNUMBER:
            return lua_isinteger(L, idx) != 0 ? .integer(lua_tointegerx(L, idx, nil)) : .number(lua_tonumberx(L, idx, nil))
        case LUA_TSTRING: return string(at: idx).map(ResultValue.string)
        case LUA_TBOOLEAN: return .boolean(boolean(idx))
        default: return nil
        }
    }

    /// The numbers of the list at `idx` (field `what` of argument `arg`).
    func numbers(_ idx: Int32, arg: Int32, what: String) throws(LuaFailure) -> [Double] {
        let idx = absIndex(idx)
        guard type(idx) == LUA_TTABLE else { throw fieldError(arg, what, "list of numbers") }
        let n = Int(lua_rawlen(L, idx))
        var out: [Double] = []
        out.reserveCapacity(n)
        for i in 0..<n {
            lua_rawgeti(L, idx, lua_Integer(i + 1))
            var isnum: Int32 = 0
            let v = lua_tonumberx(L, -1, &isnum)
            pop()
            guard isnum != 0 else { throw .argument(arg, "field '\(what)': item \(i + 1) is not a number") }
            out.append(v)
        }
        return out
    }
}

enum OutputBindings {
    /// `kernel.results.record{name = value, ...}`: one row; values are
    /// numbers, strings or booleans.
    static let record: Binding = { L in
        bind(L) { lua in
            try lua.checkTable(1)
            var row: [(String, ResultValue)] = []
            lua.pushNil()
            while lua_next(L, 1) != 0 {
                guard lua.type(-2) == LUA_TSTRING, let key = lua.string(at: -2) else {
                    throw LuaFailure.argument(1, "a row's keys must be column names (strings)")
                }
                guard let value = lua.resultValue(-1) else {
                    throw LuaFailure.argument(1, "column '\(key)': a number, string or boolean expected, got \(lua.typeName(-1))")
                }
                row.append((key, value))
                lua.pop()
            }
            row.sort { $0.0 < $1.0 }  // a table's own order is not stable: columns first seen in name order
            lua.runtime.results.record(row)
            return 0
        }
    }

    /// `kernel.results.rows()` → the rows recorded so far, as tables.
    static let rows: Binding = { L in
        bind(L) { lua in
            let results = lua.runtime.results
            lua.newTable(array: Int32(results.rows.count))
            for (i, row) in results.rows.enumerated() {
                lua.newTable(hash: Int32(row.count))
                for (key, value) in row {
                    switch value {
                    case .integer(let v): lua.push(v)
                    case .number(let v): lua.push(v)
                    case .string(let v): lua.push(v)
                    case .boolean(let v): lua.push(v)
                    }
                    lua.setField(-2, key)
                }
                lua_rawseti(L, -2, lua_Integer(i + 1))
            }
            return 1
        }
    }

    /// `kernel.progress(label, done, total)`: a progress line on a terminal.
    static let progress: Binding = { L in
        bind(L) { lua in
            let label = try lua.string(1)
            lua.runtime.progress.update(label, try lua.integer(2), try lua.integer(3))
            return 0
        }
    }

    /// The options table at `arg`: its `file` and `title` (default `title`).
    static func options(_ lua: Lua, _ arg: Int32, title: String, known: [StaticString] = []) throws -> (file: String?, title: String) {
        guard !lua.isNoneOrNil(arg) else { return (nil, title) }
        try lua.checkTable(arg)
        try lua.checkFields(arg, arg: arg, known: known + ["file", "title"])
        return (try lua.stringField(arg, "file", arg: arg), try lua.stringField(arg, "title", arg: arg) ?? title)
    }

    /// Returns the picture, and writes it to `file` under the output
    /// folder when there is one: results `svg, path` (path nil when not written).
    static func finish(_ lua: Lua, _ svg: String, file: String?) throws -> Int32 {
        lua.push(svg)
        guard let file, let folder = lua.runtime.configuration.outputDirectory else {
            lua.pushNil()
            return 2
        }
        guard file.hasSuffix(".svg"), !file.isEmpty else {
            throw LuaFailure.argument(1, "field 'file': a name ending in .svg expected, got '\(file)'")
        }
        let path = file.hasPrefix("/") ? file : folder + "/" + file
        do {
            let out = try OutputFile(path: path)
            out.write(svg)
            try out.commit()
        } catch {
            lua.push(error.message)
            throw LuaFailure.raised
        }
        lua.push(path)
        return 2
    }

    /// `kernel.plot.line{file=, title=, xlabel=, ylabel=, x=, y=, series=}`
    /// → svg, path. `x` and `y` name recorded result columns (`y` one or a
    /// list), or give values: `x` a list, `series` a table of lists.
    static let line: Binding = { L in
        bind(L) { lua in
            let (file, title) = try options(lua, 1, title: "", known: ["xlabel", "ylabel", "x", "y", "series"])
            try lua.checkTable(1)
            let results = lua.runtime.results
            func column(_ name: String) throws -> [Double] {
                guard results.columns.contains(name) else {
                    throw LuaFailure.argument(1, "no recorded column '\(name)' (kernel.results.record records them)")
                }
                return results.column(name).map { $0?.number ?? .nan }
            }
            var series: [Pictures.Series] = []
            lua.getField(1, "y")
            switch lua.type(-1) {
            case LUA_TSTRING: series.append(.init(name: lua.string(at: -1) ?? "", values: try column(lua.string(at: -1) ?? "")))
            case LUA_TTABLE:
                let n = lua_rawlen(L, -1)
                for i in 0..<n {
                    lua_rawgeti(L, -1, lua_Integer(i + 1))
                    guard let name = lua.string(at: -1) else { throw LuaFailure.argument(1, "field 'y': column names expected") }
                    lua.pop()
                    series.append(.init(name: name, values: try column(name)))
                }
            case LUA_TNIL: break
            default: throw lua.fieldError(1, "y", "column name or list of names")
            }
            lua.pop()
            lua.getField(1, "series")
            if !lua.isNoneOrNil(-1) {
                guard lua.type(-1) == LUA_TTABLE else { throw lua.fieldError(1, "series", "table of lists") }
                var named: [(String, [Double])] = []
                lua.pushNil()
                while lua_next(L, -2) != 0 {
                    guard let name = lua.string(at: -2) else { throw LuaFailure.argument(1, "field 'series': names must be strings") }
                    named.append((name, try lua.numbers(-1, arg: 1, what: "series." + name)))
                    lua.pop()
                }
                series += named.sorted { $0.0 < $1.0 }.map { Pictures.Series(name: $0.0, values: $0.1) }
            }
            lua.pop()
            guard !series.isEmpty else { throw LuaFailure.argument(1, "nothing to plot: give 'y' (recorded columns) or 'series'") }
            var x: [Double]
            var xLabel = try lua.stringField(1, "xlabel", arg: 1)
            lua.getField(1, "x")
            switch lua.type(-1) {
            case LUA_TSTRING:
                let name = lua.string(at: -1) ?? ""
                x = try column(name)
                xLabel = xLabel ?? name
            case LUA_TTABLE: x = try lua.numbers(-1, arg: 1, what: "x")
            case LUA_TNIL: x = (0..<(series.first?.values.count ?? 0)).map { Double($0 + 1) }
            default: throw lua.fieldError(1, "x", "column name or list of numbers")
            }
            lua.pop()
            for s in series where s.values.count != x.count {
                throw KernelError(.EINVAL, "plot: series '\(s.name)' has \(s.values.count) values, x has \(x.count)")
            }
            let svg = Pictures.line(title: title, xLabel: xLabel ?? "", yLabel: try lua.stringField(1, "ylabel", arg: 1) ?? "",
                                    x: x, series: series)
            return try finish(lua, svg, file: file)
        }
    }

    /// `kernel.plot.drm_mm(allocator, {file=, title=})` → svg, path.
    static let drmMm: Binding = { L in
        bind(L) { lua in
            let mm = try lua.drmMm(1)
            try mm.checkUsable("plot", query: true)
            let (file, title) = try options(lua, 2, title: "drm_mm address space")
            return try finish(lua, Pictures.drmMm(mm, title: title), file: file)
        }
    }

    /// `kernel.plot.memory{file=, title=, start=, size=}` → svg, path: the
    /// physical memory map, or the `size` bytes of it from physical `start`.
    static let memory: Binding = { L in
        bind(L) { lua in
            let (file, title) = try options(lua, 1, title: "Physical memory", known: ["start", "size"])
            var range: Range<UInt64>?
            if !lua.isNoneOrNil(1) {
                let start = try lua.unsignedField(1, "start", arg: 1, default: 0)
                let size = try lua.unsignedField(1, "size", arg: 1, default: 0)
                if start != 0 || size != 0 {
                    let first = start >> UInt64(MMCore.PAGE_SHIFT)
                    guard size > 0, size <= MachineConfig.maxMemory, start < maxPhysAddr else {
                        throw KernelError(.EINVAL, "plot.memory: size \(size) from 0x\(String(start, radix: 16)) is not a range of physical memory")
                    }
                    range = first..<first + max(1, (size + UInt64(MMCore.PAGE_SIZE) - 1) >> UInt64(MMCore.PAGE_SHIFT))
                }
            }
            let machine = try lua.machine()
            let allocator = machine.pageAllocator
            var stats = "\(Pictures.bytes(machine.config.memory)) of RAM, \(allocator.freePages + UInt64(allocator.pcpPages)) of \(allocator.totalPages) pages free"
            if let range { stats += "; showing \(Pictures.hex(range.lowerBound << UInt64(MMCore.PAGE_SHIFT)))-\(Pictures.hex(range.upperBound << UInt64(MMCore.PAGE_SHIFT)))" }
            let svg = Pictures.memory(allocator.frameMap(cells: 256 * 64, range: range), title: title, stats: stats)
            return try finish(lua, svg, file: file)
        }
    }

    /// `kernel.plot.binder(alloc, {file=, title=})` → svg, path: its page states.
    static let binder: Binding = { L in
        bind(L) { lua in
            let alloc = try lua.object(1, .binderAlloc, as: BinderAlloc.self)
            let (file, title) = try options(lua, 2, title: "Binder buffer pages")
            return try finish(lua, try Pictures.binder(alloc, title: title), file: file)
        }
    }
}
