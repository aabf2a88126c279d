import ArgumentParser
import Engine
import Foundation
import Logging
import Serve

/// `charter serve`: the model behind an OpenAI-compatible HTTP API.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve the model over an OpenAI-compatible API (/v1/models, /v1/completions, /v1/chat/completions).")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "HOST:PORT to listen on (port 0: any free port, said in the log).") var bind = "127.0.0.1:8000"
    @Option(help: "The model's name in /v1/models and in answers (default: its file or folder name).") var name: String?
    @Option(help: "Most requests generated together in one batch; the others wait for the next.") var maxBatch = 16
    @Option(help: "Weights the projections read: f32, or bf16 copies (half the bytes per token).") var weights: Transformer.Precision = .f32
    @OptionGroup var logging: LogOptions

    func validate() throws {
        if maxBatch < 1 { throw ValidationError("--max-batch must be at least 1, found \(maxBatch)") }
    }

    func run() throws {
        logging.bootstrap()
        let logger = Logger(label: "serve")
        let model = try modelOptions.load()
        let tok = model.tokenizer
        let queue = EngineQueue(generator: Generator(model: try Transformer(weights: model.weights, precision: weights)), maxBatch: maxBatch)
        let served = name ?? URL(fileURLWithPath: modelOptions.model).lastPathComponent
        let server = try OpenAIServer(bind: bind, shared: ServeContext(queue: queue, tokenizer: tok, stopTokens: Set(tok.endTokens),
                                                                      context: model.config.contextLength, modelName: served))
        logger.info("serving \(served) on http://\(server.address)/v1 (batches of at most \(maxBatch))")
        while true { sleep(3600) } // until a signal ends the process
    }
}
