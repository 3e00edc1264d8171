/// The type of a per-CPU variable: a fixed-width integer, or `value` (any
/// script value, interior mutable, kept by the engine).
public enum PerCpuType: String, CaseIterable, Sendable {
    case i8, i16, i32, i64, u8, u16, u32, u64, isize, usize, value

    public var isNumeric: Bool { self != .value }

    var bits: Int {
        switch self {
        case .i8, .u8: 8
        case .i16, .u16: 16
        case .i32, .u32: 32
        default: 64
        }
    }

    var isSigned: Bool { [.i8, .i16, .i32, .i64, .isize].contains(self) }

    /// Whether `v` is a value of this type: Rust's integer types hold
    /// nothing else. 64-bit unsigned values are given in two's complement,
    /// so every integer is a `u64`.
    public func holds(_ v: Int64) -> Bool {
        guard bits < 64 else { return true }
        return isSigned ? v >= -(1 << (bits - 1)) && v < 1 << (bits - 1) : v >= 0 && v < 1 << bits
    }

    /// `0 to 255`: the values `holds` accepts, for messages.
    public var valueRange: String {
        guard bits < 64 else { return isSigned ? "any integer" : "any integer (two's complement)" }
        return isSigned ? "\(-(Int64(1) << (bits - 1))) to \((Int64(1) << (bits - 1)) - 1)" : "0 to \((Int64(1) << bits) - 1)"
    }

    /// `v` wrapped to this type, as the kernel's arithmetic does: signed
    /// types sign-extend, unsigned ones below 64 bits zero-extend, and 64-bit
    /// unsigned values stay in two's complement.
    public func wrap(_ v: Int64) -> Int64 {
        guard bits < 64 else { return v }
        let shift = Int64(64 - bits)
        return isSigned ? (v << shift) >> shift : Int64(bitPattern: UInt64(bitPattern: v) & ((1 << UInt64(bits)) - 1))
    }
}

/// The memory behind a per-CPU variable (`alloc_percpu`, or a static
/// `DEFINE_PER_CPU`): one slot per CPU. Numeric slots live here; `value`
/// slots are kept by the engine. Also tracks live `PerCpuToken`s per CPU.
///
/// A numeric variable is a `PerCpu<T>`: a token is `&mut T`, exclusive. A
/// `value` variable is a `CheckedPerCpu<T>`, interior mutable (its `T`
/// is a cell): its tokens are shared references and may coexist.
///
/// # Invariants
///
/// `slots[cpu]` is wrapped to `type`. For a numeric type, at most one
/// token per CPU is live.
public final class PerCpuArea: NativeObject {
    public let type: PerCpuType
    public let name: String?
    var slots: [Int64]
    /// Live tokens, by CPU.
    var tokens: [Int]
    /// Handles sharing the area; at zero a dynamic area is freed.
    var references = 0
    public internal(set) var isFreed = false

    init(type: PerCpuType, name: String?, cpus: Int, site: Site) {
        self.type = type
        self.name = name
        slots = Array(repeating: 0, count: cpus)
        tokens = Array(repeating: 0, count: cpus)
        super.init(site: site)
    }

    override public var typeName: String { "DynamicPerCpu" }
    override public var description: String { name.map { "StaticPerCpu{\($0): \(type.rawValue)}" } ?? "DynamicPerCpu{\(type.rawValue)}" }
    public var cpus: Int { slots.count }

    func check(_ cpu: Int) throws(KernelError) {
        guard (0..<slots.count).contains(cpu) else {
            throw KernelError(.EINVAL, "cpu \(cpu) is not one of the machine's \(slots.count) CPUs")
        }
    }

    public func checkNumeric(_ what: String) throws(KernelError) {
        guard type.isNumeric else {
            throw KernelError(.EINVAL, "\(what) on \(self): numeric operations need an integer type")
        }
    }

    /// `per_cpu(var, cpu)`.
    public func read(_ cpu: Int) throws(KernelError) -> Int64 {
        try check(cpu)
        return slots[cpu]
    }

    /// `per_cpu(var, cpu) = v`, wrapped to the type.
    public func write(_ cpu: Int, _ v: Int64) throws(KernelError) {
        try check(cpu)
        slots[cpu] = type.wrap(v)
    }

    /// `this_cpu_add_return`: adds (wrapping) and returns the new value.
    public func add(_ cpu: Int, _ delta: Int64) throws(KernelError) -> Int64 {
        try checkNumeric("this_cpu_add")
        try check(cpu)
        slots[cpu] = type.wrap(slots[cpu] &+ delta)
        return slots[cpu]
    }

    /// `this_cpu_xchg`: stores `v`, returns the old value.
    public func exchange(_ cpu: Int, _ v: Int64) throws(KernelError) -> Int64 {
        try checkNumeric("this_cpu_xchg")
        let old = try read(cpu)
        slots[cpu] = type.wrap(v)
        return old
    }

