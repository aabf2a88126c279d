import ArgumentParser
import Engine
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmarks quoted in BENCHMARKS.md (build with -c release).",
        subcommands: [GenerateBench.self, KernelBench.self, TrainBench.self, BroadcastBench.self, DispatchBench.self, StageOutputBench.self, ZMQSinkCommand.self])
}

struct GenerateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate", abstract: "Prefill and decode tokens/s at several batch sizes, and peak memory.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Comma-separated batch sizes.") var batches = "1,8,32"
    @Option(help: "New tokens per sequence.") var newTokens = 128
    @Option(help: "Prompt tokens per sequence.") var promptTokens = 64
    @Flag(help: "One JSON object per batch size.") var json = false
    @Option(help: "Weights the projections read: f32, or bf16 copies (half the bytes per token).") var weights: Transformer.Precision = .f32

    static let paragraph = """
        The river runs past the old mill, where the miller's daughter counts the sacks of grain each \
        morning before the market opens. Travellers from the northern towns stop to water their horses \
        and trade news of the harvest, the roads, and the price of salt. In the evening the lamps are lit \
        along the quay and the boats come home with the tide.
        """

    func run() throws {
        let sizes = try batches.split(separator: ",").map { s -> Int in
            guard let b = Int(s.trimmingCharacters(in: .whitespaces)), b > 0 else { throw ValidationError("--batches: \"\(s)\" is not a positive integer") }
            return b
        }
        let model = try modelOptions.load()
        let generator = Generator(model: try Transformer(weights: model.weights, precision: weights))
        var text = try model.tokenizer.encode(Self.paragraph)
        while text.count < promptTokens + 64 { text += text }
        if !json { print("charter bench generate: \(model.source.lastPathComponent), \(Kernel.withBLAS), \(weights.rawValue) weights, prompt \(promptTokens) tokens, \(newTokens) new tokens, greedy") }

        // Warm-up: first touches of the weights and BLAS buffers.
        _ = try generator.generate([GenerationRequest(prompt: Array(text.prefix(8)), params: SamplingParams(temperature: 0, maxNewTokens: 2))])
        for b in sizes {
            let requests = (0..<b).map { i in
                GenerationRequest(prompt: Array(text[i % 64 ..< i % 64 + promptTokens]),
                                  params: SamplingParams(temperature: 0, maxNewTokens: newTokens))
            }
            var stats = GenerationStats()
            _ = try generator.generate(requests, stats: &stats)
            let prefill = Double(stats.prefillTokens) / stats.prefillSeconds
            let decode = Double(stats.decodeTokens) / stats.decodeSeconds
            let peakMB = Double(peakResidentKB()) / 1024
            if json {
                let o: [String: Any] = ["engine": "charter", "batch": b, "prefill_tokens_per_s": prefill,
                                        "decode_tokens_per_s": decode, "peak_rss_mb": peakMB, "blas": BLAS.kernel, "weights": weights.rawValue]
                print(String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print(String(format: "charter \(weights.rawValue) batch %d: prefill %.0f tok/s, decode %.1f tok/s, peak RSS %.0f MB", b, prefill, decode, peakMB))
            }
        }
    }
}

/// Peak resident set size of this process, in KiB (Linux reports ru_maxrss in KiB).
func peakResidentKB() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_maxrss
}
