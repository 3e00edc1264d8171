#if canImport(Glibc)
import Glibc
#endif

/// What the user typed at a prompt.
enum LineInput: Equatable {
    case line(String)
    /// Ctrl-C: abandon the statement being typed.
    case interrupt
    /// Ctrl-D on an empty line, or the end of the input.
    case eof
}

/// A small line editor for the REPL: emacs keys, arrow keys, history that
/// persists across sessions, and a completion hook. Off a terminal it
/// reads plain lines, printing prompts as lua.c does.
final class LineEditor {
    private(set) var history: [String] = []
    private let historyPath: String?
    private let interactive = isatty(0) != 0 && isatty(1) != 0
    static let historyLimit = 1000

    /// Given the line and the cursor, the start of the word to complete
    /// and its candidates.
    var complete: (([Unicode.Scalar], Int) -> (start: Int, candidates: [String]))?

    /// Off a terminal, write each line read after its prompt (as readline).
    private let echo: Bool

    init(historyPath: String?, echo: Bool = false) {
        self.historyPath = historyPath
        self.echo = echo
        if let historyPath, let f = fopen(historyPath, "r") {
            defer { fclose(f) }
            while let line = Self.readLine(f) {
                if !line.isEmpty { history.append(line) }
            }
            history = Array(history.suffix(Self.historyLimit))
        }
    }

    /// Records a line in the history and appends it to the history file.
    func remember(_ line: String) {
        guard !line.isEmpty, line != history.last else { return }
        history.append(line)
        if history.count > Self.historyLimit { history.removeFirst() }
        if let historyPath, let f = fopen(historyPath, "a") {
            fputs(line + "\n", f)
            fclose(f)
        }
    }

    func readLine(prompt: String) -> LineInput {
        guard interactive else {
            fputs(prompt, stdout)
            let line = Self.readLine(stdin)
            if echo, let line { fputs(line + "\n", stdout) }
            fflush(stdout)
            return line.map(LineInput.line) ?? .eof
        }
        var saved = termios()
        tcgetattr(0, &saved)
        var raw = saved
        raw.c_iflag &= ~tcflag_t(BRKINT | ICRNL | INPCK | ISTRIP | IXON)
        raw.c_lflag &= ~tcflag_t(ECHO | ICANON | IEXTEN | ISIG)
        tcsetattr(0, TCSADRAIN, &raw)  // not FLUSH: keep what was typed ahead (a paste)
        defer { tcsetattr(0, TCSADRAIN, &saved) }
        var state = EditState(prompt: prompt, history: history)
        state.render()
        while true {
            guard let key = readKey() else { return .eof }
            switch state.handle(key, complete: complete) {
            case .none: state.render()
            case .done(let input):
                write("\r\n")
                return input
            }
        }
    }

