import ArgumentParser
import Engine
import Foundation

@main
struct Charter: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "charter",
        abstract: "Constitutional AI / RLAIF training on Llama-architecture models.",
        version: "charter 0.1.0; \(Kernel.withBLAS)",
        subcommands: [ModelCommand.self, TokenizeCommand.self, GenerateCommand.self, TrainCommand.self, ReportCommand.self, SFTCommand.self, DPOCommand.self, RMCommand.self, RLCommand.self, StageCommand.self, ReviseCommand.self, LabelCommand.self, ServeCommand.self,
                      CoordinatorCommand.self, WorkerCommand.self, LocalCommand.self, KeysCommand.self, BenchCommand.self])

    static func main() {
        // Each line reaches a log file or pipe when it is printed, not at exit (or never, if killed).
        // glibc's `stdout` is a C global that Swift 6 will not read, so it is looked up by name.
        if let symbol = dlsym(nil, "stdout") { setvbuf(symbol.load(as: UnsafeMutablePointer<FILE>.self), nil, _IOLBF, 0) }
        HeapReuse.enable()
        do { _ = try Kernel.fromEnvironment() } catch {
            FileHandle.standardError.write(Data("charter: \(error)\n".utf8))
            Foundation.exit(2)
        }
        main(nil)
    }
}
