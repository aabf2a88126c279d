import Engine
import Foundation

/// One line of metrics.jsonl.
public struct IterationMetrics: Sendable, Codable {
    public var iteration = 0, policyVersion = 0, prompts = 0, samples = 0
    public var rewardMean: Float = 0, rewardBestMean: Float = 0
    public var kl: Float = 0, beta: Float = 0
    public var policyLoss: Float?, valueLoss: Float?, entropy: Float?, approxKL: Float?, clipFraction: Float?, explainedVariance: Float?
    public var ppoEpochs: Int?, ppoMinibatches: Int?, earlyStopped: Bool?, kept: Int?
    /// PPO: whether the old values took a pass of the critic (false: scored as the samples were generated).
    public var valuePass: Bool?
    /// Rejection sampling: earlier runs' answers that were candidates with the fresh samples (RejectionPool).
    public var pooled: Int?
    public var responseTokensMean: Float = 0
    /// The reward models' raw scores, the judge's expected rating (1 to 10) and the rule rewards,
    /// before any combination or whitening.
    public var helpfulnessScoreMean: Float?, safetyScoreMean: Float?, judgeRatingMean: Float?, ruleRewardMean: Float = 0
    /// Share of responses cut off at max_new_tokens (or the context) before a stop token.
    public var truncatedFraction: Float = 0
    /// Optimizer steps refused this iteration because the gradient norm was not finite.
    public var skippedSteps = 0
    public var generationSeconds = 0.0, scoringSeconds = 0.0, referenceSeconds = 0.0, valueSeconds = 0.0, updateSeconds = 0.0, totalSeconds = 0.0
}

extension IterationMetrics {
    /// The reward and response figures of an iteration's scored samples.
    mutating func record(_ samples: [Sample]) {
        func mean(_ xs: [Float]) -> Float { xs.reduce(0, +) / Float(max(xs.count, 1)) }
        rewardMean = mean(samples.map(\.reward))
        // Prompts in order of first appearance, so the sum runs in the same order on every run.
        var best: [Int: Float] = [:], order: [Int] = []
        for s in samples {
            if best[s.promptId] == nil { order.append(s.promptId) }
            best[s.promptId] = max(best[s.promptId] ?? -.infinity, s.reward)
        }
        rewardBestMean = mean(order.map { best[$0]! })
        responseTokensMean = mean(samples.map { Float($0.response.count) })
        let h = samples.compactMap(\.scores?.helpfulness), s = samples.compactMap(\.scores?.safety)
        helpfulnessScoreMean = h.isEmpty ? nil : mean(h)
        safetyScoreMean = s.isEmpty ? nil : mean(s)
        let j = samples.compactMap(\.scores?.judgeRating)
        judgeRatingMean = j.isEmpty ? nil : mean(j)
        ruleRewardMean = mean(samples.map { $0.scores?.rules ?? 0 })
        truncatedFraction = mean(samples.map { $0.finishReason == .length ? 1 : 0 })
    }
}

/// Iterations of generate -> score -> learn -> new policy version, in one process. The rollout
/// source is a seam: the coordinator of a distributed run supplies its own.
public final class RLRun {
    public let prompts: [Prompt]
    public let promptsPerIteration: Int
    public let rollouts: RolloutSource
    public let scorer: RewardScorer
    public let learner: RLLearner
    public let seed: UInt64
    public internal(set) var iteration = 0
    public internal(set) var policyVersion = 0
    /// Prompts handed out so far: the data cursor.
    public internal(set) var cursor = 0
    /// The last iteration's scored samples, in its prompt order, then its pooled candidates.
    public private(set) var lastSamples: [Sample] = []
    /// Rejection sampling's earlier answers, candidates again for their prompts.
    public var pool = RejectionPool()

