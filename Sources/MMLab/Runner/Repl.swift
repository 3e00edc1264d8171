#if canImport(Glibc)
import Glibc
#endif
import CLua
import LuaShim

/// The read-eval-print loop: bare expressions print their values,
/// incomplete statements continue on `>>`, errors never end the session.
public final class Repl {
    let engine: Engine
    let editor: LineEditor

    /// `$MMLAB_HISTORY`, else `~/.mmlab_history`.
    public static var defaultHistoryPath: String? {
        if let path = getenv("MMLAB_HISTORY") { return String(cString: path) }
        return getenv("HOME").map { String(cString: $0) + "/.mmlab_history" }
    }

    public init(engine: Engine, historyPath: String? = Repl.defaultHistoryPath) {
        self.engine = engine
        editor = LineEditor(historyPath: historyPath)
    }

    /// Runs until the end of input.
    public func run() {
        while step() {}
        print()
    }

    /// Reads and runs one statement; false at the end of input.
    func step() -> Bool {
        let L = engine.runtime.L
        let first: String
        switch editor.readLine(prompt: "> ") {
        case .eof: return false
        case .interrupt: return true
        case .line(let line): first = line
        }
        guard readStatement(first) else { return true }
        let base = lua_gettop(L) - 1
        do {
            try engine.call(arguments: 0, results: LUA_MULTRET)
            let n = lua_gettop(L) - base
            if n > 0 {
                lua_getglobal(L, "print")
                lua_rotate(L, base + 1, 1)
                try engine.call(arguments: n, results: 0)
            }
        } catch {
            report(error)
        }
        lua_settop(L, base)
        return true
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
                guard case .line(let more) = editor.readLine(prompt: ">> ") else { return false }
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
}
