#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim

/// The read-eval-print loop: bare expressions print their values (tables
/// laid out, handles by `__tostring`), incomplete statements continue on
/// `>>`, Tab completes names, fields and methods, `:help` lists the kernel
/// modules, and errors never end the session. In `luaStyle` (`mmlab -i`)
/// it is lua.c's doREPL instead: prompts from `_PROMPT`/`_PROMPT2`, `=expr`,
/// results through the global `print`, no banner and no `:` commands.
public final class Repl {
    let engine: Engine
    let editor: LineEditor
    let luaStyle: Bool
    /// The pretty-printer, or lua.c's prompt function (registry references).
    private var show: Int32 = LUA_NOREF
    private var prompt: Int32 = LUA_NOREF

    /// `$MMLAB_HISTORY`, else `~/.mmlab_history`.
    public static var defaultHistoryPath: String? {
        if let path = getenv("MMLAB_HISTORY") { return String(cString: path) }
        return getenv("HOME").map { String(cString: $0) + "/.mmlab_history" }
    }

    public init(engine: Engine, historyPath: String? = Repl.defaultHistoryPath, luaStyle: Bool = false) {
        self.engine = engine
        self.luaStyle = luaStyle
        // Off a terminal lua.c's readline echoes each line after its prompt.
        editor = LineEditor(historyPath: historyPath, echo: luaStyle)
        editor.complete = { [unowned self] line, cursor in self.complete(line, cursor) }
        let L = engine.runtime.L
        if (try? engine.load(luaStyle ? Repl.promptSource : Repl.showSource, name: "=(repl)")) != nil,
           lua_pcallk(L, 0, 1, 0, 0, nil) == LUA_OK {
            let ref = luaL_ref(L, mmlab_registryindex())
            if luaStyle { prompt = ref } else { show = ref }
        }
    }

    /// Runs until the end of input.
    public func run() {
        if !luaStyle { print("Type :help for the kernel modules; Tab completes names; Ctrl-D ends.") }
        while step() {}
        print()
    }

    /// lua.c's get_prompt: `_PROMPT` (or `_PROMPT2`) through tostring, else the default.
    static let promptSource = """
        local tostring = tostring
        return function(first)
          local p
          if first then p = _PROMPT else p = _PROMPT2 end
          if p ~= nil then return tostring(p) end
        end
        """

    /// The prompt for a first (or continuation) line.
    private func prompt(first: Bool) -> String {
        let fallback = first ? "> " : ">> "
        guard prompt != LUA_NOREF else { return fallback }
        let L = engine.runtime.L
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        lua_rawgeti(L, mmlab_registryindex(), lua_Integer(prompt))
        lua_pushboolean(L, first ? 1 : 0)
        do {
            try engine.call(arguments: 1, results: 1)
        } catch {
            report(error)
            return fallback
        }
        return Lua(L).string(at: -1) ?? fallback
    }

    /// Reads and runs one statement; false at the end of input.
    func step() -> Bool {
        let L = engine.runtime.L
        var first: String
        switch editor.readLine(prompt: prompt(first: true)) {
        case .eof: return false
        case .interrupt: return true
        case .line(let line): first = line
        }
        if !luaStyle, let command = Self.command(first) {
            let keep = run(command: command)
            if keep { editor.remember(first) }
            return keep
        }
        if luaStyle, first.hasPrefix("=") {  // lua.c, as Lua 5.2: a first '=' is 'return'
            first = "return " + first.dropFirst()
        }
        guard readStatement(first) else { return true }
        let base = lua_gettop(L) - 1
        do {
            try engine.call(arguments: 0, results: LUA_MULTRET)
        } catch {
            report(error)
            lua_settop(L, base)
            return true
        }
        let n = lua_gettop(L) - base
        if n > 0 {
            if show != LUA_NOREF {
                lua_rawgeti(L, mmlab_registryindex(), lua_Integer(show))
            } else {
                lua_getglobal(L, "print")
            }
            lua_rotate(L, base + 1, 1)
            do {
                try engine.call(arguments: n, results: 0)
            } catch {
                // lua.c's l_print names the failing print
                report(luaStyle ? EngineError(message: "error calling 'print' (\(error.message))") : error)
            }
        }
        lua_settop(L, base)
        return true
    }

