import ArgumentParser
import Engine
import Foundation
import Tokenizer

extension Transformer.Precision: ExpressibleByArgument {}

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate", abstract: "Continue a prompt with the model; streams text, or prints JSON per sample.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "The prompt text.") var prompt: String
    @Flag(help: "Wrap the prompt as a user message in the model's chat template.") var chat = false
    @Option(help: "With --chat: the system prompt (default: SmolLM2's).") var system: String?
    @Option(help: "Most new tokens per sample.") var maxTokens = 128
    // Unconditional, so "-1" is read as a (bad) value and refused as such, not as a missing one.
    @Option(parsing: .unconditional, help: "Sampling temperature; 0 is greedy.") var temperature: Float = 0.7
    @Option(help: "Keep only the k most likely tokens (0: all).") var topK = 0
    @Option(help: "Keep the smallest set of tokens with this much probability (1: all).") var topP: Float = 1
    @Option(help: "Seed; sample i uses a seed derived from it and i.") var seed: UInt64 = 0
    @Option(help: "Number of samples, generated as one batch.") var n = 1
    @Flag(help: "Print one JSON object per sample: ids, text, logprobs, raw_logprobs, finish_reason.") var json = false
    @Option(help: "Weights the projections read: f32, or bf16 copies (half the bytes per token).") var weights: Transformer.Precision = .f32

    func validate() throws {
        if n < 1 { throw ValidationError("--n must be at least 1, found \(n)") }
        if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1, found \(maxTokens)") }
        if system != nil && !chat { throw ValidationError("--system needs --chat") }
    }

    func run() throws {
        let model = try modelOptions.load()
        let tok = model.tokenizer
        let text = chat
            ? try ChatTemplate.render([ChatMessage(role: "user", content: prompt)], defaultSystem: system ?? ChatTemplate.defaultSystemPrompt)
            : prompt
        let ids = try tok.encode(text)
        if ids.isEmpty { throw CLIError("the prompt is empty") }
        let stops = Set(tok.endTokens)
        let requests = (0..<n).map { i in
            GenerationRequest(prompt: ids, params: SamplingParams(
                temperature: temperature, topK: topK, topP: topP, maxNewTokens: maxTokens, stopTokens: stops,
                seed: n == 1 ? seed : SplitMix64.derive(seed, UInt64(i))))
        }
        let generator = Generator(model: try Transformer(weights: model.weights, precision: weights))

        var stream = UTF8Stream()
        let streaming = n == 1 && !json
        let results = try generator.generate(requests, onToken: { _, token in
            guard streaming, !stops.contains(token.id), let bytes = try? tok.decodeBytes([token.id]) else { return }
            FileHandle.standardOutput.write(stream.push(bytes))
        })
        for (i, r) in results.enumerated() {
            let visible = r.tokens.filter { !stops.contains($0) }
            if json {
                let object: [String: Any] = [
                    "index": i, "prompt_tokens": ids.count, "ids": r.tokens.map(Int.init),
                    "text": try tok.decode(visible), "logprobs": r.logprobs.map(Double.init),
                    "raw_logprobs": r.rawLogprobs.map(Double.init), "finish_reason": r.finishReason.rawValue,
                    "seed": requests[i].params.seed,
                ]
                print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            } else if streaming {
                FileHandle.standardOutput.write(stream.flush())
                print()
            } else {
                print("--- sample \(i) (seed \(requests[i].params.seed), \(r.finishReason.rawValue)) ---")
                print(try tok.decode(visible))
            }
        }
    }
}
