/// The documentation of every bound function and method
/// (Bindings/api.txt): what `:help`, `mmlab doc`, the lua-language-server
/// annotations and docs/api.md print. A test keeps it equal to what is bound.
public struct ApiDocs {
    public struct Entry: Equatable {
        /// `kernel.page.Page.alloc_page` or `Page:read_u8`.
        public let name: String
        public let arguments: String
        public let results: String
        public let summary: String
        public let errors: String
        public let models: String
        public let section: String

        /// `Page` for a method, nil for a function.
        var type: String? { name.firstIndex(of: ":").map { String(name[..<$0]) } }
        var method: String? { name.firstIndex(of: ":").map { String(name[name.index(after: $0)...]) } }
        var signature: String { "\(name)(\(arguments)) -> \(results)" }
    }

    public struct Class: Equatable {
        public let name: String
        public let parent: String?
        /// The parent's methods it lacks.
        public let without: [String]
        public let summary: String
        public let section: String
    }

    public struct Section: Equatable {
        public let name: String
        public let summary: String
    }

    public private(set) var entries: [Entry] = []
    public private(set) var classes: [Class] = []
    public private(set) var sections: [Section] = []

    /// The reference shipped in the binary.
    public static let shipped = ApiDocs(text: String(decoding: PackageResources.api_txt, as: UTF8.self))

