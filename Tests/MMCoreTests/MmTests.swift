import Testing
@testable import MMCore

private let anon = Mmap.MAP_PRIVATE | Mmap.MAP_ANONYMOUS

/// A booted machine with `main` running, for driving the model by hand.
private func machine(cpus: Int = 2) throws -> Machine {
    let machine = try Machine(MachineConfig(memory: 16 << 20, cpus: cpus))
    machine.scheduler.restartMain()
    _ = machine.scheduler.pickNext()
    return machine
}

/// Free pages, the per-CPU lists included.
private func free(_ machine: Machine) -> Int {
    Int(machine.pageAllocator.freePages) + machine.pageAllocator.pcpPages
}

@Suite("Address spaces")
struct MmTests {
    @Test("mm_users and mm_count through mmgrab, mmget, mmput and mmdrop")
    func lifecycle() throws {
        let machine = try machine()
        let baseline = free(machine)
        let user = try machine.mmAlloc(site: .unknown)
        let mm = user.mm
        #expect((mm.users, mm.count) == (1, 1))
        let grab = try user.mmgrab(site: .unknown)
        let second = try user.mmget(site: .unknown)
        #expect((mm.users, mm.count) == (2, 2))
        let guard_ = try #require(try mm.mmapLock(write: true, site: .unknown))
        _ = try mm.mmap(under: guard_, addr: nil, len: 3 * UInt64(PAGE_SIZE), prot: Mmap.PROT_READ | Mmap.PROT_WRITE, flags: anon)
        try mm.unlock(guard_)
        try second.release()
        try user.release()
        #expect((mm.users, mm.count) == (0, 1))
        #expect(mm.exited && mm.vmas.isEmpty && mm.pageTables == 1)
        #expect(try grab.mmgetNotZero(site: .unknown) == nil)
        #expect(throws: KernelError.self) { try user.checkUsers() }
        try grab.release()
        #expect(mm.freed && mm.pageTables == 0)
        #expect(free(machine) == baseline)
        #expect(machine.accounting.leaks().isEmpty)
    }

    @Test("mmput_async leaves the teardown to the work queue")
    func async() throws {
        let machine = try machine()
        let user = try machine.mmAlloc(site: .unknown)
        let async = try user.mmget(site: .unknown).intoMmputAsync(site: .unknown)
        try user.release()
        try async.release()
        #expect(user.mm.users == 0 && !user.mm.exited)
        #expect(machine.scheduler.pendingWork == ["mmput_async(mm 1)"])
        machine.scheduler.runWork()
        #expect(user.mm.exited && user.mm.freed)
    }

    @Test("a task spawned with an mm holds a user until it finishes")
    func taskMm() throws {
        let machine = try machine()
        let s = machine.scheduler
        let user = try machine.mmAlloc(site: .unknown)
        let task = try s.spawn(name: "p", cpu: nil, mm: user.mm, site: .unknown)
        try user.release()
        #expect(user.mm.users == 1 && task.mm === user.mm)
        s.switchTo(task)
        s.finish(task, failed: false)
        #expect(task.mm == nil && user.mm.freed)
        #expect(throws: KernelError.self) { try s.spawn(name: "late", cpu: nil, mm: user.mm, site: .unknown) }
    }

