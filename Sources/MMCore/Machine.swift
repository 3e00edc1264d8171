/// The simulated machine: its configuration, physical memory, page
/// allocator and accounting. One per engine; everything it does is
/// determined by its configuration and seed.
public final class Machine {
    public let config: MachineConfig
    public let sites: SiteTable
    public let accounting = Accounting()
    /// The same without a retain, for the paths that create and drop pages
    /// (Unretained.swift): the machine holds them for its life.
    struct Unretained {
        let pageAllocator: Unmanaged<PageAllocator>
        let accounting: Unmanaged<Accounting>
        let scheduler: Unmanaged<Scheduler>
    }
    let unretained: Unretained
    public let memory: PhysicalMemory
    public let pageAllocator: PageAllocator
    /// The CPUs and the tasks on them.
    public let scheduler: Scheduler
    /// Per-CPU variables.
    public private(set) lazy var percpu = PerCpuVariables(machine: self)
    /// Pages whose owners gave them away with `into_phys`, by frame.
    var givenAway: [Pfn: Page] = [:]
    /// The last mm id handed out.
    var mmIds = 0
    /// The last driver file number handed out.
    var files = 0
    /// The last anon_vma id handed out.
    var anonVmas = 0
    /// Invariants the model found broken where it could not throw (a free
    /// of what it holds itself that failed): `checkConsistency` reports them.
    public private(set) var brokenInvariants: [String] = []
    /// The trace being recorded, if any (`startTrace`).
    public internal(set) var trace: TraceLog?
    /// Binder's shrinker and LRU, registered with the page allocator on first use.
    public private(set) lazy var binderLru = BinderLru(machine: self)

    /// The kmap_local stack of the running task. Read on every page access:
    /// kept here as tasks switch, without a dynamic exclusivity check.
    @exclusivity(unchecked) public private(set) var kmap: KmapLocal

    /// Boots a machine. `sites` names script positions for its reports;
    /// an engine passes its own.
    public init(_ config: MachineConfig, sites: SiteTable = SiteTable()) throws(KernelError) {
        try config.validate()
        self.config = config
        self.sites = sites
        memory = try PhysicalMemory(regions: config.regions)
        pageAllocator = try PageAllocator(memory: memory, config: config, sites: sites)
        scheduler = Scheduler(cpus: config.cpus, seed: config.seed, sites: sites, accounting: accounting)
        unretained = Unretained(pageAllocator: .passUnretained(pageAllocator), accounting: .passUnretained(accounting),
                                scheduler: .passUnretained(scheduler))
        kmap = scheduler.current.kmap
        // Unowned, not weak: a weak reference gives the machine a side
        // table, and every retain of it (each new page holds one) then
        // takes the runtime's slow path. deinit clears the callback.
        scheduler.onSwitch = { [unowned self] task in
            self.pageAllocator.currentCpu = task.cpu
            self.kmap = task.kmap
        }
        pageAllocator.onBrokenInvariant = { [unowned self] in self.reportBrokenInvariant($0) }
        scheduler.onBrokenInvariant = { [unowned self] in self.reportBrokenInvariant($0) }
        pageAllocator.currentTask = { [unowned self] in self.scheduler.current.id }
        pageAllocator.wakeUp = { [unowned self] in self.scheduler.wakeUp($0) }
        pageAllocator.outOfMemory = { [unowned self] in self.outOfMemory($0, order: $1) }
        pageAllocator.currentIsOomVictim = { [unowned self] in self.scheduler.current.oomKilled }
    }

    deinit {
        scheduler.onSwitch = nil
        pageAllocator.onBrokenInvariant = nil
        scheduler.onBrokenInvariant = nil
        pageAllocator.currentTask = nil
        pageAllocator.wakeUp = nil
        pageAllocator.outOfMemory = nil
        pageAllocator.currentIsOomVictim = nil
        pageAllocator.kswapd.task = nil
    }
}

extension Machine {
    /// The model's invariants: the page allocator's free lists and counts,
    /// and every live drm_mm's hole and node indexes. A violation is a bug.
    public func checkConsistency() throws(KernelError) {
        if let first = brokenInvariants.first {
            throw .bug("the model broke its own invariants: \(first)" + (brokenInvariants.count > 1 ? " (and \(brokenInvariants.count - 1) more)" : ""))
        }
        guard memory.zeroPageIsClean else { throw .bug("the shared zero page (pfn \(ZERO_PAGE_PFN)) was written: it must read as zeros") }
        try pageAllocator.checkConsistency()
        for case let mm as DrmMm in accounting.live where !mm.validate() {
            throw .bug("\(mm): its holes, nodes and trees disagree")
        }
    }
}

extension Machine {
    /// A new anon_vma (`anon_vma_alloc`), by id.
    func newAnonVma() -> Int {
        anonVmas += 1
        return anonVmas
    }

    /// Records an invariant the model broke where it could not throw.
    func reportBrokenInvariant(_ what: String) {
        brokenInvariants.append(what)
        trace?.emit(.instant, "broken invariant", category: "debug", track: .machine, args: [.init("what", what)])
    }
}