    /// `this_cpu_cmpxchg`: stores `new` if the slot holds `old` (both
    /// wrapped to the type); returns what the slot held.
    public func compareExchange(_ cpu: Int, old: Int64, new: Int64) throws(KernelError) -> Int64 {
        try checkNumeric("this_cpu_cmpxchg")
        let current = try read(cpu)
        if current == type.wrap(old) { slots[cpu] = type.wrap(new) }
        return current
    }

    /// The sum over every CPU, in 64 bits.
    public func sum() throws(KernelError) -> Int64 {
        try checkNumeric("sum")
        return slots.reduce(0, &+)
    }

    /// Every CPU's value, by CPU.
    public var values: [Int64] { slots }

    // MARK: Tokens

    /// `get_mut`: access to this CPU's slot, owning `guard`. For a numeric
    /// variable a second live token on the same CPU is a bug (two `&mut T`
    /// to one place); a `value` variable's tokens may coexist.
    public func token(_ guard_: CpuGuard, site: Site) throws(KernelError) -> PerCpuToken {
        guard !guard_.isReleased else { throw .bug("get_mut with \(guard_), which was released") }
        let cpu = guard_.cpu
        guard !type.isNumeric || tokens[cpu] == 0 else {
            throw .bug("aliasing: a second PerCpuToken for \(self) on CPU \(cpu) while the first is live")
        }
        tokens[cpu] += 1
        return PerCpuToken(area: self, guard: guard_, site: site)
    }
}

/// Exclusive access to one CPU's slot of a per-CPU variable while its
/// CpuGuard keeps the task there (`PerCpuToken`).
public final class PerCpuToken: Guard {
    public let area: PerCpuArea
    public let cpuGuard: CpuGuard

    init(area: PerCpuArea, guard: CpuGuard, site: Site) {
        self.area = area
        cpuGuard = `guard`
        super.init(task: `guard`.task, site: site)
    }

    public var cpu: Int { cpuGuard.cpu }
    override public var typeName: String { "PerCpuToken" }
    override public var description: String { "PerCpuToken{\(area), cpu=\(cpu)}" }

    func checkLive() throws(KernelError) {
        if isReleased { throw .bug("use of \(self) after it was dropped") }
    }

    public func get() throws(KernelError) -> Int64 {
        try checkLive()
        return try area.read(cpu)
    }

    public func set(_ v: Int64) throws(KernelError) {
        try checkLive()
        try area.write(cpu, v)
    }

    override func markReleased() {
        super.markReleased()
        area.tokens[cpu] -= 1
    }

    override public var takenWith: String { "var:get_mut(cpu_guard)" }
}

/// The machine's per-CPU variables: statics by name, dynamic ones by handle.
public final class PerCpuVariables {
    // The machine owns it.
    private unowned let machine: Machine
    private var statics: [String: PerCpuArea] = [:]

    init(machine: Machine) { self.machine = machine }

    /// `DEFINE_PER_CPU(type, name)`: EEXIST if the name is taken.
    public func define(_ name: String, _ type: PerCpuType, initial: Int64, site: Site) throws(KernelError) -> PerCpuArea {
        guard statics[name] == nil else {
            throw KernelError(.EEXIST, "a per-CPU variable named '\(name)' is defined already")
        }
        let area = PerCpuArea(type: type, name: name, cpus: machine.config.cpus, site: site)
        for cpu in 0..<area.cpus { area.slots[cpu] = type.wrap(initial) }
        statics[name] = area
        return area
    }

    /// The static variable `name`, if defined.
    public func get(_ name: String) -> PerCpuArea? { statics[name] }

    /// `alloc_percpu`: every CPU's slot starts at `initial(cpu)`.
    public func alloc(_ type: PerCpuType, site: Site, initial: (Int) throws -> Int64) rethrows -> PerCpuArea {
        let area = PerCpuArea(type: type, name: nil, cpus: machine.config.cpus, site: site)
        for cpu in 0..<area.cpus { area.slots[cpu] = type.wrap(try initial(cpu)) }
        machine.accounting.track(area)
        return area
    }

    /// Another handle shares a dynamic area.
    public func retain(_ area: PerCpuArea) { area.references += 1 }

    /// A handle lets go; the last one frees a dynamic area (`free_percpu`).
    public func release(_ area: PerCpuArea) {
        area.references -= 1
        if area.references == 0, area.name == nil, !area.isFreed {
            area.isFreed = true
            machine.accounting.untrack(area)
        }
    }

    /// `get_mut`: a token for this CPU's slot of `area`, owning `guard`.
    public func token(_ area: PerCpuArea, _ guard_: CpuGuard, site: Site) throws(KernelError) -> PerCpuToken {
        let token = try area.token(guard_, site: site)
        machine.accounting.track(token)
        return token
    }

    /// Drops a token, and the CpuGuard it owns.
    public func release(_ token: PerCpuToken, byCollector: Bool = false) throws(KernelError) {
        guard !token.isReleased else { return }
        try machine.scheduler.release(token.cpuGuard, byCollector: byCollector)
        token.markReleased()
        machine.accounting.untrack(token)
    }
}
