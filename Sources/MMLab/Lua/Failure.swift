import CLua
import LuaShim
import MMCore

/// Why a binding failed, short of a `KernelError`: each becomes the
/// standard Lua error after the binding has returned.
enum LuaFailure: Error {
    /// `bad argument #n to 'f' (message)`, raised by `luaL_argerror`.
    case argument(Int32, String)
    /// The error value is on top of the stack already: raise it as is.
    case raised
}

/// Runs a binding's body and turns what it throws into the sentinel its
/// trampoline raises: `KernelError` becomes a `kernel.Error` value.
@inline(__always)
func bind(_ L: OpaquePointer?, _ body: (Lua) throws -> Int32) -> Int32 {
    let lua = Lua(L)
    do {
        return try body(lua)
    } catch {
        return lua.fail(error)
    }
}

extension Lua {
    /// Pushes what `error` raises and returns the sentinel for it.
    func fail(_ error: any Error) -> Int32 {
        switch error {
        case let failure as LuaFailure:
            switch failure {
            case .argument(let arg, let message):
                push(message)
                return MMLAB_ARGERROR_BASE - arg
            case .raised:
                return MMLAB_RAISE
            }
        case let error as KernelError:
            runtime.pushError(self, error)
            return MMLAB_RAISE
        default:
            push("\(error)")
            return MMLAB_RAISE
        }
    }
}