    /// One line of a C stream, without its newline; nil at the end.
    private static func readLine(_ f: UnsafeMutablePointer<FILE>) -> String? {
        var bytes: [UInt8] = []
        while true {
            let c = getc(f)
            if c == EOF { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
            if c == 10 { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(UInt8(c))
        }
    }

    private func readByte() -> UInt8? {
        var b: UInt8 = 0
        while true {
            let n = Glibc.read(0, &b, 1)
            if n == 1 { return b }
            if n < 0 && errno == EINTR { continue }
            return nil
        }
    }

    /// A key: a byte, an escape sequence, or a UTF-8 character.
    private func readKey() -> Key? {
        guard let b = readByte() else { return nil }
        switch b {
        case 27:
            guard let b1 = readByte() else { return nil }
            guard b1 == UInt8(ascii: "[") || b1 == UInt8(ascii: "O"), let b2 = readByte() else { return .ignored }
            switch b2 {
            case UInt8(ascii: "A"): return .up
            case UInt8(ascii: "B"): return .down
            case UInt8(ascii: "C"): return .right
            case UInt8(ascii: "D"): return .left
            case UInt8(ascii: "H"): return .home
            case UInt8(ascii: "F"): return .end
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                var last = b2
                while last != UInt8(ascii: "~"), let next = readByte() { last = next; if !(48...59).contains(next) { break } }
                switch b2 {
                case UInt8(ascii: "1"), UInt8(ascii: "7"): return .home
                case UInt8(ascii: "4"), UInt8(ascii: "8"): return .end
                case UInt8(ascii: "3"): return .delete
                default: return .ignored
                }
            default: return .ignored
            }
        case 0x80...:
            var bytes = [b]
            let count = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2
            while bytes.count < count, let next = readByte() { bytes.append(next) }
            return String(decoding: bytes, as: UTF8.self).unicodeScalars.first.map(Key.character) ?? .ignored
        default:
            return .control(b)
        }
    }

    private func write(_ s: String) {
        fputs(s, stdout)
        fflush(stdout)
    }
}

enum Key: Equatable {
    case control(UInt8)
    case character(Unicode.Scalar)
    case up, down, left, right, home, end, delete, ignored
}

/// The line being edited; pure, so that tests can drive it.
struct EditState {
    enum Outcome: Equatable {
        case none
        case done(LineInput)
    }

    let prompt: String
    var buffer: [Unicode.Scalar] = []
    var cursor = 0
    private var history: [String]
    private var historyIndex: Int
    private var pending: [Unicode.Scalar] = []
    var output: (String) -> Void = { fputs($0, stdout); fflush(stdout) }

    init(prompt: String, history: [String]) {
        self.prompt = prompt
        self.history = history
        historyIndex = history.count
    }

    var line: String { String(String.UnicodeScalarView(buffer)) }

    mutating func handle(_ key: Key, complete: (([Unicode.Scalar], Int) -> (start: Int, candidates: [String]))?) -> Outcome {
        switch key {
        case .character(let c): insert([c])
        case .control(let b):
            switch b {
            case 13, 10: return .done(.line(line))
            case 3: output("^C"); return .done(.interrupt)
            case 4:
                if buffer.isEmpty { return .done(.eof) }
                if cursor < buffer.count { buffer.remove(at: cursor) }
            case 1: cursor = 0
            case 5: cursor = buffer.count
            case 2: cursor = max(0, cursor - 1)
            case 6: cursor = min(buffer.count, cursor + 1)
            case 8, 127:
                if cursor > 0 { buffer.remove(at: cursor - 1); cursor -= 1 }
            case 11: buffer.removeSubrange(cursor...)
            case 21: buffer.removeSubrange(..<cursor); cursor = 0
            case 23:
                var start = cursor
                while start > 0 && buffer[start - 1] == " " { start -= 1 }
                while start > 0 && buffer[start - 1] != " " { start -= 1 }
                buffer.removeSubrange(start..<cursor)
                cursor = start
            case 12: output("\u{1b}[H\u{1b}[2J")
            case 16: recall(-1)
            case 14: recall(1)
            case 9: completeWord(complete)
            case 32...126: insert([Unicode.Scalar(b)])
            default: break
            }
        case .up: recall(-1)
        case .down: recall(1)
        case .left: cursor = max(0, cursor - 1)
        case .right: cursor = min(buffer.count, cursor + 1)
        case .home: cursor = 0
        case .end: cursor = buffer.count
        case .delete: if cursor < buffer.count { buffer.remove(at: cursor) }
        case .ignored: break
        }
        return .none
    }

    private mutating func insert(_ scalars: [Unicode.Scalar]) {
        buffer.insert(contentsOf: scalars, at: cursor)
        cursor += scalars.count
    }

    /// Up and down through the history; the line being typed is kept below it.
    private mutating func recall(_ step: Int) {
        let target = historyIndex + step
        guard target >= 0, target <= history.count else { return }
        if historyIndex == history.count { pending = buffer }
        historyIndex = target
        buffer = target == history.count ? pending : Array(history[target].unicodeScalars)
        cursor = buffer.count
    }

    /// Tab: the common prefix of the candidates, or the candidates listed.
    private mutating func completeWord(_ complete: (([Unicode.Scalar], Int) -> (start: Int, candidates: [String]))?) {
        guard let complete else { return }
        let (start, candidates) = complete(buffer, cursor)
        guard !candidates.isEmpty else { return }
        let typed = cursor - start
        let common = candidates.dropFirst().reduce(Array(candidates[0].unicodeScalars)) { prefix, c in
            Array(zip(prefix, c.unicodeScalars).prefix { $0 == $1 }.map(\.0))
        }
        if common.count > typed {
            insert(Array(common[typed...]))
        } else if candidates.count > 1 {
            output("\r\n" + candidates.joined(separator: "  ") + "\r\n")
        }
    }

    func render() {
        var s = "\r" + prompt + line + "\u{1b}[K"
        if cursor < buffer.count { s += "\u{1b}[\(buffer.count - cursor)D" }
        output(s)
    }
}
