import Engine

/// Best-of-N: keep the best samples of each prompt by reward, fine-tune the policy on them.
public struct RejectionSettings: Sendable, Codable, Equatable {
    public enum Keep: Sendable, Codable, Equatable { case best, topK(Int), above(Float) }
    public var keep: Keep = .best
    public var epochs = 1
    public var batchSize = 8
    public var learningRate: Float = 1e-5
    public var seed: UInt64 = 0
    public init() {}
}

public struct RejectionStats: Sendable {
    public var meanReward: Float = 0
    public var meanBestReward: Float = 0     // mean over prompts of their best sample's reward
    public var kept = 0
    public var skippedSteps = 0
    public var loss: Double = 0
    public var updateSeconds = 0.0
}

public final class RejectionSampler {
    public let settings: RejectionSettings
    public let trainer: Trainer
    var rng: SplitMix64
    /// The samples the last update fine-tuned on.
    public private(set) var lastKept: [Sample] = []

    public init(policy: ModelWeights, lora: LoRAAdapters? = nil, settings: RejectionSettings) throws {
        self.settings = settings
        trainer = try Trainer(weights: policy, lora: lora, schedule: LRSchedule(peak: settings.learningRate, decay: .constant))
        rng = SplitMix64(seed: SplitMix64.derive(settings.seed, 0x45))
    }

    /// The samples to learn from, by prompt, in prompt order.
    public static func select(_ samples: [Sample], keep: RejectionSettings.Keep) -> [Sample] {
        let byPrompt = Dictionary(grouping: samples, by: \.promptId)
        return byPrompt.keys.sorted().flatMap { id -> [Sample] in
            let ranked = byPrompt[id]!.sorted { $0.reward > $1.reward || ($0.reward == $1.reward && $0.index < $1.index) }
            switch keep {
            case .best: return Array(ranked.prefix(1))
            case .topK(let k): return Array(ranked.prefix(k))
            case .above(let t): return ranked.filter { $0.reward > t }
            }
        }
    }

    public func update(_ samples: [Sample]) throws -> RejectionStats {
        var stats = RejectionStats()
        let start = ContinuousClock.now, skippedBefore = trainer.optimizer.skippedSteps
        let byPrompt = Dictionary(grouping: samples, by: \.promptId)
        stats.meanReward = samples.reduce(0) { $0 + $1.reward } / Float(max(samples.count, 1))
        stats.meanBestReward = byPrompt.values.reduce(0) { $0 + $1.map(\.reward).max()! } / Float(max(byPrompt.count, 1))
        let chosen = Self.select(samples, keep: settings.keep).filter { !$0.response.isEmpty }
        stats.kept = chosen.count
        lastKept = chosen
        var losses: [Double] = []
        for _ in 0..<settings.epochs where !chosen.isEmpty {
            var order = Array(chosen.indices)
            order.shuffle(using: &rng)
            for b in stride(from: 0, to: order.count, by: settings.batchSize) {
                let batch = order[b ..< min(b + settings.batchSize, order.count)].map { chosen[$0].trainingSequence() }
                losses.append(try trainer.step([batch]).loss)
            }
        }
        stats.skippedSteps = trainer.optimizer.skippedSteps - skippedBefore
        stats.loss = losses.reduce(0, +) / Double(max(losses.count, 1))
        stats.updateSeconds = (ContinuousClock.now - start).seconds
        return stats
    }
}
