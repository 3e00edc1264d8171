import Foundation
import MMCore
import Testing
@testable import MMLab

@Suite("The API reference")
struct DocsTests {
    /// Every function under `kernel`, by its dotted name.
    static func boundFunctions(_ engine: Engine) throws -> Set<String> {
        let names = try engine.evaluate("""
            local seen, out = {}, {}
            local function walk(t, prefix)
              if seen[t] then return end
              seen[t] = true
              for k, v in pairs(t) do
                local name = prefix .. "." .. tostring(k)
                if type(v) == "function" then out[#out + 1] = name
                elseif type(v) == "table" and k ~= "Error" then walk(v, name) end
              end
            end
            walk(kernel, "kernel")
            return table.concat(out, " ")
            """)
        guard case .string(let text) = names else { return [] }
        return Set(text.split(separator: " ").map(String.init))
    }

    @Test("every bound function and method is documented, and every documented one is bound")
    func coverage() throws {
        let docs = ApiDocs.shipped
        let engine = try Engine()
        let functions = try Self.boundFunctions(engine)
        let documented = Set(docs.entries.filter { $0.type == nil }.map(\.name))
        #expect(functions.subtracting(documented).sorted() == [], "bound but not documented")
        #expect(documented.subtracting(functions).sorted() == [], "documented but not bound")
        let classes = engine.runtime.classes.compactMap { $0?.takeUnretainedValue() }
        #expect(Set(classes.map(\.type.name)) == Set(docs.classes.map(\.name)), "every handle type, and only those")
        for cls in classes {
            let bound = Set(cls.methods.map(\.0))
            for method in bound {
                #expect(docs.entry("\(cls.type.name):\(method)") != nil, "\(cls.type.name):\(method) has no documentation")
            }
            for entry in docs.entries where entry.type == cls.type.name {
                #expect(bound.contains(entry.method ?? ""), "\(entry.name) is documented but \(cls.type.name) has no such method")
            }
            #expect(Set(docs.methods(of: cls.type.name).compactMap(\.method)) == bound,
                    "\(cls.type.name)'s documented methods, inherited ones included, are the ones it has")
        }
        for entry in docs.entries {
            #expect(!entry.summary.isEmpty && !entry.errors.isEmpty && !entry.models.isEmpty, "\(entry.name) is documented in full")
        }
    }

    @Test("docs/api.md is what mmlab doc --markdown prints")
    func markdown() throws {
        let r = try mmlab(["doc", "--markdown"])
        #expect(r.status == 0)
        let committed = try String(contentsOfFile: repositoryRoot + "/docs/api.md", encoding: .utf8)
        #expect(r.stdout == committed, "regenerate it: mmlab doc --markdown > docs/api.md")
    }

    @Test("mmlab doc prints an entry, a type with its inherited methods, a module; an unknown name is a usage error")
    func doc() throws {
        let r = try mmlab(["doc", "Page:read_u8"])
        #expect(r.stdout == "Page:read_u8(offset) -> integer\n  a byte\n  errors: EINVAL outside the page\n  models: readb on the page's kernel mapping\n")
        let inherited = try mmlab(["doc", "BorrowedPage:read_u8"])
        #expect(inherited.stdout == r.stdout, "a BorrowedPage has every accessor of Page")
        let type = try mmlab(["doc", "MmWithUser"]).stdout.split(separator: "\n").map(String.init)
        #expect(type.first == "MmWithUser : Mm — an address space with a user (mm_users): its mappings may be used (mmget/mmput)")
        #expect(type.contains("  MmWithUser:mmget_not_zero() -> MmWithUser?  a user of the address space, or nil once mm_users reached zero"))
        let module = try mmlab(["doc", "kernel.sync"])
        #expect(module.stdout.hasPrefix("kernel.sync — locks, with lockdep\n  kernel.sync.SpinLock(name, {class?}?) -> SpinLock"))
        let unknown = try mmlab(["doc", "Page:raed_u8"])
        #expect(unknown.status == 2)
        #expect(unknown.stderr.hasPrefix("Error: no function, method, type or module named 'Page:raed_u8' (did you mean Page:read_u8?)\n"))
        for name in ["kernel.page.Page.from_phys", "UserSliceReader:read_slice", "UserSliceReader:read_all", "UserSliceReader:clone_reader",
                     "UserSliceWriter:write_slice", "VmaRef:zap_page_range_single", "Task:pid", "Allocator:insert_node_in_range", "Node:prev_node"] {
            #expect(try mmlab(["doc", name]).status == 0, "\(name) is there as the kernel and Rust spell it")
        }
    }

    @Test("--lua-ls writes lua-language-server annotations that load as Lua: classes, inheritance, parameters")
    func luaLS() throws {
        let r = try mmlab(["doc", "--lua-ls"])
        #expect(r.stdout.hasPrefix("---@meta kernel\n"))
        #expect(r.stdout.contains("---@class MmWithUser : Mm\nlocal MmWithUser = {}\n"))
        #expect(r.stdout.contains("---a byte (errors: EINVAL outside the page)\n---@param offset integer\n---@return integer\nfunction Page:read_u8(offset) end\n"))
        #expect(r.stdout.contains("---@param gfp? integer\n---@return Page\nfunction kernel.page.Page.alloc_page(gfp) end\n"))
        let file = try temporaryFile(r.stdout)
        let load = try mmlab(["-e", "assert(loadfile(arg[1])); print('loads')", file])
        #expect(load.stdout == "loads\n", "\(load.stderr)")
    }
}
