#if canImport(Glibc)
import Glibc
#endif

/// One value of a result row: what CSV and JSON can both hold.
enum ResultValue: Equatable {
    case integer(Int64)
    case number(Double)
    case string(String)
    case boolean(Bool)

    /// As a CSV field (quoted when it must be, RFC 4180).
    var csv: String {
        switch self {
        case .integer(let i): return String(i)
        case .number(let d): return d.isFinite ? String(d) : d.isNaN ? "nan" : (d > 0 ? "inf" : "-inf")
        case .boolean(let b): return b ? "true" : "false"
        case .string(let s):
            guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
            return "\"" + s.replacingAll("\"", with: "\"\"") + "\""
        }
    }

    /// As JSON (NaN and infinities, which JSON lacks, become null).
    var json: String {
        switch self {
        case .integer(let i): return String(i)
        case .number(let d): return d.isFinite ? String(d) : "null"
        case .boolean(let b): return b ? "true" : "false"
        case .string(let s): return jsonString(s)
        }
    }

    var number: Double? {
        switch self {
        case .integer(let i): Double(i)
        case .number(let d): d
        default: nil
        }
    }
}

/// A JSON string literal.
func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

extension String {
    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}

/// Rows a script recorded (`kernel.results.record`): columns in the order
/// they first appeared, written as CSV or JSON by `--results FILE`.
final class Results {
    private(set) var columns: [String] = []
    private(set) var rows: [[String: ResultValue]] = []
    /// The most rows kept: beyond it, rows are counted, not kept.
    static let limit = 10_000_000
    private(set) var dropped = 0

    func record(_ row: [(String, ResultValue)]) {
        guard rows.count < Self.limit else {
            dropped += 1
            return
        }
        var values: [String: ResultValue] = [:]
        for (key, value) in row {
            if values[key] == nil, !columns.contains(key) { columns.append(key) }
            values[key] = value
        }
        rows.append(values)
    }

    func clear() {
        columns = []
        rows = []
        dropped = 0
    }

    /// The values of `column`, one per row (nil where a row lacks it).
    func column(_ name: String) -> [ResultValue?] { rows.map { $0[name] } }

    enum Format {
        case csv, json
        /// By the file's extension; nil for any other.
        init?(path: String) {
            let lower = path.lowercased()
            if lower.hasSuffix(".csv") { self = .csv } else if lower.hasSuffix(".json") { self = .json } else { return nil }
        }
    }

    /// Writes every row to `file`: a CSV header and lines, or a JSON array of objects.
    func write(_ format: Format, to file: OutputFile) { write(format, file.write) }

    /// The same, text by text to `emit`.
    func write(_ format: Format, _ emit: (String) -> Void) {
        switch format {
        case .csv:
            emit(columns.map { ResultValue.string($0).csv }.joined(separator: ",") + "\n")
            for row in rows { emit(columns.map { row[$0]?.csv ?? "" }.joined(separator: ",") + "\n") }
        case .json:
            emit("[")
            for (i, row) in rows.enumerated() {
                let fields = columns.compactMap { c in row[c].map { jsonString(c) + ": " + $0.json } }
                emit((i == 0 ? "\n  {" : ",\n  {") + fields.joined(separator: ", ") + "}")
            }
            emit("\n]\n")
        }
    }
}

/// A file written whole or not at all: into `path.PID.tmp`, renamed over
/// `path` by `commit`; abandoned (and the temporary removed) otherwise.
/// The pid keeps two runs writing the same file from sharing a temporary.
final class OutputFile {
    let path: String
    private let temporary: String
    private var handle: UnsafeMutablePointer<FILE>?
    private var failed = false

    /// Opens the temporary; the error says why it cannot be written.
    init(path: String) throws(EngineError) {
        self.path = path
        temporary = "\(path).\(getpid()).tmp"
        guard let handle = fopen(temporary, "w") else {
            throw EngineError(message: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        self.handle = handle
    }

    deinit { abandon() }

    func write(_ text: String) {
        guard let handle, !failed else { return }
        if fputs(text, handle) < 0 { failed = true }
    }

    /// Closes and renames it into place.
    func commit() throws(EngineError) {
        guard let handle else { return }
        self.handle = nil
        let closed = fclose(handle) == 0
        guard closed, !failed, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw EngineError(message: "writing \(path) failed (\(reason)); nothing was written")
        }
    }

    func abandon() {
        guard let handle else { return }
        fclose(handle)
        self.handle = nil
        unlink(temporary)
    }

    /// Whether `path` could be written: its folder exists and is writable.
    static func check(_ path: String, what: String) throws(EngineError) {
        let folder = path.lastIndex(of: "/").map { String(path[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? "."
        try check(folder: folder, "cannot write the \(what) to \(path)")
    }

    /// Whether files can be written under `folder`: it exists and is writable.
    static func check(folder: String, what: String) throws(EngineError) {
        try check(folder: folder, "cannot write the \(what) under \(folder)")
    }

    private static func check(folder: String, _ failure: String) throws(EngineError) {
        var info = stat()
        guard stat(folder, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw EngineError(message: "\(failure): no folder \(folder)")
        }
        guard access(folder, W_OK) == 0 else {
            throw EngineError(message: "\(failure): \(folder) is not writable")
        }
    }
}
