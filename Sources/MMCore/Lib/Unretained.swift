/// Runs `body` with `object` and no retain of it. Swift 6.3 retains a
/// class reference loaded from another object's `let` around a call that
/// throws, and each retain is an atomic: on the paths that create and drop
/// a page, they cost as much as the rest of the work. The caller keeps
/// `object` alive (it holds what holds it) for the call.
@inline(__always)
func withUnretained<T: AnyObject, R, E: Error>(_ object: Unmanaged<T>, _ body: (T) throws(E) -> R) throws(E) -> R {
    var result: Result<R, E>?
    // SAFETY: the caller holds `object` for the call (see above).
    object._withUnsafeGuaranteedRef { object in
        do throws(E) { result = .success(try body(object)) } catch { result = .failure(error) }
    }
    return try result.unsafelyUnwrapped.get()
}