    /// Parses api.txt's lines (see its header).
    init(text: String) {
        var section = ""
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingSpaces
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            let fields = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingSpaces }
            if line.hasPrefix("section ") {
                section = String(fields[0].dropFirst("section ".count))
                sections.append(Section(name: section, summary: fields.count > 1 ? fields[1] : ""))
            } else if line.hasPrefix("class ") {
                // class NAME : PARENT - METHOD...: the parent's methods but those
                let parts = fields[0].dropFirst("class ".count).split(separator: "-", maxSplits: 1).map { $0.trimmingSpaces }
                let head = parts[0].split(separator: ":").map { $0.trimmingSpaces }
                let without = parts.count > 1 ? parts[1].split(separator: " ").map(String.init) : []
                classes.append(Class(name: head[0], parent: head.count > 1 ? head[1] : nil, without: without,
                                     summary: fields.count > 1 ? fields[1] : "", section: section))
            } else if let open = fields[0].firstIndex(of: "("), let arrow = Self.find(") -> ", in: fields[0]) {
                let head = fields[0]
                entries.append(Entry(name: String(head[..<open]), arguments: String(head[head.index(after: open)..<arrow.lowerBound]),
                                     results: String(head[arrow.upperBound...]), summary: fields.count > 1 ? fields[1] : "",
                                     errors: fields.count > 2 ? fields[2] : "-", models: fields.count > 3 ? fields[3] : "-",
                                     section: section))
            }
        }
    }

    /// The last occurrence of `needle` in `text`.
    static func find(_ needle: String, in text: String) -> Range<String.Index>? {
        var i = text.endIndex
        while i > text.startIndex {
            i = text.index(before: i)
            if text[i...].hasPrefix(needle) { return i..<text.index(i, offsetBy: needle.count) }
        }
        return nil
    }

    public func type(_ name: String) -> Class? { classes.first { $0.name == name } }

    /// A type's classes, itself first, then its parents.
    func lineage(_ name: String) -> [Class] {
        var out: [Class] = []
        var next = type(name)
        while let c = next, !out.contains(c) {
            out.append(c)
            next = c.parent.flatMap(type)
        }
        return out
    }

    /// `kernel.x.y`, or `Type:method` (found on the type or a parent; `Type.method` too).
    public func entry(_ name: String) -> Entry? {
        if let e = entries.first(where: { $0.name == name }) { return e }
        let sep = name.firstIndex(of: ":") ?? (type(String(name.prefix { $0 != "." })) != nil ? name.firstIndex(of: ".") : nil)
        guard let sep else { return nil }
        let typeName = String(name[..<sep]), method = String(name[name.index(after: sep)...])
        for c in lineage(typeName) {
            if let e = entries.first(where: { $0.name == "\(c.name):\(method)" }) { return e }
            if c.without.contains(method) { return nil }
        }
        return nil
    }

    /// A type's methods, its own and its parents' (the nearest wins), by name.
    public func methods(of typeName: String) -> [Entry] {
        var seen: Set<String> = []
        var out: [Entry] = []
        for c in lineage(typeName) {
            for e in entries where e.type == c.name {
                if let m = e.method, seen.insert(m).inserted { out.append(e) }
            }
            seen.formUnion(c.without)
        }
        return out.sorted { $0.method ?? "" < $1.method ?? "" }
    }

    // MARK: Text

    /// One entry, as `:help` and `mmlab doc` print it.
    func describe(_ e: Entry) -> String {
        var lines = [e.signature, "  " + e.summary]
        if e.errors != "-" { lines.append("  errors: " + e.errors) }
        if e.models != "-" { lines.append("  models: " + e.models) }
        return lines.joined(separator: "\n")
    }

    /// What `:help NAME` and `mmlab doc NAME` print: an entry, a type with
    /// its methods, or a section's functions and types; nil if it names none.
    public func help(_ name: String) -> String? {
        if let e = entry(name) { return describe(e) }
        if let c = type(name) {
            var lines = ["\(c.name)\(c.parent.map { " : \($0)" } ?? "") — \(c.summary)"]
            for m in methods(of: c.name) { lines.append("  \(c.name):\(m.method ?? "")(\(m.arguments)) -> \(m.results)  \(m.summary)") }
            return lines.joined(separator: "\n")
        }
        if let s = sections.first(where: { $0.name == name }) {
            var lines = ["\(s.name) — \(s.summary)"]
            for e in entries where e.section == s.name && e.type == nil { lines.append("  \(e.signature)  \(e.summary)") }
            let types = classes.filter { $0.section == s.name }.map(\.name)
            if !types.isEmpty { lines.append("  types: " + types.joined(separator: ", ") + " (:help TYPE)") }
            return lines.joined(separator: "\n")
        }
        return nil
    }

    /// Names close to `name`, for a did-you-mean.
    public func suggestions(_ name: String) -> [String] {
        let all = entries.map(\.name) + classes.map(\.name) + sections.map(\.name)
        let lower = name.lowercased()
        let last = String(lower.split(whereSeparator: { $0 == "." || $0 == ":" }).last ?? "")
        return all.filter { candidate in
            let c = candidate.lowercased()
            let tail = String(c.split(whereSeparator: { $0 == "." || $0 == ":" }).last ?? "")
            return !last.isEmpty && (tail == last || MissingMethod.distance(tail, last) <= 2 && last.count > 3)
        }.sorted()
    }

    /// The reference as Markdown: docs/api.md.
    public var markdown: String {
        var out = ["# mmlab's Lua API", "",
                   "Every function and method the `kernel` table binds, with its errors and what it models in the kernel or its Rust abstractions. Generated by `mmlab doc --markdown` from `Sources/MMLab/Bindings/api.txt`; a test keeps both equal to what is bound.", ""]
        for s in sections {
            out += ["## \(s.name)", "", s.summary.prefix(1).uppercased() + s.summary.dropFirst() + ".", ""]
            for e in entries where e.section == s.name && e.type == nil { out.append(markdownItem(e)) }
            for c in classes where c.section == s.name {
                out += ["", "### \(c.name)\(c.parent.map { " (a \($0))" } ?? "")", "", c.summary.prefix(1).uppercased() + c.summary.dropFirst() + ".", ""]
                for e in entries where e.type == c.name { out.append(markdownItem(e)) }
            }
            out.append("")
        }
        return out.joined(separator: "\n")
    }

    private func markdownItem(_ e: Entry) -> String {
        var item = "- `\(e.signature)`: \(e.summary)."
        if e.errors != "-" { item += " Errors: \(e.errors)." }
        if e.models != "-" { item += " Models: \(e.models)." }
        return item
    }

    /// lua-language-server annotations (`---@meta`): a class per handle
    /// type, the kernel table's fields, every function and method.
    public var luaLS: String {
        var out = ["---@meta kernel", "-- mmlab's kernel table for lua-language-server: mmlab doc --lua-ls > kernel.lua", ""]
        for c in classes {
            out.append("---\(c.summary)")
            out.append("---@class \(c.name)\(c.parent.map { " : \($0)" } ?? "")")
            out.append("local \(c.name) = {}")
            out.append("")
        }
        // The kernel table and its subtables.
        var tables: [String] = []
        for e in entries where e.type == nil {
            let parts = e.name.split(separator: ".").dropLast()
            for i in 1...parts.count {
                let t = parts.prefix(i).joined(separator: ".")
                if !tables.contains(t) { tables.append(t) }
            }
        }
        for t in tables { out.append(t == "kernel" ? "kernel = {}" : "\(t) = {}") }
        out.append("")
        for e in entries {
            out.append("---\(e.summary)" + (e.errors != "-" ? " (errors: \(e.errors))" : ""))
            for (name, optional) in Self.parameters(e.arguments) {
                out.append("---@param \(name)\(optional ? "?" : "") \(name == "..." ? "any" : Self.luaType(name))")
            }
            let results = e.results.split(separator: ",").map { $0.trimmingSpaces }.filter { $0 != "nil" }
            for r in results { out.append("---@return \(Self.luaType(r))") }
            let params = Self.parameters(e.arguments).map(\.0).joined(separator: ", ")
            if let type = e.type, let method = e.method {
                out.append("function \(type):\(method)(\(params)) end")
            } else {
                out.append("function \(e.name)(\(params)) end")
            }
            out.append("")
        }
        return out.joined(separator: "\n")
    }

    /// The parameters of an argument list: names, and whether optional.
    static func parameters(_ arguments: String) -> [(String, Bool)] {
        var out: [(String, Bool)] = []
        var depth = 0, current = ""
        for c in arguments + "," {
            if c == "{" { depth += 1 }
            if c == "}" { depth -= 1 }
            if c == ",", depth == 0 {
                let word = current.trimmingSpaces
                current = ""
                guard !word.isEmpty else { continue }
                if word.hasPrefix("{") {
                    out.append(("options", word.hasSuffix("?")))
                } else {
                    let name = word.hasSuffix("?") ? String(word.dropLast()) : word
                    out.append((name.contains("=") ? "fields" : name, word.hasSuffix("?")))
                }
            } else {
                current.append(c)
            }
        }
        return out
    }

    /// A Lua type for a parameter or result word.
    static func luaType(_ word: String) -> String {
        let w = word.hasSuffix("?") ? String(word.dropLast()) : word
        switch w {
        case "integer", "string", "boolean", "table", "number": return word
        case "...", "value": return "any"
        case "iterator", "fn": return "function"
        case "options", "fields": return "table"
        default:
            if let first = w.first, first.isUppercase { return word }
            if ["addr", "len", "size", "offset", "length", "order", "pfn", "phys", "cpu", "n", "start", "last", "subclass", "i",
                "alignment", "color", "range_start", "range_end", "done", "total", "delta", "gfp"].contains(w) { return "integer" }
            if ["name", "fmt", "data", "type", "label", "mode"].contains(w) { return "string" }
            return "any"
        }
    }
}
