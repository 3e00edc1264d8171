import MMLab
let e = try Engine()
do { try e.run(file: CommandLine.arguments[1]) } catch { print(error) }
print(e.leakReport() ?? "no leaks")