    public init(prompts: [Prompt], promptsPerIteration: Int, rollouts: RolloutSource, scorer: RewardScorer,
                learner: RLLearner, seed: UInt64) throws {
        if prompts.isEmpty { throw DataError("no prompts") }
        if promptsPerIteration < 1 { throw DataError("prompts per iteration must be at least 1") }
        if promptsPerIteration > prompts.count {
            throw DataError("prompts_per_iteration (\(promptsPerIteration)) is more than the \(prompts.count) prompts: an iteration would hold a prompt twice")
        }
        self.prompts = prompts; self.promptsPerIteration = promptsPerIteration; self.rollouts = rollouts
        self.scorer = scorer; self.learner = learner; self.seed = seed
    }

    /// Prompt indices in the order pass `pass` over the data hands them out, memoised.
    private var passOrders: [[Int]] = []

    /// Each pass is a seeded shuffle of every prompt. An iteration that straddles two passes must not
    /// hold a prompt twice, so a pass's first places go to prompts the previous pass's last
    /// iteration did not already take; the rest keep their shuffled order. The order depends only on
    /// the seed, the prompt count and the iteration size, so a resumed run draws the same prompts.
    func order(ofPass pass: Int) -> [Int] {
        while passOrders.count <= pass {
            let p = passOrders.count, n = prompts.count
            var order = Array(0..<n)
            var rng = SplitMix64(seed: SplitMix64.derive(seed, 0xDA7A, UInt64(p)))
            order.shuffle(using: &rng)
            if p > 0 {
                // The straddling iteration starts where the last whole iteration of pass p - 1 ends.
                let start = (p * n) / promptsPerIteration * promptsPerIteration
                let tail = Set(passOrders[p - 1][(start - (p - 1) * n)...])
                let head = (p * n - start) == 0 ? 0 : promptsPerIteration - (p * n - start)
                if head > 0 {
                    let first = Array(order.filter { !tail.contains($0) }.prefix(head))
                    let taken = Set(first)
                    order = first + order.filter { !taken.contains($0) }
                }
            }
            passOrders.append(order)
        }
        return passOrders[pass]
    }

    /// The next iteration's prompts: passes over the data, each in a seeded order, never a prompt twice.
    func nextPrompts() -> [Prompt] {
        (0..<promptsPerIteration).map { k in
            let n = cursor + k
            return prompts[order(ofPass: n / prompts.count)[n % prompts.count]]
        }
    }

    public func runIteration() throws -> IterationMetrics {
        var m = IterationMetrics()
        let began = ContinuousClock.now
        var clock = began
        func lap() -> Double { let now = ContinuousClock.now; defer { clock = now }; return (now - clock).seconds }
        let batch = nextPrompts()
        let fresh = try rollouts.rollouts(iteration: iteration, prompts: batch, policy: learner.generatingPolicy,
                                          valueHead: learner.generatingValueHead, policyVersion: policyVersion)
        m.generationSeconds = lap()
        let pooled = pool.candidates(for: batch, after: fresh)
        var samples = fresh + pooled
        let byId = Dictionary(batch.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        // Pooled answers are always scored here; fresh ones here unless the workers scored them.
        let unscored = rollouts.scoresSamples ? fresh.count..<samples.count : 0..<samples.count
        for (i, r) in try scorer.raw(Array(samples[unscored]), conversations: byId.mapValues(\.conversation)).enumerated() {
            samples[unscored.lowerBound + i].scores = r
        }
        // Combined over the whole iteration (whitening), however its samples were cut into tasks.
        for (i, r) in scorer.combine(samples, prompts: byId).enumerated() { samples[i].reward = r }
        m.scoringSeconds = lap()

        m.iteration = iteration; m.policyVersion = policyVersion; m.prompts = batch.count; m.samples = fresh.count
        m.record(Array(samples.prefix(fresh.count)))
        if !pool.answers.isEmpty { m.pooled = pooled.count }
        try learner.learn(from: samples, into: &m)
        _ = lap()
        lastSamples = samples
        m.totalSeconds = (ContinuousClock.now - began).seconds
        iteration += 1
        policyVersion += 1
        cursor += batch.count
        return m
    }
}
