#if canImport(Glibc)
import Glibc
#endif

/// A progress line on standard error, redrawn in place, when standard
/// error is a terminal; nothing otherwise (logs and pipes stay clean, and
/// output stays the same from run to run).
final class Progress {
    let enabled: Bool
    private var shown = ""
    private var lastPercent = -1
    private var lastLabel = ""

    init(enabled: Bool = isatty(2) != 0 && getenv("MMLAB_NO_PROGRESS") == nil) {
        self.enabled = enabled
    }

    /// Shows `label` at `done` of `total`; redraws only when the whole
    /// percentage or the label changes. At `total` the line goes away.
    func update(_ label: String, _ done: Int, _ total: Int) {
        guard enabled else { return }
        guard total > 0, done < total else {
            clear()
            return
        }
        let percent = max(0, min(100, done * 100 / total))
        guard percent != lastPercent || label != lastLabel else { return }
        lastPercent = percent
        lastLabel = label
        let width = 24, filled = percent * width / 100
        draw("\(label) [" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "] \(percent)% (\(done)/\(total))")
    }

    /// Shows a free-form status line.
    func status(_ line: String) {
        guard enabled else { return }
        lastPercent = -1
        draw(line)
    }

    private func draw(_ line: String) {
        let columns = Self.columns
        let text = line.count > columns - 1 ? String(line.prefix(columns - 1)) : line
        fputs("\r\u{1b}[K" + text, stderr)
        fflush(stderr)
        shown = text
    }

    /// Removes the line (before other output, and at the end).
    func clear() {
        guard enabled, !shown.isEmpty else { return }
        fputs("\r\u{1b}[K", stderr)
        fflush(stderr)
        shown = ""
        lastPercent = -1
        lastLabel = ""
    }

    private static var columns: Int {
        var size = winsize()
        if ioctl(2, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 10 { return Int(size.ws_col) }
        return 80
    }
}
