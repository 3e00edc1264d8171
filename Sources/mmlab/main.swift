#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MMLab

// `mmlab run|repl|test|examples|fuzz ...` and `--help` go to the subcommands,
// also after machine and output options (`mmlab --seed 3 examples binder`); anything
// else is the lua-compatible command line.
let arguments = Array(CommandLine.arguments.dropFirst())
let commandWords: Set = ["run", "repl", "test", "examples", "explore", "sweep", "doc", "fuzz", "help", "--help", "--version"]

/// The index of a subcommand word after leading machine options, if any.
func subcommandIndex(_ arguments: [String]) -> Int? {
    var i = 0
    while i < arguments.count {
        let a = arguments[i]
        if commandWords.contains(a) { return i }
        if a == "--strict" || a == "--trace-accesses" || Standalone.valueOptions.contains(where: { a.hasPrefix($0 + "=") }) {
            i += 1
        } else if Standalone.valueOptions.contains(a) {
            i += 2
        } else {
            return nil
        }
    }
    return nil
}

/// An option of mmlab's given twice on a subcommand's line (the words
/// after `run SCRIPT` or `explore SCRIPT` are the script's; `--param` repeats).
func duplicateOption(_ words: [String]) -> String? {
    let flags: Set = ["--strict", "--json", "--stop-at-first", "--trace-accesses", "--tap", "--ktap", "--lua-ls", "--markdown", "--help"]
    let scriptFirst = ["run", "explore"].contains(words.first ?? "")
    var seen: Set<String> = []
    var i = 1
    while i < words.count {
        let w = words[i]
        if w == "--" { break }
        if w.hasPrefix("--") {
            let name = String(w.split(separator: "=", maxSplits: 1)[0])
            if name != "--param" && name != "--merge", !seen.insert(name).inserted { return name }
            if !flags.contains(name) && !w.contains("=") { i += 1 }  // its value
        } else if scriptFirst {
            break  // the script: what follows is its own
        }
        i += 1
    }
    return nil
}

if let i = subcommandIndex(arguments) {
    let reordered = [arguments[i]] + arguments[..<i] + arguments[(i + 1)...]
    if let twice = duplicateOption(reordered) {
        fputs("Error: \(twice) is given twice\n", stderr)
        exit(2)
    }
    do {
        var command = try MMLab.parseAsRoot(reordered)
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

let program = CommandLine.arguments.first ?? "mmlab"
do {
    exit(try Standalone.parse(arguments, program: program).run())
} catch {
    // lua.c's print_usage, with mmlab's options
    fputs("\(program.isEmpty ? "mmlab" : program): \(error)\n\(Standalone.usage)\n", stderr)
    exit(2)
}
