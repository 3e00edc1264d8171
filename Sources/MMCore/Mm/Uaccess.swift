/// User memory (`rust/kernel/uaccess.rs`): a `UserSlice` is a range of an
/// address space; its reader and writer copy out of and into it, a range
/// at a time, as `copy_from_user` and `copy_to_user` do.
///
/// A copy touches user memory through the page tables. Where a page is not
/// there yet, it faults it in, which needs the mmap lock for reading: the
/// copy may then wait for a writer (the caller retries once woken), and
/// taking it under the lock already is a deadlock, which lockdep's
/// `might_fault` annotation reports on every copy.
public final class UserSlice: CustomStringConvertible {
    public let mm: MmStruct
    public let address: UInt64
    public let length: Int

    public init(mm: MmStruct, address: UInt64, length: Int) {
        self.mm = mm
        self.address = address
        self.length = length
    }

    public var description: String { "UserSlice{0x\(String(address, radix: 16)), len=\(length)}" }
    public func reader() -> UserSliceReader { UserSliceReader(mm: mm, address: address, length: length) }
    public func writer() -> UserSliceWriter { UserSliceWriter(mm: mm, address: address, length: length) }
}

/// What a reader and a writer share: the rest of the slice.
public class UserSliceCursor: CustomStringConvertible {
    public let mm: MmStruct
    public private(set) var address: UInt64
    /// Bytes left.
    public private(set) var length: Int

    init(mm: MmStruct, address: UInt64, length: Int) {
        self.mm = mm
        self.address = address
        self.length = length
    }

    public var typeName: String { "UserSliceCursor" }
    public var description: String { "\(typeName){0x\(String(address, radix: 16)), len=\(length)}" }
    public var isEmpty: Bool { length == 0 }

    /// EFAULT when `count` is more than what is left (nothing moves then).
    func checkRemaining(_ count: Int) throws(KernelError) {
        guard count >= 0, count <= length else {
            throw KernelError(.EFAULT, "\(count) bytes requested, \(max(length, 0)) left in the user slice")
        }
    }

    func advance(_ count: Int) {
        address &+= UInt64(count)
        length -= count
    }

    /// Copies `count` bytes at the cursor, a page at a time, through
    /// `chunk(userMemory, done, n)`: `userMemory` is nil where a read finds
    /// the zero page. False when the task must wait for the mmap lock: it
    /// is blocked (call again once woken), or, unless `mayWait`, nothing
    /// happened. The cursor advances only when everything was copied.
    func copy(_ count: Int, write: Bool, site: Site, mayWait: Bool,
              _ chunk: (UnsafeMutableRawPointer?, Int, Int) -> Void) throws(KernelError) -> Bool {
        try checkRemaining(count)
        guard try mm.copyUser(address, count, write: write, site: site, mayWait: mayWait, chunk) else { return false }
        advance(count)
        return true
    }
}

/// `UserSliceReader`: reads and skips forward.
public final class UserSliceReader: UserSliceCursor {
    override public var typeName: String { "UserSliceReader" }

    /// `clone_reader`: another reader of what is left, from here.
    public func cloneReader() -> UserSliceReader { UserSliceReader(mm: mm, address: address, length: length) }

    /// `skip`: EFAULT past the end.
    public func skip(_ count: Int) throws(KernelError) {
        try checkRemaining(count)
        advance(count)
    }

    /// `read_raw` into `out` (`count` bytes); false when it must wait.
    public func read(into out: UnsafeMutableRawPointer, _ count: Int, site: Site,
                     mayWait: Bool = true) throws(KernelError) -> Bool {
        try copy(count, write: false, site: site, mayWait: mayWait) { user, done, n in
            // SAFETY: `out` holds `count` bytes and `done + n <= count`; `user` is valid for `n` bytes of its page.
            if let user { (out + done).copyMemory(from: user, byteCount: n) } else { (out + done).initializeMemory(as: UInt8.self, repeating: 0, count: n) }
        }
    }
}

/// `UserSliceWriter`: writes forward.
public final class UserSliceWriter: UserSliceCursor {
    override public var typeName: String { "UserSliceWriter" }

    /// `write_slice` of `bytes`; false when it must wait. Bytes before a
    /// faulting page are written, as `copy_to_user` leaves them.
    public func write(_ bytes: UnsafeRawBufferPointer, site: Site, mayWait: Bool = true) throws(KernelError) -> Bool {
        try copy(bytes.count, write: true, site: site, mayWait: mayWait) { user, done, n in
            guard let user, let base = bytes.baseAddress else { return }
            // SAFETY: `user` is valid for `n` bytes of its page; `done + n <= bytes.count`.
            user.copyMemory(from: base + done, byteCount: n)
        }
    }
}

extension MmStruct {
    /// `copy_from_user` / `copy_to_user` of `count` bytes at `addr`.
    /// False when the task must wait for the mmap lock to fault pages in.
    func copyUser(_ addr: UInt64, _ count: Int, write: Bool, site: Site, mayWait: Bool,
                  _ chunk: (UnsafeMutableRawPointer?, Int, Int) -> Void) throws(KernelError) -> Bool {
        let scheduler = machine.scheduler
        let task = scheduler.current
        let what = write ? "copy_to_user" : "copy_from_user"
        guard users > 0 else { throw .bug("\(what) into \(self) after mm_users reached zero: the address space is gone") }
        guard count > 0 else { return true }
        let (end, overflow) = addr.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= Mmap.taskSize else {
            throw KernelError(.EFAULT, "\(what) of \(count) bytes at 0x\(String(addr, radix: 16)): past TASK_SIZE (access_ok)")
        }
        // A task woken with the lock handed over takes it below.
        let waited = task.handoff === mmapLock || task.wakeError != nil
        if !waited {
            try scheduler.mightSleep(what)
            try scheduler.lockdep.acquire(mmapLock, by: task, site: site, trylock: false, sites: scheduler.sites)  // might_fault
            if isPresent(addr, count, write: write) {
                try forEachPage(addr, count) { at, done, n throws(KernelError) in chunk(try resolve(at, write: write), done, n) }
                return true
            }
        }
        if !mayWait, scheduler.wouldWait(for: mmapLock, write: false) { return false }
        guard try scheduler.down(mmapLock, write: false, site: site) else { return false }
        defer { scheduler.up(mmapLock, task: task, write: false) }
        try forEachPage(addr, count) { at, done, n throws(KernelError) in chunk(try resolve(at, write: write), done, n) }
        return true
    }

    /// Calls `body(address, done, n)` for each page-bounded piece of the range.
    private func forEachPage(_ addr: UInt64, _ count: Int,
                             _ body: (UInt64, Int, Int) throws(KernelError) -> Void) throws(KernelError) {
        var done = 0
        while done < count {
            let at = addr + UInt64(done)
            let n = min(count - done, PAGE_SIZE - Int(at & UInt64(PAGE_SIZE - 1)))
            try body(at, done, n)
            done += n
        }
    }
}
