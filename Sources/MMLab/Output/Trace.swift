#if canImport(Glibc)
import Glibc
#endif
import MMCore

/// The trace a `--trace FILE` run writes: Chrome trace-event JSON that
/// Perfetto and chrome://tracing open. Process 1 holds one track per CPU
/// (the tasks that ran on it), process 2 one track per task (its lock waits
/// and holds, migrations), process 3 the machine (page allocator counters,
/// reclaim and shrinker events). One microsecond is one tick of the
/// engine's clock (a binding call, or 200 Lua instructions).
extension Runtime {
    /// Starts recording, if the configuration asks for a trace.
    func startTraceIfAsked(_ machine: Machine) {
        guard configuration.tracePath != nil else { return }
        let state = self.state
        // $MMLAB_TRACE_LIMIT caps the events kept (2 million by default).
        let limit = getenv("MMLAB_TRACE_LIMIT").flatMap { Int(String(cString: $0)) } ?? 2_000_000
        _ = machine.startTrace(limit: max(0, limit)) { state.pointee.clock }
        state.pointee.tracing = 1  // the clock needs the count hook
        state.pointee.hooks_dirty = 1
    }

    /// Samples the page allocator's counters (between task slices).
    func sampleTrace() {
        guard let machine = booted, let trace = machine.trace else { return }
        let allocator = machine.pageAllocator
        trace.counter("free pages", Int(allocator.freePages) + allocator.pcpPages)
    }

    func writeTrace(to file: OutputFile) {
        file.write("{\"displayTimeUnit\": \"ns\", \"traceEvents\": [\n")
        func meta(_ pid: Int, _ tid: Int?, _ name: String, _ value: String, sort: Int? = nil) {
            let tidPart = tid.map { ", \"tid\": \($0)" } ?? ""
            file.write("{\"ph\": \"M\", \"pid\": \(pid)\(tidPart), \"name\": \"\(name)\", \"args\": {\"name\": \(jsonString(value))}},\n")
            if let sort {
                file.write("{\"ph\": \"M\", \"pid\": \(pid)\(tidPart), \"name\": \"\(name == "process_name" ? "process_sort_index" : "thread_sort_index")\", \"args\": {\"sort_index\": \(sort)}},\n")
            }
        }
        guard let machine = booted, let trace = machine.trace else {
            file.write("{\"ph\": \"M\", \"pid\": 1, \"name\": \"process_name\", \"args\": {\"name\": \"no machine booted\"}}\n]}\n")
            return
        }
        trace.close()
        meta(1, nil, "process_name", "CPUs", sort: 1)
        for cpu in 0..<trace.cpus { meta(1, cpu, "thread_name", "CPU \(cpu)", sort: cpu) }
        meta(2, nil, "process_name", "tasks", sort: 2)
        for (id, name) in trace.tasks.sorted(by: { $0.key < $1.key }) { meta(2, id, "thread_name", "\(name) (\(id))", sort: id) }
        meta(3, nil, "process_name", "memory", sort: 3)
        meta(3, 0, "thread_name", "machine")
        var first = true
        for event in trace.events {
            let (pid, tid): (Int, Int) = switch event.track {
            case .cpu(let c): (1, c)
            case .task(let t): (2, t)
            case .machine: (3, 0)
            }
            var line = "{\"ph\": \"\(event.phase.rawValue)\", \"name\": \(jsonString(event.name)), \"cat\": \"\(event.category)\", \"ts\": \(event.time), \"pid\": \(pid), \"tid\": \(tid)"
            if event.phase == .asyncBegin || event.phase == .asyncEnd { line += ", \"id\": \(event.id)" }
            if event.phase == .instant { line += ", \"s\": \"t\"" }
            if !event.args.isEmpty {
                line += ", \"args\": {" + event.args.map { jsonString($0.key) + ": " + $0.json }.joined(separator: ", ") + "}"
            }
            file.write((first ? "" : ",\n") + line + "}")
            first = false
        }
        if trace.dropped > 0 {
            file.write((first ? "" : ",\n") + "{\"ph\": \"i\", \"name\": \"trace truncated: \(trace.dropped) events dropped\", \"ts\": \(trace.now()), \"pid\": 3, \"tid\": 0, \"s\": \"g\"}")
        }
        file.write("\n]}\n")
    }
}
