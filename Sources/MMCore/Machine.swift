/// The simulated machine: its configuration, physical memory, page
/// allocator and accounting. One per engine; everything it does is
/// determined by its configuration and seed.
public final class Machine {
    public let config: MachineConfig
    public let sites: SiteTable
    public let accounting = Accounting()
    public let memory: PhysicalMemory
    public let pageAllocator: PageAllocator

    /// Boots a machine. `sites` names script positions for its reports;
    /// an engine passes its own.
    public init(_ config: MachineConfig, sites: SiteTable = SiteTable()) throws(KernelError) {
        try config.validate()
        self.config = config
        self.sites = sites
        memory = try PhysicalMemory(regions: config.regions)
        pageAllocator = PageAllocator(memory: memory)
    }
}

/// How a machine is built (`kernel.boot{...}`, the CLI's `--memory`,
/// `--cpus`, `--seed`).
public struct MachineConfig: Equatable, Sendable {
    /// Bytes of RAM, in one region at `ramStart`.
    public var memory: UInt64
    public var cpus: Int
    public var seed: UInt64

    /// Where the default RAM region starts, as on a PC above the BIOS area.
    public static let ramStart = PhysAddr(0x100000)
    /// The largest machine mmlab boots: 1 TiB of physical address space.
    public static let maxMemory: UInt64 = 1 << 40
    /// `NR_CPUS`.
    public static let maxCpus = 64

    public init(memory: UInt64 = 256 << 20, cpus: Int = 4, seed: UInt64 = 0) {
        self.memory = memory
        self.cpus = cpus
        self.seed = seed
    }

    /// The physical memory map this configuration describes.
    public var regions: [MemoryRegion] {
        [MemoryRegion(start: MachineConfig.ramStart, size: memory, kind: .ram)]
    }

    func validate() throws(KernelError) {
        guard memory >= UInt64(PAGE_SIZE), memory <= MachineConfig.maxMemory else {
            throw KernelError(.EINVAL, "memory must be between 4K and 1T, got \(memory) bytes")
        }
        guard (1...MachineConfig.maxCpus).contains(cpus) else {
            throw KernelError(.EINVAL, "cpus must be between 1 and \(MachineConfig.maxCpus), got \(cpus)")
        }
    }

    /// Parses a size: bytes, or a number with a K, M or G suffix (`"256M"`).
    /// `nil` when it is not one.
    public static func parseSize(_ text: String) -> UInt64? {
        var digits = Substring(text)
        var shift: UInt64 = 0
        switch digits.last {
        case "K", "k": shift = 10
        case "M", "m": shift = 20
        case "G", "g": shift = 30
        case "T", "t": shift = 40
        default: break
        }
        if shift != 0 { digits = digits.dropLast() }
        guard let value = UInt64(digits) else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : bytes
    }
}