    @Test("VMAs merge when they continue each other and split on munmap")
    func mergeSplit() throws {
        let machine = try machine()
        let mm = try machine.mmAlloc(site: .unknown).mm
        let g = try #require(try mm.mmapLock(write: true, site: .unknown))
        let page = UInt64(PAGE_SIZE), rw = Mmap.PROT_READ | Mmap.PROT_WRITE
        for i in 0..<4 {
            _ = try mm.mmap(under: g, addr: 0x100000 + UInt64(i) * page, len: page, prot: rw, flags: Mmap.MAP_FIXED | anon)
        }
        #expect(mm.vmas.map(\.description) == ["Vma{0x100000-0x104000 rw-p}"])
        try mm.munmap(under: g, 0x101000, 2 * page)
        #expect(mm.vmas.map(\.description) == ["Vma{0x100000-0x101000 rw-p}", "Vma{0x103000-0x104000 rw-p}"])
        #expect(mm.vmas.map(\.pgoff) == [0x100, 0x103], "the tail keeps its offset")
        func driver(io: Bool) throws {
            _ = try mm.mmap(under: g, addr: 0x101000, len: page, prot: rw, flags: Mmap.MAP_FIXED | Mmap.MAP_PRIVATE, file: 7) {
                (new: VmaNew) throws(KernelError) in if io { try new.setIo() }
            }
            _ = try mm.mmap(under: g, addr: 0x102000, len: page, prot: rw, flags: Mmap.MAP_FIXED | Mmap.MAP_PRIVATE, file: 7, offset: page)
        }
        try driver(io: false)
        #expect(mm.mapCount == 3, "the driver's two VMAs continue one file: merged, not with the anonymous ones")
        try mm.munmap(under: g, 0x101000, 2 * page)
        try driver(io: true)
        #expect(mm.mapCount == 4, "VM_IO keeps them apart")
        #expect(throws: KernelError(.EINVAL, "mmap of length 0")) {
            try mm.mmap(under: g, addr: nil, len: 0, prot: rw, flags: anon)
        }
        try mm.unlock(g)
        #expect(throws: KernelError.self) { try mm.munmap(under: g, 0x100000, page) }
    }

    @Test("page tables: four levels, freed with the VMAs that used them")
    func pageTables() throws {
        let machine = try machine()
        let mm = try machine.mmAlloc(site: .unknown).mm
        let g = try #require(try mm.mmapLock(write: true, site: .unknown))
        let page = UInt64(PAGE_SIZE)
        let low = try mm.mmap(under: g, addr: 0x100000, len: page, prot: Mmap.PROT_WRITE | Mmap.PROT_READ, flags: Mmap.MAP_FIXED | anon)
        let high = try mm.mmap(under: g, addr: 0x7000_0000_0000, len: page, prot: Mmap.PROT_WRITE | Mmap.PROT_READ, flags: Mmap.MAP_FIXED | anon)
        try mm.unlock(g)
        for addr in [low, high] { _ = try mm.resolve(addr, write: true) }
        #expect(mm.pageTables == 1 + 2 * 3, "a PUD, PMD and PTE table each, under one PGD")
        let g2 = try #require(try mm.mmapLock(write: true, site: .unknown))
        try mm.munmap(under: g2, high, page)
        try mm.unlock(g2)
        #expect(mm.pageTables == 4, "the hole's tables went")
        #expect(mm.followPage(low) != nil && mm.followPage(high) == nil)
    }

    @Test("a reader waits behind a waiting writer; the writer gets it when the readers leave")
    func rwsem() throws {
        let machine = try machine()
        let s = machine.scheduler
        let mm = try machine.mmAlloc(site: .unknown).mm
        let r1 = try #require(try mm.mmapLock(write: false, site: .unknown))
        let w = try s.spawn(name: "w", cpu: nil, site: .unknown)
        let r2 = try s.spawn(name: "r2", cpu: nil, site: .unknown)
        s.switchTo(w)
        #expect(try mm.mmapLock(write: true, site: .unknown) == nil)
        s.switchTo(r2)
        #expect(s.wouldWait(for: mm.mmapLock, write: false), "behind the writer")
        #expect(try mm.mmapTryLock(write: false, site: .unknown) == nil)
        #expect(try mm.mmapLock(write: false, site: .unknown) == nil)
        #expect(mm.lockVmaUnderRcu(0x10000, site: .unknown) == nil, "no VMA there")
        s.switchTo(s.main)
        try mm.unlock(r1)
        #expect(mm.mmapLock.owner === w && w.state == .runnable && r2.state == .blocked)
        s.switchTo(w)
        let wg = try #require(try mm.mmapLock(write: true, site: .unknown))
        let rg = try mm.downgrade(wg, site: .unknown)
        #expect(mm.mmapLock.readers.map(\.name) == ["w", "r2"], "downgrading lets the waiting reader in")
        try mm.unlock(rg)
        s.switchTo(r2)
        let r2g = try #require(try mm.mmapLock(write: false, site: .unknown))
        try mm.unlock(r2g)
        #expect(mm.mmapLock.readers.isEmpty && mm.mmapLock.owner == nil)
    }

    @Test("user copies: EFAULT mid-slice, no advance, partial writes as copy_to_user leaves them")
    func uaccess() throws {
        let machine = try machine()
        let mm = try machine.mmAlloc(site: .unknown).mm
        let g = try #require(try mm.mmapLock(write: true, site: .unknown))
        let page = UInt64(PAGE_SIZE)
        let a = try mm.mmap(under: g, addr: 0x100000, len: 3 * page, prot: Mmap.PROT_READ | Mmap.PROT_WRITE, flags: Mmap.MAP_FIXED | anon)
        try mm.munmap(under: g, a + page, page)
        try mm.unlock(g)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4, alignment: 1)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: [1, 2, 3, 4] as [UInt8])
        let writer = UserSlice(mm: mm, address: a + page - 2, length: 4).writer()
        #expect(throws: KernelError.self) { try writer.write(UnsafeRawBufferPointer(buffer), site: .unknown) }
        #expect(writer.length == 4)
        let reader = UserSlice(mm: mm, address: a + page - 2, length: 2).reader()
        buffer.copyBytes(from: [0, 0, 0, 0] as [UInt8])
        #expect(try reader.read(into: try #require(buffer.baseAddress), 2, site: .unknown))
        #expect(Array(buffer) == [1, 2, 0, 0] && reader.isEmpty, "the bytes before the hole were written")
        #expect(throws: KernelError(.EFAULT, "1 bytes requested, 0 left in the user slice")) { try reader.skip(1) }
    }

    @Test("a page-table entry written behind the model's back is the kernel's bad pgd: logged, cleared, and every table page still freed")
    func badEntry() throws {
        let machine = try machine()
        let baseline = free(machine)
        var log: [String] = []
        machine.pageAllocator.onLog = { log.append($0) }
        let user = try machine.mmAlloc(site: .unknown)
        let mm = user.mm
        let g = try #require(try mm.mmapLock(write: true, site: .unknown))
        let addr = try mm.mmap(under: g, addr: nil, len: UInt64(PAGE_SIZE), prot: Mmap.PROT_READ | Mmap.PROT_WRITE, flags: anon)
        try mm.unlock(g)
        _ = try mm.resolve(addr, write: true)
        let pgd = try #require(mm.pageTable.pgd)
        // A script's raw write into the PGD (borrow_phys + write_u64): a present entry to pfn 0.
        let base = try #require(machine.memory.address(of: pgd))
        // SAFETY: the PGD is one page of RAM; entry 0 is its first 8 bytes.
        base.storeBytes(of: UInt64(1), as: UInt64.self)
        try user.release()
        #expect(log == ["mm/pgtable-generic.c: bad pgd (0000000000000001)"])
        #expect(machine.brokenInvariants.isEmpty)
        try machine.pageAllocator.checkConsistency()
        #expect(free(machine) == baseline, "the tables and the mapped page are freed")
    }
}
