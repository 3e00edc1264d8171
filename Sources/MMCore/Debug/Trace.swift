/// A timeline of what the machine did, as the kernel's tracepoints record
/// it (sched_switch, lock contention, mm_page_alloc, shrinker): which task
/// ran on each CPU, preemptions and migrations, lock waits and holds, page
/// allocator and shrinker events. Time is the engine's deterministic clock,
/// so the same run gives the same trace. The engine writes it as Chrome
/// trace-event JSON, which Perfetto opens.
public final class TraceLog {
    /// Where an event shows: a CPU's track, a task's track, or the machine's.
    public enum Track: Hashable, Sendable {
        case cpu(Int)
        case task(Int)
        case machine
    }

    public enum Phase: String, Sendable {
        case begin = "B", end = "E", instant = "i", counter = "C"
        case asyncBegin = "b", asyncEnd = "e"
    }

    /// An argument value, already in JSON form.
    public struct Argument: Sendable {
        public let key: String
        public let json: String
        public init(_ key: String, _ value: Int) { self.key = key; json = String(value) }
        public init(_ key: String, _ value: String) {
            self.key = key
            var escaped = "\""
            for c in value.unicodeScalars {
                switch c {
                case "\"": escaped += "\\\""
                case "\\": escaped += "\\\\"
                case _ where c.value < 0x20: escaped += " "
                default: escaped.unicodeScalars.append(c)
                }
            }
            json = escaped + "\""
        }
    }

    public struct Event: Sendable {
        public let phase: Phase
        public let name: String
        public let category: String
        public let time: UInt64
        public let track: Track
        /// Pairs an async begin with its end.
        public let id: Int
        public let args: [Argument]
    }

    /// The clock events are stamped with.
    public var now: () -> UInt64
    public private(set) var events: [Event] = []
    /// The most events kept; later ones are counted in `dropped`.
    public let limit: Int
    public private(set) var dropped = 0
    /// Every task seen, by id, with its name.
    public private(set) var tasks: [Int: String] = [:]
    public let cpus: Int
    private var onCpu: [Task?]
    private var lastCounter: [String: Int] = [:]

    public init(cpus: Int, limit: Int = 2_000_000, now: @escaping () -> UInt64) {
        self.cpus = cpus
        self.limit = limit
        self.now = now
        onCpu = Array(repeating: nil, count: cpus)
    }

    public func emit(_ phase: Phase, _ name: String, category: String, track: Track, id: Int = 0,
                     args: [Argument] = []) {
        guard events.count < limit else {
            dropped += 1
            return
        }
        events.append(Event(phase: phase, name: name, category: category, time: now(), track: track, id: id, args: args))
    }

    func name(_ task: Task) { tasks[task.id] = task.name }

    /// `sched_switch`: `task` (or nobody) now runs on `cpu`.
    func cpu(_ cpu: Int, runs task: Task?) {
        guard cpu < onCpu.count, onCpu[cpu] !== task else { return }
        if let old = onCpu[cpu] { emit(.end, old.name, category: "sched", track: .cpu(cpu)) }
        onCpu[cpu] = task
        if let task {
            name(task)
            emit(.begin, task.name, category: "sched", track: .cpu(cpu), args: [Argument("task", task.id)])
        }
    }

    /// The slices still open (the tasks on CPUs), ended now.
    public func close() {
        for c in onCpu.indices { cpu(c, runs: nil) }
    }

    /// A lock wait or hold of `task`, begun or ended.
    func lock(_ what: String, _ lock: Lock, _ task: Task, begin: Bool) {
        name(task)
        emit(begin ? .asyncBegin : .asyncEnd, "\(what) \(lock)", category: "lock", track: .task(task.id),
             id: lock.id << 20 | task.id)
    }

    /// A counter's new value, when it changed.
    public func counter(_ name: String, _ value: Int) {
        guard lastCounter[name] != value else { return }
        lastCounter[name] = value
        emit(.counter, name, category: "memory", track: .machine, args: [Argument("value", value)])
    }
}

extension Machine {
    /// Starts recording a trace, stamped by `now`.
    public func startTrace(limit: Int = 2_000_000, now: @escaping () -> UInt64) -> TraceLog {
        let log = TraceLog(cpus: config.cpus, limit: limit, now: now)
        trace = log
        scheduler.trace = log
        pageAllocator.trace = log
        for task in scheduler.tasks { log.name(task) }
        return log
    }
}
