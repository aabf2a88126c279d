import ArgumentParser
import Engine

@main
struct Charter: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "charter",
        abstract: "Constitutional AI / RLAIF training on Llama-architecture models.",
        version: "charter 0.1.0; \(BLAS.summary)",
        subcommands: [ModelCommand.self, TokenizeCommand.self, GenerateCommand.self, SFTCommand.self, RMCommand.self, RLCommand.self,
                      CoordinatorCommand.self, WorkerCommand.self, LocalCommand.self, KeysCommand.self, BenchCommand.self])
}
