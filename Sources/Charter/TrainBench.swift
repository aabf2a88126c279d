import ArgumentParser
import Engine
import Foundation

struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Training tokens/s of a full step (forward, backward, AdamW) and peak memory.")

    enum Mode: String, ExpressibleByArgument { case full, lora }

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "full or lora.") var mode: Mode = .full
    @Option(help: "Sequences per step.") var batch = 8
    @Option(help: "Tokens per sequence.") var length = 256
    @Option(help: "LoRA rank (all seven projections).") var loraRank = 16
    @Option(help: "Timed steps, after one warm-up step.") var steps = 3
    @Flag(help: "One JSON object.") var json = false

    func run() throws {
        let model = try modelOptions.load()
        var rng = SplitMix64(seed: 1)
        let sequences = (0..<batch).map { _ in
            TrainingSequence(tokens: (0..<length).map { _ in Int32(rng.next() % UInt64(model.config.vocab)) },
                             lossMask: [0] + [Float](repeating: 1, count: length - 1))
        }
        let lora = mode == .lora ? try LoRAAdapters(config: LoRAConfig(rank: loraRank), model: model.config) : nil
        lora?.initialize(seed: 2)
        let trainer = try Trainer(weights: model.weights, lora: lora, schedule: LRSchedule(peak: 1e-5, decay: .constant))
        _ = try trainer.step([sequences])
        let start = ContinuousClock.now
        for _ in 0..<steps { _ = try trainer.step([sequences]) }
        let seconds = (ContinuousClock.now - start).seconds / Double(steps)
        let tokensPerSecond = Double(batch * length) / seconds
        let peakMB = Double(peakResidentKB()) / 1024
        if json {
            let o: [String: Any] = ["engine": "charter", "mode": mode.rawValue, "batch": batch, "length": length,
                                    "tokens_per_s": tokensPerSecond, "seconds_per_step": seconds, "peak_rss_mb": peakMB]
            print(String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("charter bench train: \(model.source.lastPathComponent), \(Kernel.withBLAS)")
            print(String(format: "charter train %@ batch %dx%d: %.1f tokens/s (%.2f s/step), peak RSS %.0f MB",
                         mode == .full ? "full" : "lora r\(loraRank)", batch, length, tokensPerSecond, seconds, peakMB))
        }
    }
}