    /// `:help [name]` or `:quit`, if the line is a REPL command.
    private static func command(_ line: String) -> [Substring]? {
        let words = line.split(separator: " ")
        guard let first = words.first, first.hasPrefix(":") else { return nil }
        return words
    }

    /// Runs a REPL command; false ends the session.
    private func run(command words: [Substring]) -> Bool {
        switch words[0] {
        case ":q", ":quit", ":exit": return false
        case ":help", ":h", ":?":
            if words.count > 1 { help(String(words[1])) } else { print(Self.help) }
        default:
            print("unknown command \(words[0]); :help lists what there is")
        }
        return true
    }

    static let help = """
        The kernel table (kernel.NAME; :help kernel.NAME lists what a module holds):
          page      Page.alloc_page/alloc_pages, into_phys, from_phys, borrow_phys: owned and borrowed pages
          mem       the page allocator: stats, buddyinfo, fail_page_alloc, register_shrinker
          mm        address spaces: mm_alloc, Mm/MmWithUser, mmap locks, VMAs, vm_insert_page
          uaccess   UserSlice readers and writers over an mm's user memory
          sched     tasks on simulated CPUs: spawn, run, yield, on_each_cpu, preemption, WaitQueue, Completion
          sync      SpinLock and Mutex, with lockdep
          percpu    per-CPU variables: CpuGuard, define, alloc, this_cpu_* operations
          drm_mm    the DRM range allocator: Allocator, insert modes, colors, eviction scans
          binder    Binder's RangeAllocator, Alloc buffers, the page LRU and its shrinker
          results   record rows for --results FILE (CSV or JSON)
          plot      SVG pictures: line, drm_mm, memory, binder (written under --out DIR)
          debug     live handles, leaks, assert_no_leaks, check
          also      boot, machine, drop, state, current, progress, gfp, errno, PAGE_SIZE
        REPL: Tab completes, Up/Down recall history, :quit (or Ctrl-D) ends.
        """

    /// `:help NAME`: a function, method, type or module of the reference
    /// (Bindings/api.txt); for a handle value, its type's methods; else the
    /// names a table reached from the globals holds.
    private func help(_ path: String) {
        let docs = ApiDocs.shipped
        if let text = docs.help(path) {
            print(text)
            return
        }
        let L = engine.runtime.L
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        // A value: a handle's type documents it (`:help p`).
        var loaded = true
        do { try engine.load("return " + path, name: "=help") } catch { loaded = false }  // not an expression: a table path
        if loaded, lua_pcallk(L, 0, 1, 0, 0, nil) == LUA_OK, lua_getmetatable(L, -1) != 0 {
            lua_getfield(L, -1, "__name")
            if let name = lua_tolstring(L, -1, nil).map({ String(cString: $0) }), let text = docs.help(name) {
                print(text)
                return
            }
        }
        lua_settop(L, top)
        guard push(path: path.split(separator: ".").map(String.init)), lua_type(L, -1) == LUA_TTABLE else {
            let near = docs.suggestions(path)
            print("\(path) is not documented" + (near.isEmpty ? "" : " (did you mean \(near.joined(separator: ", "))?)"))
            return
        }
        var functions: [String] = [], values: [String] = []
        for key in keys(at: -1) {
            lua_pushstring(L, key)
            let type = lua_rawget(L, -2)
            lua_settop(L, -2)
            if type == LUA_TFUNCTION { functions.append(key) } else { values.append(key) }
        }
        if !functions.isEmpty { print("functions: " + functions.joined(separator: ", ")) }
        if !values.isEmpty { print("fields: " + values.joined(separator: ", ")) }
    }

