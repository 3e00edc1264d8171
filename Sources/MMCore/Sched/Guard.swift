/// A guard (as the Rust abstractions' `Guard`s: `kernel::sync::lock::Guard`,
/// `MmapReadGuard`, `VmaReadGuard`, `CpuGuard`, a per-CPU token): what a
/// task holds until it is dropped. It is owned by the task that took it,
/// released once, and not `Send` (another task may not release it; the
/// collector may, which the engine warns of, as the guard was not scoped).
public class Guard: NativeObject {
    public let task: Task
    public private(set) var isReleased = false

    init(task: Task, site: Site) {
        self.task = task
        super.init(site: site)
    }

    func markReleased() { isReleased = true }

    /// How a script takes one, for the collector's warning.
    public var takenWith: String { "..." }

    /// What the engine says when the collector drops it still held.
    public var collectorWarning: String {
        "\(self) of task '\(task.name)' was dropped by the collector: guards are meant to be scoped (local g <close> = \(takenWith))"
    }
}
