import Foundation
import Testing

/// The checkout this test file is in.
let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// A temporary file holding `text`.
func temporaryFile(_ text: String, suffix: String = ".lua") throws -> String {
    let path = NSTemporaryDirectory() + "mmlab-test-\(UUID().uuidString)\(suffix)"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// A new empty folder of its own; the caller removes it.
func temporaryDirectory(_ prefix: String = "mmlab") throws -> String {
    let dir = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// What a run of the `mmlab` binary printed and how it exited.
struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// The `mmlab` built next to this test bundle: the tests run it by this
/// path, so it is also the program name its errors start with (lua.c's progname).
let mmlabPath = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    .appendingPathComponent("mmlab").path

/// Runs the `mmlab` built next to this test bundle.
func mmlab(_ arguments: [String], stdin: String = "", environment: [String: String] = [:],
           directory: String = repositoryRoot) throws -> RunResult {
    let exe = mmlabPath
    let process = Process()
    process.executableURL = URL(fileURLWithPath: exe)
    process.arguments = arguments
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    var env = ProcessInfo.processInfo.environment
    for name in ["LUA_INIT", "LUA_INIT_5_4", "LUA_PATH", "LUA_PATH_5_4"] { env[name] = nil }
    env["MMLAB_HISTORY"] = NSTemporaryDirectory() + "mmlab-history-\(UUID().uuidString)"
    env.merge(environment) { $1 }
    process.environment = env
    let out = try temporaryFile("", suffix: ".out"), err = try temporaryFile("", suffix: ".err")
    let input = try temporaryFile(stdin, suffix: ".in")
    defer { for path in [out, err, input] { try? FileManager.default.removeItem(atPath: path) } }
    process.standardOutput = FileHandle(forWritingAtPath: out)
    process.standardError = FileHandle(forWritingAtPath: err)
    process.standardInput = FileHandle(forReadingAtPath: input)
    let before = directory == repositoryRoot ? try FileManager.default.contentsOfDirectory(atPath: directory) : []
    try process.run()
    process.waitUntilExit()
    if directory == repositoryRoot {
        let added = Set(try FileManager.default.contentsOfDirectory(atPath: directory)).subtracting(before)
            .filter { !$0.hasPrefix(".") && $0 != "Package.resolved" }
        #expect(added.isEmpty, "mmlab \(arguments) left \(added.sorted()) in the checkout")
    }
    return RunResult(status: process.terminationStatus,
                     stdout: try String(contentsOfFile: out, encoding: .utf8),
                     stderr: try String(contentsOfFile: err, encoding: .utf8))
}