    /// Loads a statement starting with `first`: as an expression if it is
    /// one, else as a chunk, reading `>>` lines while it is incomplete.
    /// Leaves the chunk on the stack and returns true if it compiled.
    private func readStatement(_ first: String) -> Bool {
        editor.remember(first)
        if (try? engine.load("return " + first + ";", name: "=stdin")) != nil { return true }
        var code = first
        while true {
            do {
                try engine.load(code, name: "=stdin")
                return true
            } catch where error.message.hasSuffix("<eof>") {
                guard case .line(let more) = editor.readLine(prompt: prompt(first: false)) else { return false }
                editor.remember(more)
                code += "\n" + more
            } catch {
                report(error)
                return false
            }
        }
    }

    private func report(_ error: EngineError) {
        fflush(stdout)
        fputs("\(error)\n", stderr)
    }

    // MARK: Completion

    /// The word before the cursor (`kernel.mem.st`, `p:re`): where its last
    /// part starts, and the names that complete it. Only raw accesses: no
    /// metamethod runs while the user types.
    func complete(_ line: [Unicode.Scalar], _ cursor: Int) -> (start: Int, candidates: [String]) {
        func isWord(_ c: Unicode.Scalar) -> Bool {
            c == "_" || c == "." || c == ":" || ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c)
        }
        var start = cursor
        while start > 0, isWord(line[start - 1]) { start -= 1 }
        let word = String(String.UnicodeScalarView(line[start..<cursor]))
        let methods = word.contains(":")
        var parts = word.split(separator: methods ? ":" : ".", omittingEmptySubsequences: false).map(String.init)
        if methods {
            let head = parts.dropLast().joined(separator: ":")
            parts = head.split(separator: ".", omittingEmptySubsequences: false).map(String.init) + [parts.last ?? ""]
        }
        let prefix = parts.removeLast()
        let L = engine.runtime.L
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        guard push(path: parts) else { return (cursor, []) }
        var names = Set<String>()
        collect(into: &names, at: -1, prefix: prefix, functionsOnly: methods)
        if parts.isEmpty { names.formUnion(Self.keywords.filter { $0.hasPrefix(prefix) }) }
        return (cursor - prefix.unicodeScalars.count, names.sorted())
    }

    static let keywords = ["and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
                           "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"]

    /// Pushes the value at `path` from the globals (the globals for an
    /// empty path), following tables and the `__index` tables of
    /// metatables; false when it leads nowhere.
    private func push(path: [String]) -> Bool {
        let L = engine.runtime.L
        lua_rawgeti(L, mmlab_registryindex(), lua_Integer(LUA_RIDX_GLOBALS))
        for part in path {
            guard !part.isEmpty, lookup(part) else { return false }
        }
        return true
    }

    /// Replaces the value on top by its field `name` (raw, or from its
    /// metatable's `__index` table); false when there is none.
    private func lookup(_ name: String) -> Bool {
        let L = engine.runtime.L
        if lua_type(L, -1) == LUA_TTABLE {
            lua_pushstring(L, name)
            if lua_rawget(L, -2) != LUA_TNIL {
                lua_rotate(L, -2, 1)
                lua_settop(L, -2)
                return true
            }
            lua_settop(L, -2)
        }
        guard pushIndexTable(-1) else { return false }
        lua_pushstring(L, name)
        guard lua_rawget(L, -2) != LUA_TNIL else { return false }
        lua_rotate(L, -3, 1)
        lua_settop(L, -3)
        return true
    }

    /// Pushes the `__index` table of the value at `idx`'s metatable, if it has one.
    private func pushIndexTable(_ idx: Int32) -> Bool {
        let L = engine.runtime.L
        guard lua_getmetatable(L, idx) != 0 else { return false }
        lua_pushstring(L, "__index")
        guard lua_rawget(L, -2) == LUA_TTABLE else {
            lua_settop(L, -3)
            return false
        }
        lua_rotate(L, -2, 1)
        lua_settop(L, -2)
        return true
    }

    /// The identifier keys of the table at `idx`.
    private func keys(at idx: Int32) -> [String] {
        let L = engine.runtime.L
        let t = lua_absindex(L, idx)
        var out: [String] = []
        lua_pushnil(L)
        while lua_next(L, t) != 0 {
            lua_settop(L, -2)
            if lua_type(L, -1) == LUA_TSTRING, let key = Lua(L).string(at: -1), Self.isIdentifier(key) { out.append(key) }
        }
        return out.sorted()
    }

    private func collect(into names: inout Set<String>, at idx: Int32, prefix: String, functionsOnly: Bool) {
        let L = engine.runtime.L
        let value = lua_absindex(L, idx)
        func add(from table: Int32) {
            for key in keys(at: table) where key.hasPrefix(prefix) {
                if functionsOnly {
                    lua_pushstring(L, key)
                    let type = lua_rawget(L, table)
                    lua_settop(L, -2)
                    guard type == LUA_TFUNCTION else { continue }
                }
                names.insert(key)
            }
        }
        if lua_type(L, value) == LUA_TTABLE { add(from: value) }
        if pushIndexTable(value) {
            add(from: lua_gettop(L))
            lua_settop(L, -2)
        }
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, first == "_" || ("a"..."z").contains(first) || ("A"..."Z").contains(first) else {
            return false
        }
        return s.unicodeScalars.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) }
    }

    // MARK: Printing

    /// Prints its arguments as the REPL shows values: strings and numbers
    /// as `print` does, tables laid out with their keys in order (nested
    /// ones to a depth, long ones cut), handles and errors by `__tostring`.
    static let showSource = #"""
    local tostring, type, pairs, rawget, getmetatable, format = tostring, type, next, rawget, getmetatable, string.format
    local concat, sort, huge = table.concat, table.sort, math.huge
    local keywords = {}
    for w in ("and break do else elseif end false for function goto if in local nil not or repeat return then true until while"):gmatch("%a+") do keywords[w] = true end
    local function key_less(a, b)
      local ta, tb = type(a), type(b)
      if ta ~= tb then return ta < tb end
      if ta == "number" or ta == "string" then return a < b end
      return tostring(a) < tostring(b)
    end
    local function scalar(v, quoted)
      if type(v) == "string" then return quoted and format("%q", v):gsub("\\\n", "\\n") or v end
      return tostring(v)
    end
    local function layout(v, depth, seen, indent)
      if type(v) ~= "table" or getmetatable(v) and getmetatable(v).__tostring then return scalar(v, depth > 0) end
      if seen[v] then return "{...}" end
      if depth >= 3 then return "{...}" end
      seen[v] = true
      local n, keys = #v, {}
      for k in pairs, v do
        if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
      end
      sort(keys, key_less)
      local items = {}
      for i = 1, n do
        if #items >= 100 then items[#items + 1] = format("... (%d more)", n - i + 1) break end
        items[#items + 1] = layout(rawget(v, i), depth + 1, seen, indent .. "  ")
      end
      for _, k in ipairs(keys) do
        if #items >= 100 then items[#items + 1] = format("... (%d more)", #keys) break end
        local name = type(k) == "string" and k:match("^[%a_][%w_]*$") and not keywords[k] and k or "[" .. scalar(k, true) .. "]"
        items[#items + 1] = name .. " = " .. layout(rawget(v, k), depth + 1, seen, indent .. "  ")
      end
      seen[v] = nil
      if #items == 0 then return "{}" end
      local flat = "{" .. concat(items, ", ") .. "}"
      if #flat + #indent <= 100 and not flat:find("\n") then return flat end
      return "{\n" .. indent .. "  " .. concat(items, ",\n" .. indent .. "  ") .. "\n" .. indent .. "}"
    end
    return function(...)
      local out = {}
      for i = 1, select("#", ...) do out[i] = layout((select(i, ...)), 0, {}, "") end
      io.write(concat(out, "\t"), "\n")
    end
    """#
}
