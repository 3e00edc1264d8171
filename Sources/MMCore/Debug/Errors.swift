/// An errno value, as the kernel's `include/uapi/asm-generic/errno-base.h`
/// numbers it.
public struct Errno: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The symbolic name (`"EINVAL"`), or `"E<n>"` for numbers not listed here.
    public var name: String {
        Errno.all.first { $0.1 == self }?.0 ?? "E\(rawValue)"
    }
    public var description: String { name }

    public static let EPERM = Errno(rawValue: 1)
    public static let ENOENT = Errno(rawValue: 2)
    public static let ESRCH = Errno(rawValue: 3)
    public static let EINTR = Errno(rawValue: 4)
    public static let EIO = Errno(rawValue: 5)
    public static let E2BIG = Errno(rawValue: 7)
    public static let EBADF = Errno(rawValue: 9)
    public static let EAGAIN = Errno(rawValue: 11)
    public static let ENOMEM = Errno(rawValue: 12)
    public static let EACCES = Errno(rawValue: 13)
    public static let EFAULT = Errno(rawValue: 14)
    public static let EBUSY = Errno(rawValue: 16)
    public static let EEXIST = Errno(rawValue: 17)
    public static let ENODEV = Errno(rawValue: 19)
    public static let EINVAL = Errno(rawValue: 22)
    public static let ENOSPC = Errno(rawValue: 28)
    public static let ERANGE = Errno(rawValue: 34)
    public static let EDEADLK = Errno(rawValue: 35)
    public static let EOVERFLOW = Errno(rawValue: 75)
    public static let EOPNOTSUPP = Errno(rawValue: 95)

    /// Every named errno, in numeric order.
    public static let all: [(String, Errno)] = [
        ("EPERM", .EPERM), ("ENOENT", .ENOENT), ("ESRCH", .ESRCH), ("EINTR", .EINTR),
        ("EIO", .EIO), ("E2BIG", .E2BIG), ("EBADF", .EBADF), ("EAGAIN", .EAGAIN), ("ENOMEM", .ENOMEM),
        ("EACCES", .EACCES), ("EFAULT", .EFAULT), ("EBUSY", .EBUSY), ("EEXIST", .EEXIST),
        ("ENODEV", .ENODEV), ("EINVAL", .EINVAL), ("ENOSPC", .ENOSPC), ("ERANGE", .ERANGE),
        ("EDEADLK", .EDEADLK), ("EOVERFLOW", .EOVERFLOW), ("EOPNOTSUPP", .EOPNOTSUPP),
    ]
}

/// The error every fallible MMCore operation throws: an errno the kernel
/// would return, or a bug the kernel would BUG() on or corrupt memory with
/// (use after free, double free, out-of-bounds access), which the model
/// caught instead.
public struct KernelError: Error, Equatable, CustomStringConvertible {
    /// `nil` for bugs.
    public let errno: Errno?
    public let message: String

    public init(_ errno: Errno, _ message: String) {
        self.errno = errno
        self.message = message
    }

    private init(bug message: String) {
        self.errno = nil
        self.message = message
    }

    public static func bug(_ message: String) -> KernelError { KernelError(bug: message) }

    public var isBug: Bool { errno == nil }

    /// `EINVAL: offset 4095 + length 2 exceeds the page (4096)`, or
    /// `BUG: use after free: ...`.
    public var description: String { "\(errno?.name ?? "BUG"): \(message)" }
}
