import Alignment
import Engine
import Foundation
import XCTest

/// PPO and rejection sampling on a tiny random model with a rule reward: "the response contains
/// token 5". Seeded throughout, so a run repeats exactly on one machine; another BLAS kernel rounds
/// the training products differently and the sampled trajectory diverges, so the assertions are
/// margins on the learning (reward rises by 0.3 of a possible 1, KL stays bounded), not exact values.
final class TinyRLTests: XCTestCase {
    let config = ModelConfig(layers: 2, width: 32, heads: 4, kvHeads: 2, ffnWidth: 64, vocab: 16, ropeTheta: 10000, contextLength: 64)

    func makeRun(_ algorithm: (ModelWeights) throws -> RLAlgorithm) throws -> RLRun {
        let policy = ModelWeights.random(config: config, seed: 11, std: 0.1)
        var rng = SplitMix64(seed: 3)
        let prompts = (0..<16).map { Prompt(id: $0, text: "", tokens: (0..<3).map { _ in Int32(6 + rng.next() % 10) }) }
        var settings = RolloutSettings()
        settings.samplesPerPrompt = 4
        settings.maxNewTokens = 4
        let scorer = RewardScorer(models: nil, rules: [(.containsToken(5), 1)], decode: { _ in "" })
        return try RLRun(prompts: prompts, promptsPerIteration: 8, rollouts: InProcessRollouts(settings: settings, runSeed: 1),
                         scorer: scorer, algorithm: try algorithm(policy), seed: 2)
    }

    func testPPORaisesTheRewardWithBoundedKL() throws {
        var settings = PPOSettings()
        settings.learningRate = 3e-3; settings.criticLearningRate = 3e-3; settings.epochs = 2; settings.minibatchSize = 16
        settings.earlyStopKL = nil
        let run = try makeRun { policy in
            let reference = ModelWeights(config: policy.config)
            reference.storage.update(from: policy.storage)
            return .ppo(try PPOTrainer(policy: policy, reference: reference, criticInit: nil, kl: KLController(beta: 0.05), settings: settings))
        }
        var metrics: [IterationMetrics] = []
        for _ in 0..<12 { metrics.append(try run.runIteration()) }
        let start = metrics.prefix(2).map(\.rewardMean).reduce(0, +) / 2, end = metrics.suffix(3).map(\.rewardMean).reduce(0, +) / 3
        print("tiny PPO: reward \(metrics.map(\.rewardMean)), KL \(metrics.map(\.kl))")
        XCTAssertGreaterThan(end, start + 0.3, "mean reward should rise clearly")
        // With beta 0.05 the KL-regularised optimum puts nearly all mass on rewarded responses, a KL
        // of about -log P_ref(reward) (1.5 to 3 nats here); PPO should approach it, not run away.
        XCTAssertLessThan(metrics.map(\.kl).max()!, 6, "KL to the reference should stay bounded (nats per response)")
        XCTAssertLessThan(metrics.suffix(3).map(\.kl).reduce(0, +) / 3, 4)
        XCTAssertEqual(metrics.last?.policyVersion, 11)
        XCTAssertTrue(metrics.allSatisfy { $0.entropy! > 0 && $0.clipFraction! >= 0 && $0.ppoEpochs == 2 })
    }

    func testPPOWithAValueHeadOnThePolicyTrunkAlsoLearns() throws {
        var settings = PPOSettings()
        settings.learningRate = 3e-3; settings.epochs = 2; settings.minibatchSize = 16; settings.critic = .head
        let run = try makeRun { policy in
            let reference = ModelWeights(config: policy.config)
            reference.storage.update(from: policy.storage)
            return .ppo(try PPOTrainer(policy: policy, reference: reference, criticInit: nil, kl: KLController(beta: 0.05, target: 1, horizon: 100), settings: settings))
        }
        var metrics: [IterationMetrics] = []
        for _ in 0..<12 { metrics.append(try run.runIteration()) }
        let start = metrics.prefix(2).map(\.rewardMean).reduce(0, +) / 2, end = metrics.suffix(3).map(\.rewardMean).reduce(0, +) / 3
        print("tiny PPO (value head): reward \(metrics.map(\.rewardMean)), beta \(metrics.map(\.beta))")
        XCTAssertGreaterThan(end, start + 0.3)
    }

    func testRejectionSamplingRaisesTheReward() throws {
        var settings = RejectionSettings()
        settings.learningRate = 3e-3; settings.batchSize = 8; settings.epochs = 2
        let run = try makeRun { .rejection(try RejectionSampler(policy: $0, settings: settings)) }
        var metrics: [IterationMetrics] = []
        for _ in 0..<10 { metrics.append(try run.runIteration()) }
        let start = metrics.prefix(2).map(\.rewardMean).reduce(0, +) / 2, end = metrics.suffix(3).map(\.rewardMean).reduce(0, +) / 3
        print("tiny rejection sampling: mean \(metrics.map(\.rewardMean)), best \(metrics.map(\.rewardBestMean))")
        XCTAssertGreaterThan(end, start + 0.3)
        XCTAssertTrue(metrics.allSatisfy { $0.rewardBestMean >= $0.rewardMean })
    }

    func testSelectionKeepsTheBestPerPrompt() {
        func s(_ p: Int, _ i: Int, _ r: Float) -> Sample {
            var x = Sample(promptId: p, index: i, prompt: [1], response: [2], logprobs: [0], policyVersion: 0, seed: 0)
            x.reward = r
            return x
        }
        let all = [s(0, 0, 0.1), s(0, 1, 0.9), s(0, 2, 0.5), s(1, 0, 0.3), s(1, 1, 0.3)]
        XCTAssertEqual(RejectionSampler.select(all, keep: .best).map { [$0.promptId, $0.index] }, [[0, 1], [1, 0]])
        XCTAssertEqual(RejectionSampler.select(all, keep: .topK(2)).map { [$0.promptId, $0.index] }, [[0, 1], [0, 2], [1, 0], [1, 1]])
        XCTAssertEqual(RejectionSampler.select(all, keep: .above(0.4)).map { [$0.promptId, $0.index] }, [[0, 1], [0, 2]])
    }

    func testRolloutSeedsDependOnlyOnIterationPromptAndSample() throws {
        var settings = RolloutSettings()
        settings.samplesPerPrompt = 2; settings.maxNewTokens = 5
        let source = InProcessRollouts(settings: settings, runSeed: 9)
        let policy = ModelWeights.random(config: config, seed: 1, std: 0.1)
        let prompts = (0..<4).map { Prompt(id: $0, text: "", tokens: [Int32(6 + $0), 7, 8]) }
        let together = try source.rollouts(iteration: 3, prompts: prompts, policy: policy, policyVersion: 3)
        let apart = try prompts.reversed().flatMap { try source.rollouts(iteration: 3, prompts: [$0], policy: policy, policyVersion: 3) }
        for s in together {
            let twin = apart.first { $0.promptId == s.promptId && $0.index == s.index }!
            XCTAssertEqual(s, twin)
        }
    }
}
