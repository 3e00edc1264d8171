import Testing
@testable import MMCore

@Suite("Machine")
struct MachineTests {
    @Test("sizes parse with K, M, G and T suffixes", arguments: [
        ("4096", UInt64(4096)), ("4K", 4096), ("256M", 256 << 20), ("1g", 1 << 30), ("2T", 2 << 40),
    ])
    func sizes(text: String, bytes: UInt64) {
        #expect(MachineConfig.parseSize(text) == bytes)
    }

    @Test("what is not a size", arguments: ["", "M", "-1", "1.5G", "12Q", "99999999999999999999", "20000000000000T"])
    func notSizes(text: String) {
        #expect(MachineConfig.parseSize(text) == nil)
    }

    @Test("bad configurations are EINVAL", arguments: [
        MachineConfig(memory: 0), MachineConfig(memory: 4095), MachineConfig(memory: 2 << 40),
        MachineConfig(cpus: 0), MachineConfig(cpus: 65),
    ])
    func invalid(config: MachineConfig) {
        #expect(throws: KernelError.self) { try Machine(config) }
    }

    @Test("a 64 GiB machine boots cheaply")
    func large() throws {
        let machine = try Machine(MachineConfig(memory: 64 << 30))
        #expect(machine.pageAllocator.totalPages == 16 << 20)
        let page = try Page.allocPage(machine, .kernel)
        try page.write(UInt8(1), at: 0)
        try page.free()
    }

    @Test("page_align rounds up; nil on overflow")
    func pageAlign() {
        #expect(page_align(0) == 0)
        #expect(page_align(1) == 4096)
        #expect(page_align(4096) == 4096)
        #expect(page_align(UInt64.max - 4095) == UInt64.max - 4095)
        #expect(page_align(UInt64.max - 4094) == nil)
        #expect(PAGE_MASK == -4096)
    }

    @Test("pfns and physical addresses convert")
    func addresses() {
        #expect(Pfn(0x1a2).phys == PhysAddr(0x1a2000))
        #expect(PhysAddr(0x1a2fff).pfn == Pfn(0x1a2))
        #expect(!PhysAddr(0x1a2fff).isPageAligned)
        #expect(Pfn(0x1a2).description == "0x1a2")
    }
}

@Suite("Accounting")
struct AccountingTests {
    @Test("live objects by type, leaks in creation order")
    func liveAndLeaks() throws {
        let machine = try Machine(MachineConfig(memory: 1 << 20))
        let a = try Page.allocPage(machine, .kernel, site: machine.sites.intern("a.lua:1"))
        let mark = machine.accounting.serial
        let b = try Page.allocPage(machine, .kernel)
        let c = try Page.allocPage(machine, .kernel)
        #expect(machine.accounting.liveCounts() == ["Page": 3])
        try b.free()
        #expect(machine.accounting.count == 2)
        #expect(machine.accounting.leaks().map(\.serial) == [a.serial, c.serial])
        #expect(machine.accounting.leaks(since: mark).count == 1)
        #expect(machine.sites.name(machine.accounting.leaks()[0].site) == "a.lua:1")
        try a.free()
        try c.free()
        #expect(machine.accounting.liveCounts().isEmpty)
        #expect(!a.isLive)
    }

    @Test("errors print as the kernel names them")
    func errors() {
        #expect(KernelError(.EINVAL, "bad").description == "EINVAL: bad")
        #expect(KernelError.bug("oops").description == "BUG: oops")
        #expect(KernelError.bug("oops").isBug)
        #expect(Errno.EDEADLK.rawValue == 35)
        #expect(Errno(rawValue: 99).name == "E99")
    }

    @Test("a release that cannot fail unless the model broke is recorded, and kernel.debug.check reports it")
    func brokenInvariants() throws {
        let machine = try Machine(MachineConfig(memory: 16 << 20))
        let pfn = try machine.pageAllocator.allocPages([.kernel], order: 0)
        machine.pageAllocator.putOwned(pfn, by: "a test")
        #expect(machine.brokenInvariants.isEmpty)
        try machine.checkConsistency()
        machine.pageAllocator.putOwned(pfn, by: "a test")  // a reference it no longer holds
        machine.pageAllocator.freeOwned(pfn, order: 0, by: "a page table")
        #expect(machine.brokenInvariants == [
            "a test dropped a page reference it did not hold: put_page of pfn \(pfn), which is not an allocated page",
            "a page table freed a block it did not own: __free_pages of pfn \(pfn), which is not an allocated page",
        ])
        #expect(throws: KernelError.bug("the model broke its own invariants: a test dropped a page reference it did not hold: put_page of pfn \(pfn), which is not an allocated page (and 1 more)")) {
            try machine.checkConsistency()
        }
    }
}
