import Engine
import Foundation

/// The learning step of an iteration.
public enum RLAlgorithm {
    case ppo(PPOTrainer)
    case rejection(RejectionSampler)

    var policy: ModelWeights {
        switch self {
        case .ppo(let p): return p.policy.weights
        case .rejection(let r): return r.trainer.weights
        }
    }

    var lora: LoRAAdapters? {
        switch self {
        case .ppo(let p): return p.policy.lora
        case .rejection(let r): return r.trainer.lora
        }
    }
}

/// One line of metrics.jsonl.
public struct IterationMetrics: Sendable, Codable {
    public var iteration = 0, policyVersion = 0, prompts = 0, samples = 0
    public var rewardMean: Float = 0, rewardBestMean: Float = 0
    public var kl: Float = 0, beta: Float = 0
    public var policyLoss: Float?, valueLoss: Float?, entropy: Float?, approxKL: Float?, clipFraction: Float?, explainedVariance: Float?
    public var ppoEpochs: Int?, earlyStopped: Bool?, kept: Int?
    public var responseTokensMean: Float = 0
    public var generationSeconds = 0.0, scoringSeconds = 0.0, referenceSeconds = 0.0, valueSeconds = 0.0, updateSeconds = 0.0, totalSeconds = 0.0
}

/// Iterations of generate -> score -> learn -> new policy version, in one process. The rollout
/// source is a seam: the coordinator of a distributed run supplies its own.
public final class RLRun {
    public let prompts: [Prompt]
    public let promptsPerIteration: Int
    public let rollouts: RolloutSource
    public let scorer: RewardScorer
    public let algorithm: RLAlgorithm
    public let seed: UInt64
    public internal(set) var iteration = 0
    public internal(set) var policyVersion = 0
    /// Prompts handed out so far: the data cursor.
    public internal(set) var cursor = 0

    public init(prompts: [Prompt], promptsPerIteration: Int, rollouts: RolloutSource, scorer: RewardScorer,
                algorithm: RLAlgorithm, seed: UInt64) throws {
        if prompts.isEmpty { throw DataError("no prompts") }
        if promptsPerIteration < 1 { throw DataError("prompts per iteration must be at least 1") }
        self.prompts = prompts; self.promptsPerIteration = promptsPerIteration; self.rollouts = rollouts
        self.scorer = scorer; self.algorithm = algorithm; self.seed = seed
    }

    /// The next prompts: passes over the data, each in a seeded order.
    func nextPrompts() -> [Prompt] {
        (0..<promptsPerIteration).map { k in
            let n = cursor + k, pass = n / prompts.count
            var order = Array(prompts.indices)
            var rng = SplitMix64(seed: SplitMix64.derive(seed, 0xDA7A, UInt64(pass)))
            order.shuffle(using: &rng)
            return prompts[order[n % prompts.count]]
        }
    }

    /// The policy that generates: the weights with any LoRA adapters merged in.
    func generatingPolicy() -> ModelWeights {
        algorithm.lora?.merged(with: algorithm.policy) ?? algorithm.policy
    }

    public func runIteration() throws -> IterationMetrics {
        var m = IterationMetrics()
        let began = ContinuousClock.now
        var clock = began
        func lap() -> Double { let now = ContinuousClock.now; defer { clock = now }; return (now - clock).seconds }
        let batch = nextPrompts()
        var samples = try rollouts.rollouts(iteration: iteration, prompts: batch, policy: generatingPolicy(), policyVersion: policyVersion)
        m.generationSeconds = lap()
        let byId = Dictionary(batch.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        if !rollouts.scoresSamples {
            let rewards = try scorer.score(samples, prompts: byId)
            for i in samples.indices { samples[i].reward = rewards[i] }
        }
        let rewards = samples.map(\.reward)
        m.scoringSeconds = lap()

        m.iteration = iteration; m.policyVersion = policyVersion; m.prompts = batch.count; m.samples = samples.count
        m.rewardMean = rewards.reduce(0, +) / Float(max(rewards.count, 1))
        let best = Dictionary(grouping: samples, by: \.promptId).values.map { $0.map(\.reward).max()! }
        m.rewardBestMean = best.reduce(0, +) / Float(max(best.count, 1))
        m.responseTokensMean = Float(samples.reduce(0) { $0 + $1.response.count }) / Float(max(samples.count, 1))
        switch algorithm {
        case .ppo(let ppo):
            let s = try ppo.update(samples)
            m.kl = s.meanKL; m.beta = s.beta; m.policyLoss = s.policyLoss; m.valueLoss = s.valueLoss; m.entropy = s.entropy
            m.approxKL = s.approxKL; m.clipFraction = s.clipFraction; m.explainedVariance = s.explainedVariance
            m.ppoEpochs = s.epochs; m.earlyStopped = s.earlyStopped
            m.referenceSeconds = s.referenceSeconds; m.valueSeconds = s.valueSeconds; m.updateSeconds = s.updateSeconds
        case .rejection(let rs):
            let s = try rs.update(samples)
            m.kept = s.kept; m.updateSeconds = s.updateSeconds
        }
        _ = lap()
        m.totalSeconds = (ContinuousClock.now - began).seconds
        iteration += 1
        policyVersion += 1
        cursor += batch.count
        return m
    }
}
