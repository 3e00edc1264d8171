/// The page size and the typed numbers that name memory: page frame
/// numbers and physical addresses (`include/asm-generic/page.h`).

/// A bitwise shift for the page size.
public let PAGE_SHIFT = 12
/// The number of bytes in a page.
public let PAGE_SIZE = 1 << PAGE_SHIFT
/// A bitmask that gives the page containing a given address, the C meaning:
/// `~(PAGE_SIZE - 1)`.
public let PAGE_MASK = ~(PAGE_SIZE - 1)

/// Rounds up to the next multiple of `PAGE_SIZE`; `nil` on overflow
/// (`page_align` in rust/kernel/page.rs).
public func page_align(_ addr: UInt64) -> UInt64? {
    let (sum, overflow) = addr.addingReportingOverflow(UInt64(PAGE_SIZE - 1))
    return overflow ? nil : sum & UInt64(bitPattern: Int64(PAGE_MASK))
}

/// `%016lx`: sixteen hex digits, as the kernel prints a 64-bit value.
func hex16(_ v: UInt64) -> String {
    let digits = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
}

/// A page frame number (`unsigned long pfn`).
public struct Pfn: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { rawValue = value }

    /// The physical address of the frame's first byte (`PFN_PHYS`).
    public var phys: PhysAddr { PhysAddr(rawValue << UInt64(PAGE_SHIFT)) }
    public static func < (a: Pfn, b: Pfn) -> Bool { a.rawValue < b.rawValue }
    public static func + (a: Pfn, n: UInt64) -> Pfn { Pfn(a.rawValue + n) }
    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// A physical address (`phys_addr_t`).
public struct PhysAddr: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { rawValue = value }

    /// The frame holding this address (`PHYS_PFN`).
    public var pfn: Pfn { Pfn(rawValue >> UInt64(PAGE_SHIFT)) }
    public var isPageAligned: Bool { rawValue & UInt64(PAGE_SIZE - 1) == 0 }
    public static func < (a: PhysAddr, b: PhysAddr) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "0x" + String(rawValue, radix: 16) }
}
