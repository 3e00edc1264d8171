import Testing
@testable import MMCore

@Suite("Page")
struct PageTests {
    let machine: Machine

    init() throws {
        machine = try Machine(MachineConfig(memory: 1 << 20))
    }

    @Test("an order-0 page at the start of RAM")
    func allocate() throws {
        let page = try Page.allocPage(machine, .kernel)
        #expect(page.size == PAGE_SIZE)
        #expect(page.order == 0)
        #expect(page.pfn == Pfn(0x100))
        #expect(page.phys == PhysAddr(0x100000))
        #expect(page.description == "Page{pfn=0x100, order=0}")
        #expect(machine.pageAllocator.freePages == machine.pageAllocator.totalPages - 1)
        try page.free()
        #expect(machine.pageAllocator.freePages == machine.pageAllocator.totalPages)
    }

    @Test("__GFP_ZERO zeroes a reused frame")
    func zero() throws {
        let dirty = try Page.allocPage(machine, .kernel)
        try dirty.writeRaw([UInt8](repeating: 0xff, count: PAGE_SIZE), 0)
        try dirty.free()
        let page = try Page.allocPage(machine, [.kernel, .zero])
        #expect(page.pfn == dirty.pfn)
        #expect(try page.readRaw(0, PAGE_SIZE) == [UInt8](repeating: 0, count: PAGE_SIZE))
    }

    @Test("bounds: allowed only if off <= size, len <= size and off + len <= size",
          arguments: [
            (PAGE_SIZE, 0, true), (0, PAGE_SIZE, true), (PAGE_SIZE - 1, 1, true),
            (1, PAGE_SIZE, false), (PAGE_SIZE + 1, 0, false), (PAGE_SIZE - 1, 2, false),
            (-1, 1, false), (0, -1, false), (Int.max, 1, false), (1, Int.max, false), (Int.min, Int.min, false),
          ])
    func bounds(off: Int, len: Int, allowed: Bool) throws {
        let page = try Page.allocPage(machine, [.kernel, .zero])
        if allowed {
            #expect(throws: Never.self) { _ = try page.pointerIntoPage(off, len) }
        } else {
            #expect(throws: KernelError(.EINVAL, "offset \(off) + length \(len) exceeds the page (4096)")) {
                try page.fillZeroRaw(off, len)
            }
            if (0...2 * PAGE_SIZE).contains(len) {
                #expect(throws: KernelError.self) { try page.writeRaw([UInt8](repeating: 1, count: len), off) }
            }
        }
        #expect(try page.readRaw(0, PAGE_SIZE) == [UInt8](repeating: 0, count: PAGE_SIZE))
    }

    @Test("integers are little-endian")
    func integers() throws {
        let page = try Page.allocPage(machine, .kernel)
        try page.write(UInt64(0x0807_0605_0403_0201), at: 8)
        #expect(try page.readRaw(8, 8) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(try page.read(UInt16.self, at: 8) == 0x0201)
        #expect(try page.read(UInt32.self, at: 9) == 0x0504_0302)
        #expect(throws: KernelError.self) { try page.read(UInt64.self, at: PAGE_SIZE - 7) }
        #expect(try page.read(UInt64.self, at: PAGE_SIZE - 8) == 0)
    }

    @Test("double free and use after free are bugs naming the site")
    func useAfterFree() throws {
        let page = try Page.allocPage(machine, .kernel)
        let site = machine.sites.intern("exp.lua:12")
        try page.free(site: site)
        #expect(page.isFreed)
        #expect(throws: KernelError.bug("double free: Page{pfn=0x100, order=0} freed at exp.lua:12")) {
            try page.free()
        }
        #expect(throws: KernelError.bug("use after free: Page{pfn=0x100, order=0} freed at exp.lua:12")) {
            try page.read(UInt8.self, at: 0)
        }
        #expect(machine.pageAllocator.freePages == machine.pageAllocator.totalPages, "freed once")
    }
}

@Suite("Page allocator")
struct PageAllocatorTests {
    @Test("every RAM page, then ENOMEM, then reuse")
    func exhaust() throws {
        let machine = try Machine(MachineConfig(memory: 64 << 12))
        var pages: [Page] = []
        for _ in 0..<64 { pages.append(try Page.allocPage(machine, .kernel)) }
        #expect(Set(pages.map(\.pfn)).count == 64)
        #expect(pages.map(\.pfn.rawValue).max() == 0x100 + 63)
        #expect(throws: KernelError.self) { try Page.allocPage(machine, .kernel) }
        #expect(machine.pageAllocator.freePages == 0)
        try pages[10].free()
        #expect(try Page.allocPage(machine, .kernel).pfn == pages[10].pfn)
    }

    @Test("orders above 0 wait for the buddy allocator")
    func orders() throws {
        let machine = try Machine(MachineConfig(memory: 1 << 20))
        #expect(throws: KernelError.self) { try machine.pageAllocator.allocPages(order: 1) }
    }
}
