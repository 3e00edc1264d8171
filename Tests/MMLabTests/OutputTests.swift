import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

/// Parses an SVG: whether it is well-formed XML, and what it holds.
final class SvgCheck: NSObject, XMLParserDelegate {
    var elements: [String: Int] = [:]
    var texts: [String] = []
    private var inText = false, current = ""

    static func parse(_ svg: String) -> SvgCheck? {
        let check = SvgCheck()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = check
        return parser.parse() ? check : nil
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        elements[name, default: 0] += 1
        inText = name == "text"
        current = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { if inText { current += string } }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        if name == "text" { texts.append(current) }
        inText = false
    }
}

@Suite("Results, pictures and traces")
struct OutputTests {
    func folder() throws -> String { try temporaryDirectory("mmlab-out") }

    @Test("results are written as CSV or JSON by the extension, NaN included")
    func results() throws {
        let dir = try folder()
        let script = try temporaryFile("""
            for i = 1, 3 do kernel.results.record{step = i, name = "a,\\"b\\"", value = i / 2, ok = i ~= 2} end
            kernel.results.record{step = 4, value = 0/0}
            print(kernel.results.count())
            """)
        let csv = try mmlab(["run", "--results", dir + "/r.csv", script])
        #expect(csv.status == 0 && csv.stdout == "4\n")
        #expect(try String(contentsOfFile: dir + "/r.csv", encoding: .utf8) == #"""
            name,ok,step,value
            "a,""b""",true,1,0.5
            "a,""b""",false,2,1.0
            "a,""b""",true,3,1.5
            ,,4,nan

            """#)
        #expect(try mmlab(["--results", dir + "/r.json", script]).status == 0, "the lua-style command line too")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/r.json"))) as? [[String: Any]]
        #expect(json?.count == 4)
        #expect(json?[0]["name"] as? String == "a,\"b\"")
        #expect(json?[3]["value"] is NSNull, "NaN is null in JSON")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["r.csv", "r.json"], "no temporary left")
    }

    @Test("unwritable outputs are clear errors before the run, and never half-written files")
    func unwritable() throws {
        let script = try temporaryFile("print('ran')")
        let missing = try mmlab(["run", "--results", "/nonexistent/dir/r.csv", script])
        #expect(missing.status == 1 && missing.stdout.isEmpty)
        #expect(missing.stderr == "mmlab: cannot write the results to /nonexistent/dir/r.csv: no folder /nonexistent/dir\n")
        let pictures = try mmlab(["--out", "/etc/passwd/pictures", script])
        #expect(pictures.status == 1 && pictures.stdout.isEmpty)
        #expect(pictures.stderr == "\(mmlabPath): cannot create the folder /etc/passwd/pictures: Not a directory\n",
                "one program name, and the folder as given")
        let made = try folder()
        let created = try mmlab(["--out", made + "/a/b", script])
        #expect(created.status == 0 && created.stdout == "ran\n")
        #expect(FileManager.default.fileExists(atPath: made + "/a/b"), "--out makes its folder, and its parents")
        let extensionless = try mmlab(["run", "--results", "/tmp/r.txt", script])
        #expect(extensionless.status == 2 && extensionless.stderr.hasPrefix("Error: --results takes a file ending in .csv or .json, got '/tmp/r.txt'\n"),
                "\(extensionless.stderr)")
        let trace = try mmlab(["run", "--trace", "/nonexistent/trace.json", script])
        #expect(trace.status == 1 && trace.stderr == "mmlab: cannot write the trace to /nonexistent/trace.json: no folder /nonexistent\n")
        let dir = try folder()
        let plot = try temporaryFile("""
            kernel.results.record{x = 1}
            local ok, err = pcall(kernel.plot.line, {file = "sub/x.svg", x = "x", y = "x"})
            print(ok, err)
            print(pcall(kernel.plot.line, {file = "x.png", x = "x", y = "x"}))
            """)
        let r = try mmlab(["run", "--out", dir, plot])
        #expect(r.stdout.hasPrefix("false\tcannot write \(dir)/sub/x.svg: No such file or directory\n"), "\(r.stdout)")
        #expect(r.stdout.contains("a name ending in .svg"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty, "nothing half-written")
    }

    @Test("pictures: well-formed SVG holding what they show; written only under an output folder")
    func pictures() throws {
        let dir = try folder()
        let script = try temporaryFile("""
            local a = kernel.drm_mm.Allocator(0, 1 << 30)
            local nodes = {}
            for i = 1, 100000 do nodes[i] = a:insert_node(4096, {color = i % 5, mode = "low"}) end
            for i = 1, 100000, 2 do kernel.drop(nodes[i]) end
            local svg, path = kernel.plot.drm_mm(a, {file = "drm.svg", title = "a busy drm_mm"})
            print(path ~= nil, #svg < 2000000)
            local pages = {}
            for i = 1, 300 do pages[i] = kernel.page.Page.alloc_pages(0, i % 3) end
            kernel.plot.memory{file = "memory.svg"}
            local u = kernel.mm.mm_alloc()
            local alloc = kernel.binder.Alloc(u, 64 * 4096)
            local b = alloc:new_buf{data_size = 3 * 4096}
            alloc:new_buf{data_size = 100}:free()
            kernel.plot.binder(alloc, {file = "binder.svg"})
            for i = 1, 5000 do kernel.results.record{t = i, v = i % 7 == 0 and 0/0 or math.sin(i / 100)} end
            kernel.plot.line{file = "line.svg", title = "sine", x = "t", y = "v"}
            print(pcall(kernel.plot.line, {x = {1, 2, 3}, series = {a = {1, 2}}}))
            print(pcall(kernel.plot.line, {x = "t", y = "nope"}))
            print(pcall(kernel.plot.memory, {start = 0x100000, size = 0}))
            print(#kernel.plot.memory{start = 0x100000, size = 64 * 4096} > 0)
            local whole = kernel.drm_mm.Allocator(0, -1)  -- 2^64 - 1 bytes: cell sizes must not wrap
            local top = whole:insert_node(1 << 40, {mode = "high"})
            print("whole", #kernel.plot.drm_mm(whole) > 0)
            """)
        let r = try mmlab(["run", "--out", dir, script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("true\ttrue\n"))
        #expect(r.stdout.contains("EINVAL: plot: series 'a' has 2 values, x has 3"))
        #expect(r.stdout.contains("no recorded column 'nope'"))
        #expect(r.stdout.contains("EINVAL: plot.memory: size 0 from 0x100000"))
        #expect(r.stdout.contains("whole\ttrue"), "a drm_mm over the whole 64-bit space draws")
        func check(_ name: String) throws -> SvgCheck {
            let text = try String(contentsOfFile: dir + "/" + name, encoding: .utf8)
            guard let check = SvgCheck.parse(text) else {
                Issue.record("\(name) is not well-formed")
                return SvgCheck()
            }
            return check
        }
        let drm = try check("drm.svg")
        #expect(drm.texts.contains("a busy drm_mm"))
        #expect(drm.texts.contains { $0.hasPrefix("50000 nodes, 50001 holes, 195.31 MiB used of 1 GiB") }, "the stats line")
        #expect(drm.texts.contains("color 4") && drm.texts.contains("hole"), "the legend")
        #expect((drm.elements["rect"] ?? 0) > 100)
        let memory = try check("memory.svg")
        #expect(memory.texts.contains("Physical memory") && memory.texts.contains("free"))
        #expect(memory.texts.contains { $0.hasPrefix("256 MiB of RAM") })
        let binder = try check("binder.svg")
        #expect(binder.texts.contains { $0.hasPrefix("64 pages: 3 active, 1 on the LRU, 60 not allocated") })
        let line = try check("line.svg")
        #expect(line.texts.contains("sine") && line.texts.contains("v"))
        #expect((line.elements["polyline"] ?? 0) > 100, "NaN leaves gaps: one polyline per run")
        // Without an output folder (mmlab examples and mmlab test), nothing is written.
        let quiet = try temporaryFile("print(select(2, kernel.plot.memory{file = 'm.svg'}))")
        let none = try mmlab(["test", quiet])
        #expect(none.stdout.contains("nil\n"))
    }

    @Test("every example records its figures and draws at least one picture, the same bytes twice")
    func examples() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: repositoryRoot + "/examples")
            .filter { $0.hasSuffix(".lua") }.sorted()
        #expect(names.count >= 6)
        for name in names {
            let dir = try folder(), again = try folder()
            defer { for d in [dir, again] { try? FileManager.default.removeItem(atPath: d) } }
            let r = try mmlab(["examples", "--out", dir, "--results", dir + "/results.csv", String(name.dropLast(4))])
            #expect(r.status == 0, "\(name): \(r.stderr)")
            // The determinism gate: the same seed writes the same files.
            let second = try mmlab(["examples", "--out", again, "--results", again + "/results.csv", String(name.dropLast(4))])
            #expect(second.stdout == r.stdout, "\(name) prints the same bytes twice")
            let files = try FileManager.default.contentsOfDirectory(atPath: dir)
            #expect(files.sorted() == (try FileManager.default.contentsOfDirectory(atPath: again)).sorted())
            for file in files {
                #expect(FileManager.default.contents(atPath: dir + "/" + file) == FileManager.default.contents(atPath: again + "/" + file),
                        "\(name): \(file) is the same twice")
            }
            let pictures = files.filter { $0.hasSuffix(".svg") }
            #expect(!pictures.isEmpty, "\(name) drew no picture")
            for picture in pictures {
                let text = try String(contentsOfFile: dir + "/" + picture, encoding: .utf8)
                #expect(SvgCheck.parse(text) != nil, "\(name): \(picture) is well-formed")
            }
            let csv = try String(contentsOfFile: dir + "/results.csv", encoding: .utf8)
            #expect(csv.split(separator: "\n").count >= 3, "\(name) recorded its figures")
            let source = try String(contentsOfFile: repositoryRoot + "/examples/" + name, encoding: .utf8)
            #expect(source.contains("-- What it shows:") && source.contains("-- What to look at:") && source.contains("-- Writes:"),
                    "\(name) says what it shows, what to look at and what it writes")
        }
    }

    @Test("a trace of percpu_counter: valid trace-event JSON, one track per CPU, balanced slices, the same twice")
    func trace() throws {
        let dir = try folder()
        let path = dir + "/t.json"
        let r = try mmlab(["--cpus", "3", "--trace", path, "--out", dir, "examples/percpu_counter.lua", "4", "50"])
        #expect(r.status == 0, "\(r.stderr)")
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        let events = object?["traceEvents"] as? [[String: Any]] ?? []
        let threads = events.filter { $0["name"] as? String == "thread_name" && $0["pid"] as? Int == 1 }
        #expect(threads.compactMap { ($0["args"] as? [String: Any])?["name"] as? String }.sorted() == ["CPU 0", "CPU 1", "CPU 2"])
        var depth: [String: Int] = [:], last: [String: Int] = [:]
        for e in events where e["ph"] as? String != "M" {
            let track = "\(e["pid"] ?? "")/\(e["tid"] ?? "")"
            let ts = e["ts"] as? Int ?? -1
            #expect(ts >= (last[track] ?? 0), "time moves forward on each track")
            last[track] = ts
            switch e["ph"] as? String {
            case "B": depth[track, default: 0] += 1
            case "E": depth[track, default: 0] -= 1; #expect(depth[track]! >= 0)
            default: break
            }
        }
        #expect(depth.values.allSatisfy { $0 == 0 }, "every slice ends")
        let names = Set(events.compactMap { $0["name"] as? String })
        #expect(names.contains("preempt"))
        #expect(names.contains { $0.hasPrefix("hold SpinLock{counter}") })
        #expect(names.contains("free pages"))
        let capped = try mmlab(["--trace", dir + "/c.json", "--out", dir, "examples/percpu_counter.lua", "4", "50"],
                               environment: ["MMLAB_TRACE_LIMIT": "100"])
        #expect(capped.status == 0)
        #expect(capped.stderr.contains("c.json holds the first events of the run;"), "a truncated trace says so")
        let cappedEvents = (try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/c.json"))) as? [String: Any])?["traceEvents"] as? [[String: Any]]
        #expect(cappedEvents?.contains { ($0["name"] as? String)?.hasPrefix("trace truncated") == true } == true)
        let again = try mmlab(["--cpus", "3", "--trace", dir + "/u.json", "--out", dir, "examples/percpu_counter.lua", "4", "50"])
        #expect(again.status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/u.json")) == data, "the same seed, the same trace")
    }

    @Test("kernel.trace.printk, begin and finish mark the running task's track; --trace-accesses adds per-CPU and page accesses")
    func annotations() throws {
        let dir = try folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = try temporaryFile("""
            local v = kernel.percpu.alloc("u64", 0)
            local t = kernel.sched.spawn(function()
              kernel.trace.begin("count")
              kernel.trace.printk("starting at %d", v:this_cpu_read())
              v:this_cpu_inc()
              kernel.trace.finish()
            end, {name = "worker", cpu = 1})
            kernel.sched.run()
            local p <close> = kernel.page.Page.alloc_page()
            p:write_u8(3, 9)
            print(pcall(kernel.trace.finish))
            """)
        let name = URL(fileURLWithPath: script).lastPathComponent
        let r = try mmlab(["--trace", dir + "/t.json", "--trace-accesses", script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "false\tEINVAL: kernel.trace.finish() in task 'main' without a kernel.trace.begin\n")
        let data = try #require(FileManager.default.contents(atPath: dir + "/t.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let events = try #require(json["traceEvents"] as? [[String: Any]])
        let marks = events.filter { ["span", "printk", "access"].contains($0["cat"] as? String ?? "") }
        let summary = marks.map { e -> String in
            let args = (e["args"] as? [String: Any]) ?? [:]
            return "\(e["ph"] ?? "") \(e["name"] ?? "") " + args.keys.sorted().map { "\($0)=\(args[$0] ?? "")" }.joined(separator: " ")
        }
        #expect(summary == [
            "B count ",
            "i percpu read DynamicPerCpu{u64} at=\(script):4 cpu=1 of_cpu=1 value=0",
            "i starting at 0 at=\(script):4",
            "i percpu add DynamicPerCpu{u64} at=\(script):5 cpu=1 delta=1 of_cpu=1 value=1",
            "E count ",
            "i page write at=\(script):10 bytes=1 cpu=0 offset=3 pfn=1024",
        ], "\(name)")
        let worker = marks.compactMap { $0["tid"] as? Int }
        #expect(Set(worker.prefix(5)).count == 1, "the worker's marks are on its track")
        let plain = try mmlab(["--trace", dir + "/u.json", script])
        let quiet = try String(contentsOfFile: dir + "/u.json", encoding: .utf8)
        #expect(plain.status == 0 && !quiet.contains("\"access\"") && quiet.contains("\"printk\""), "accesses only when asked")
        let alone = try mmlab(["--trace-accesses", script])
        #expect(alone.status == 2)
        #expect(alone.stderr.hasPrefix("\(mmlabPath): --trace-accesses adds events to a trace: give --trace FILE too\n"))
    }
}

