#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MMLab

// `mmlab run|repl|test|examples ...` and `--help` go to the subcommands;
// anything else is the lua-compatible command line.
let arguments = Array(CommandLine.arguments.dropFirst())
let commandWords: Set = ["run", "repl", "test", "examples", "help", "--help", "-h", "--version"]

if let first = arguments.first, commandWords.contains(first) {
    do {
        var command = try MMLab.parseAsRoot(arguments)
        try command.run()
        exit(0)
    } catch {
        if MMLab.exitCode(for: error) == .validationFailure {
            fputs(MMLab.fullMessage(for: error) + "\n", stderr)
            exit(2)
        }
        MMLab.exit(withError: error)
    }
}

do {
    exit(try Standalone.parse(arguments).run())
} catch {
    fputs("mmlab: \(error)\n\(Standalone.usage)\n", stderr)
    exit(2)
}
