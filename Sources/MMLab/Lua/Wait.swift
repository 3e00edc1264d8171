import CLua
import LuaShim
import MMCore

/// The one way a binding waits.
///
/// A binding that may block does its waiting part as a *step*: a closure
/// that either finishes (returns what the binding returns) or finds that
/// the task must wait, has MMCore block it on a wait object (a lock, a wait
/// queue, a completion, a task), and returns nil. The binding then returns
/// `MMLAB_WAIT`: its trampoline yields the task's thread to the driver,
/// which parks it until the wait object wakes it, and resumes it; the C
/// continuation calls `Runtime.resumed`, which runs the step again from
/// where the binding left off, on the same Lua stack. Nothing before the
/// step runs twice; what the binding computed is in the step's captures.
typealias Step = (Lua) throws -> Int32?

/// What runs after a protected call a binding asked for (`Lua.pcall`):
/// the call's status and the index of its first result (or of its error).
typealias PcallFinisher = (Lua, Int32, Int32) throws -> Int32

extension Runtime {
    /// `mmlab_State.resumed`: a waiting thread was resumed; its step runs.
    static let resumed: @convention(c) (OpaquePointer?) -> Int32 = { L in
        bind(L) { lua in
            guard let step = lua.runtime.steps.removeValue(forKey: lua.L) else {
                throw KernelError.bug("the engine: a thread resumed from a wait it did not start")
            }
            return try lua.blocking(step)
        }
    }

    /// `mmlab_State.finished`, after every `Lua.pcall`: the thread's
    /// latest closure runs.
    static let finishPcall: @convention(c) (OpaquePointer?, Int32, Int32) -> Int32 = { L, status, first in
        bind(L) { lua in
            guard let finish = lua.runtime.finishers[lua.L]?.popLast() else {
                throw KernelError.bug("the engine: a protected call finished that no binding started")
            }
            if lua.runtime.finishers[lua.L]?.isEmpty == true { lua.runtime.finishers[lua.L] = nil }
            return try finish(lua, status, first)
        }
    }

    /// A thread ends (its task finished or failed): what it waited for goes.
    func forgetWaits(of L: OpaquePointer) {
        steps[L] = nil
        finishers[L] = nil
    }
}

extension Lua {
    /// Runs a binding's waiting part (see `Step`): its result, or
    /// `MMLAB_WAIT` when the task must wait first. A step that would wait
    /// where the running code cannot (`checkCanWait`) throws instead.
    func blocking(_ step: @escaping Step) throws -> Int32 {
        if let result = try step(self) { return result }
        return wait(then: step)
    }

    /// The task is blocked already (MMCore blocked it): `step` runs when it wakes.
    func wait(then step: @escaping Step) -> Int32 {
        runtime.steps[L] = step
        return MMLAB_WAIT
    }

    /// Throws the bug for waiting here, if the running code cannot wait
    /// and `wouldWait`: called by a step before MMCore blocks the task.
    func checkCanWait(_ wouldWait: Bool, _ what: @autoclosure () -> String) throws(KernelError) {
        let runtime = self.runtime
        if wouldWait, !runtime.canBlock(self) { throw runtime.cannotBlock(what()) }
    }

    /// A protected call of the function below the `arguments` values on
    /// top of the stack; `finish` runs after it, from C, with its status.
    func pcall(arguments: Int32, then finish: @escaping PcallFinisher) -> Int32 {
        runtime.finishers[L, default: []].append(finish)
        return MMLAB_PCALL_BASE - arguments
    }
}