/// How a machine is built (`kernel.boot{...}`, the CLI's `--memory`,
/// `--cpus`, `--seed`).
public struct MachineConfig: Equatable, Sendable {
    /// Bytes of RAM. Without a `memmap`, one RAM region of this size at
    /// `ramStart`; with one, the RAM it lists.
    public var memory: UInt64
    public var cpus: Int
    public var seed: UInt64
    /// The physical memory map (`memmap=`), or nil for the default.
    public var memmap: [MemoryRegion]?
    /// Bytes at the top of RAM in the HighMem zone (`highmem=`): no
    /// permanent kernel mapping, reached through kmap.
    public var highmem: UInt64
    /// Zero pages on allocation (`init_on_alloc=1`).
    public var initOnAlloc: Bool
    /// Zero pages on free instead of poisoning them (`init_on_free=1`).
    public var initOnFree: Bool
    /// Poison freed pages with `PAGE_POISON` (0xaa, `page_poison=1`) and
    /// check the poison when they are allocated again. On by default, so
    /// reading memory nobody initialized shows and writes to freed memory
    /// are caught; off, a free costs no memset, as on a kernel built
    /// without CONFIG_PAGE_POISONING.
    public var pagePoison: Bool
    /// `vm.max_map_count`: the most VMAs an mm may have.
    public var maxMapCount: Int
    /// `vm.min_free_kbytes`; nil: as `calculate_min_free_kbytes` computes it.
    public var minFreeKbytes: UInt64?
    /// `vm.watermark_scale_factor`, in ten-thousandths of a zone (1 ... 3000).
    public var watermarkScaleFactor: UInt64 = 10
    /// `vm.lowmem_reserve_ratio` for Normal and HighMem (the kernel's 32 and 0).
    public var lowmemReserveRatio: [UInt64] = [32, 0]

    /// Where the default RAM region starts, as on a PC above the BIOS area.
    public static let ramStart = PhysAddr(0x100000)
    /// The most RAM mmlab boots: 1 TiB.
    public static let maxMemory: UInt64 = 1 << 40
    /// `NR_CPUS`.
    public static let maxCpus = 64

    public init(memory: UInt64 = 256 << 20, cpus: Int = 4, seed: UInt64 = 0, memmap: [MemoryRegion]? = nil,
                highmem: UInt64 = 0, initOnAlloc: Bool = false, initOnFree: Bool = false, pagePoison: Bool = true,
                maxMapCount: Int = 65530) {
        self.memory = memmap.map(MachineConfig.ram) ?? memory
        self.cpus = cpus
        self.seed = seed
        self.memmap = memmap
        self.highmem = highmem
        self.initOnAlloc = initOnAlloc
        self.initOnFree = initOnFree
        self.pagePoison = pagePoison
        self.maxMapCount = maxMapCount
    }

    /// RAM bytes in a memory map.
    public static func ram(_ regions: [MemoryRegion]) -> UInt64 {
        regions.filter { $0.kind == .ram }.reduce(0) { $0 &+ $1.size }
    }

    /// The physical memory map, sorted by address.
    public var regions: [MemoryRegion] {
        (memmap ?? [MemoryRegion(start: MachineConfig.ramStart, size: memory, kind: .ram)])
            .sorted { $0.start < $1.start }
    }

    func validate() throws(KernelError) {
        guard (1...MachineConfig.maxCpus).contains(cpus) else {
            throw KernelError(.EINVAL, "cpus must be between 1 and \(MachineConfig.maxCpus), got \(cpus)")
        }
        var end = PhysAddr(0)
        for region in regions {
            guard region.size > 0, region.start.isPageAligned, region.size & UInt64(PAGE_SIZE - 1) == 0 else {
                throw KernelError(.EINVAL, "memmap: region at \(region.start) of \(region.size) bytes is not page aligned or empty")
            }
            guard region.start.rawValue <= maxPhysAddr, region.size <= maxPhysAddr - region.start.rawValue else {
                throw KernelError(.EINVAL, "memmap: region at \(region.start) of \(region.size) bytes ends past the 1 TiB physical address space")
            }
            guard region.end <= ZERO_PAGE_PFN.phys else {
                throw KernelError(.EINVAL, "memmap: region at \(region.start) of \(region.size) bytes covers the last frame below 1 TiB, where the zero page is")
            }
            guard region.start >= end else {
                throw KernelError(.EINVAL, "memmap: region at \(region.start) overlaps the one before it")
            }
            end = region.end
        }
        let ram = MachineConfig.ram(regions)
        guard ram >= UInt64(PAGE_SIZE), ram <= MachineConfig.maxMemory else {
            throw KernelError(.EINVAL, "memory must be between 4K and 1T of RAM, got \(ram) bytes")
        }
        guard memory == ram else {
            throw KernelError(.EINVAL, "memory (\(memory) bytes) does not match the RAM in memmap (\(ram) bytes)")
        }
        guard (1...3000).contains(watermarkScaleFactor) else {
            throw KernelError(.EINVAL, "watermark_scale_factor must be between 1 and 3000, got \(watermarkScaleFactor)")
        }
        guard maxMapCount >= 1 else {
            throw KernelError(.EINVAL, "max_map_count must be at least 1, got \(maxMapCount)")
        }
        guard highmem & UInt64(PAGE_SIZE - 1) == 0, highmem < ram else {
            throw KernelError(.EINVAL, "highmem must be page aligned and smaller than RAM (\(ram) bytes), got \(highmem)")
        }
    }

    /// Parses a size: bytes, or a number with a K, M, G or T suffix
    /// (`"256M"`). `nil` when it is not one.
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
