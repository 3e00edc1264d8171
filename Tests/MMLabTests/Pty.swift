import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `mmlab` running on a pseudo-terminal, typed at as a user would: what
/// it prints is read back from the terminal's master side.
final class PtySession {
    private let master: Int32
    private let process = Process()
    private(set) var output = ""

    init(_ arguments: [String], environment: [String: String] = [:], columns: UInt16 = 100) throws {
        // posix_openpt, unlockpt and ptsname, as glibc does them on Linux.
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        var unlock: Int32 = 0, number: UInt32 = 0
        let TIOCSPTLCK: UInt = 0x4004_5431, TIOCGPTN: UInt = 0x8004_5430
        guard master >= 0, ioctl(master, TIOCSPTLCK, &unlock) == 0, ioctl(master, TIOCGPTN, &number) == 0 else {
            throw POSIXError(.EIO)
        }
        let name = "/dev/pts/\(number)"
        var size = winsize(ws_row: 40, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0)
        _ = ioctl(master, UInt(TIOCSWINSZ), &size)
        let slave = open(name, O_RDWR | O_NOCTTY)
        guard slave >= 0 else { throw POSIXError(.EIO) }
        let terminal = FileHandle(fileDescriptor: slave, closeOnDealloc: true)
        process.executableURL = URL(fileURLWithPath: mmlabPath)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
        var env = ProcessInfo.processInfo.environment
        for name in ["LUA_INIT", "LUA_INIT_5_4", "MMLAB_NO_PROGRESS"] { env[name] = nil }
        env["TERM"] = "xterm"
        env.merge(environment) { $1 }
        process.environment = env
        process.standardInput = terminal
        process.standardOutput = terminal
        process.standardError = terminal
        try process.run()
        _ = fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK)
    }

    deinit {
        // SIGKILL: a child may have inherited SIGTERM blocked (Foundation's
        // Process keeps the parent's mask), and must not outlive the test.
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        close(master)
    }

    /// Types `text` (use "\t" for Tab, "\r" for Enter, "\u{1b}[A" for Up).
    func send(_ text: String) {
        var bytes = Array(text.utf8)
        while !bytes.isEmpty {
            let n = write(master, &bytes, bytes.count)
            if n > 0 { bytes.removeFirst(n) } else { usleep(1000) }
        }
    }

    /// Waits until the line editor reads the next line: the terminal is in
    /// raw mode (a pty master's tcgetattr reports the slave's termios).
    func readPrompt(timeout: Double = 10) {
        let deadline = Date().addingTimeInterval(timeout)
        var mode = termios()
        while process.isRunning, Date() < deadline {
            drain()
            if tcgetattr(master, &mode) == 0, mode.c_lflag & tcflag_t(ICANON) == 0 { return }
            usleep(10_000)
        }
    }

    /// Reads until the output since `from` contains `text`, or `timeout`
    /// seconds pass; the output read since `from`.
    @discardableResult
    func read(until text: String, from: Int = 0, timeout: Double = 10) -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            drain()
            let seen = String(output.dropFirst(from))
            if seen.contains(text) { return seen }
            if !process.isRunning { drain(); break }
            usleep(10_000)
        }
        return String(output.dropFirst(from))
    }

    private func drain() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Glibc.read(master, &buffer, buffer.count)
            guard n > 0 else { return }
            output += String(decoding: buffer[0..<n], as: UTF8.self)
        }
    }

    /// Sends SIGINT, as a Ctrl-C at a shell would.
    func interrupt() { process.interrupt() }

    /// Waits for the process to end; its status.
    func wait(timeout: Double = 10) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline {
            drain()
            usleep(10_000)
        }
        drain()
        return process.isRunning ? nil : process.terminationStatus
    }
}
