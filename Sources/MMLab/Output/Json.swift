/// A JSON value, for the files mmlab reads back (`explore --merge`).
enum Json: Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([Json])
    case object([(String, Json)])

    static func == (a: Json, b: Json) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case (.bool(let x), .bool(let y)): x == y
        case (.number(let x), .number(let y)): x == y
        case (.string(let x), .string(let y)): x == y
        case (.array(let x), .array(let y)): x == y
        case (.object(let x), .object(let y)): x.elementsEqual(y) { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    subscript(key: String) -> Json? {
        if case .object(let fields) = self { return fields.first { $0.0 == key }?.1 }
        return nil
    }
    var string: String? { if case .string(let s) = self { s } else { nil } }
    var int: Int? { if case .number(let n) = self, let i = Int(exactly: n) { i } else { nil } }
    var array: [Json]? { if case .array(let a) = self { a } else { nil } }

    /// Parses a whole document; nil with where it went wrong.
    static func parse(_ text: String) -> Result<Json, JsonError> {
        var parser = Parser(bytes: Array(text.utf8))
        do throws(JsonError) {
            let value = try parser.value()
            parser.skipSpace()
            guard parser.i == parser.bytes.count else { throw JsonError(offset: parser.i, reason: "text after the value") }
            return .success(value)
        } catch {
            return .failure(error)
        }
    }

    private struct Parser {
        let bytes: [UInt8]
        var i = 0

        mutating func skipSpace() {
            while i < bytes.count, [0x20, 0x0a, 0x0d, 0x09].contains(bytes[i]) { i += 1 }
        }

        func fail(_ reason: String) -> JsonError { JsonError(offset: i, reason: reason) }

        mutating func literal(_ word: String, _ value: Json) throws(JsonError) -> Json {
            let w = Array(word.utf8)
            guard i + w.count <= bytes.count, Array(bytes[i..<i + w.count]) == w else { throw fail("not a value") }
            i += w.count
            return value
        }

        mutating func value() throws(JsonError) -> Json {
            skipSpace()
            guard i < bytes.count else { throw fail("the text ends where a value should be") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var fields: [(String, Json)] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(fields) }
                while true {
                    skipSpace()
                    guard case .string(let key) = try value() else { throw fail("an object key must be a string") }
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("':' expected") }
                    i += 1
                    fields.append((key, try value()))
                    skipSpace()
                    guard i < bytes.count else { throw fail("the object does not end") }
                    if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(fields) }
                    guard bytes[i] == UInt8(ascii: ",") else { throw fail("',' or '}' expected") }
                    i += 1
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [Json] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    items.append(try value())
                    skipSpace()
                    guard i < bytes.count else { throw fail("the array does not end") }
                    if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    guard bytes[i] == UInt8(ascii: ",") else { throw fail("',' or ']' expected") }
                    i += 1
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "n"): return try literal("null", .null)
            default:
                let start = i
                while i < bytes.count, "+-.0123456789eE".utf8.contains(bytes[i]) { i += 1 }
                guard let n = Double(String(decoding: bytes[start..<i], as: UTF8.self)) else { throw fail("not a value") }
                return .number(n)
            }
        }

        mutating func string() throws(JsonError) -> String {
            i += 1
            var out: [UInt8] = []
            while i < bytes.count {
                let b = bytes[i]
                i += 1
                switch b {
                case UInt8(ascii: "\""): return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard i < bytes.count else { throw fail("the string does not end") }
                    let e = bytes[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "n"): out.append(0x0a)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "r"): out.append(0x0d)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0c)
                    case UInt8(ascii: "u"):
                        guard i + 4 <= bytes.count, let code = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16),
                              let scalar = Unicode.Scalar(code) else { throw fail("a bad \\u escape") }
                        i += 4
                        out += Array(String(Character(scalar)).utf8)
                    default: out.append(e)
                    }
                default: out.append(b)
                }
            }
            throw fail("the string does not end")
        }
    }
}

struct JsonError: Error {
    let offset: Int
    let reason: String
}
