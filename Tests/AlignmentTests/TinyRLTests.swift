@testable import Alignment
import Engine
import Foundation
import XCTest

/// PPO and rejection sampling on a tiny random model with a rule reward: "the response contains
/// token 5". Seeded throughout, so a run repeats exactly on one machine; another BLAS kernel rounds
/// the training products differently and the sampled trajectory diverges, so the assertions are
/// margins on the learning (reward rises by 0.3 of a possible 1, KL stays bounded), not exact values.
final class TinyRLTests: XCTestCase {
    let config = ModelConfig(layers: 2, width: 32, heads: 4, kvHeads: 2, ffnWidth: 64, vocab: 16, ropeTheta: 10000, contextLength: 64)

    func makeRun(missingEOSPenalty: Float = 0, _ learner: (ModelWeights) throws -> RLLearner) throws -> RLRun {
        let policy = ModelWeights.random(config: config, seed: 11, std: 0.1)
        var rng = SplitMix64(seed: 3)
        let prompts = (0..<16).map { Prompt(id: $0, text: "", tokens: (0..<3).map { _ in Int32(6 + rng.next() % 10) }) }
        var settings = RolloutSettings()
        settings.samplesPerPrompt = 4
        settings.maxNewTokens = 4
        var scorer = RewardScorer(models: nil, rules: [(.containsToken(5), 1)], decode: { _ in "" })
        scorer.missingEOSPenalty = missingEOSPenalty
        return try RLRun(prompts: prompts, promptsPerIteration: 8, rollouts: InProcessRollouts(settings: settings, runSeed: 1),
                         scorer: scorer, learner: try learner(policy), seed: 2)
    }

    func testPPORaisesTheRewardWithBoundedKL() throws {
        var settings = PPOSettings()
        settings.learningRate = 3e-3; settings.criticLearningRate = 3e-3; settings.epochs = 2; settings.minibatchSize = 16
        settings.earlyStopKL = nil
        let run = try makeRun { policy in
            let reference = ModelWeights(config: policy.config)
            reference.storage.update(from: policy.storage)
            return try PPOTrainer(policy: policy, reference: reference, criticInit: nil, kl: KLController(beta: 0.05), settings: settings)
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
            return try PPOTrainer(policy: policy, reference: reference, criticInit: nil, kl: KLController(beta: 0.05, target: 1, horizon: 100), settings: settings)
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
        let run = try makeRun { try RejectionSampler(policy: $0, settings: settings) }
        var metrics: [IterationMetrics] = []
        for _ in 0..<10 { metrics.append(try run.runIteration()) }
        let start = metrics.prefix(2).map(\.rewardMean).reduce(0, +) / 2, end = metrics.suffix(3).map(\.rewardMean).reduce(0, +) / 3
        print("tiny rejection sampling: mean \(metrics.map(\.rewardMean)), best \(metrics.map(\.rewardBestMean))")
        XCTAssertGreaterThan(end, start + 0.3)
        XCTAssertTrue(metrics.allSatisfy { $0.rewardBestMean >= $0.rewardMean })
    }

    /// Earlier answers pooled for rejection sampling: scored with the run's reward beside the fresh
    /// samples, kept where they win, left out of the fresh samples' metrics, and pooled once when
    /// two files hold them. The fresh samples never stop (this vocabulary has no stop token), so a
    /// missing-stop penalty of 2 puts each below a pooled answer that ended with its stop token.
    func testPooledAnswersCompeteWithTheFreshSamples() throws {
        let run = try makeRun(missingEOSPenalty: 2) { try RejectionSampler(policy: $0, settings: RejectionSettings()) }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("charter-pool-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // Answers for the even prompts only: one that stopped, one cut off (penalised like the fresh ones).
        let lines = run.prompts.filter { $0.id % 2 == 0 }.flatMap { p in
            ["{\"prompt_tokens\": \(p.tokens), \"response_tokens\": [5, 5], \"truncated\": false}",
             "{\"prompt_tokens\": \(p.tokens), \"response_tokens\": [6, 5, 6, 7], \"truncated\": true}"]
        }.joined(separator: "\n")
        let files = ["a", "b"].map { dir.appendingPathComponent("\($0).jsonl").path }
        for f in files { try lines.write(toFile: f, atomically: true, encoding: .utf8) }
        run.pool = try RejectionPool.load(files, vocab: 16, maxNewTokens: 4)
        XCTAssertEqual(run.pool.count, 16, "the second file repeats the first")

        let m = try run.runIteration()
        let batch = Set(run.lastSamples.map(\.promptId)), even = batch.filter { $0 % 2 == 0 }
        XCTAssertEqual(m.samples, 32)
        XCTAssertEqual(m.pooled, 2 * even.count)
        let fresh = run.lastSamples.filter { $0.pooledFrom == nil }, pooled = run.lastSamples.filter { $0.pooledFrom != nil }
        XCTAssertEqual(fresh.count, 32)
        XCTAssertTrue(fresh.allSatisfy { $0.finishReason == .length && $0.reward <= -1 })
        XCTAssertEqual(pooled.map(\.reward), [Float](repeating: 1, count: even.count).flatMap { [$0, -1] }, "[5, 5]: 1; [6, 5, 6, 7] cut off: 1 - 2")
        XCTAssertTrue(pooled.allSatisfy { $0.pooledFrom == files[0] && $0.index >= 4 })
        XCTAssertEqual(m.rewardMean, fresh.map(\.reward).reduce(0, +) / 32, accuracy: 1e-6, "the metrics are the fresh samples'")
        let kept = (run.learner as! RejectionSampler).lastKept
        XCTAssertEqual(kept.count, 8)
        for s in kept {
            if s.promptId % 2 == 0 {
                XCTAssertEqual(s.response, [5, 5], "prompt \(s.promptId): the pooled answer that stopped wins")
                XCTAssertEqual(s.pooledFrom, files[0])
            } else {
                XCTAssertNil(s.pooledFrom, "prompt \(s.promptId) has no pooled answer")
                XCTAssertEqual(s.reward, fresh.filter { $0.promptId == s.promptId }.map(\.reward).max())
            }
        }
        XCTAssertFalse(even.isEmpty || even.count == batch.count, "the batch has prompts with and without pooled answers")
    }

    func testBadPoolFilesAreOneLineNamingTheLine() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("charter-pool-\(UUID()).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let cases: [(String, String)] = [
            ("{\"prompt_tokens\": [1], \"response_tokens\": [2]}\n{broken", "line 2: not valid JSON"),
            ("{\"response_tokens\": [2]}", "line 1: \"prompt_tokens\" must be a list of token ids below the vocabulary size 16"),
            ("{\"prompt_tokens\": [1], \"response_tokens\": [16]}", "\"response_tokens\" must be a list of token ids below the vocabulary size 16"),
            ("{\"prompt_tokens\": [1], \"response_tokens\": [\"a\"]}", "\"response_tokens\" must be a list"),
            ("{\"prompt_tokens\": [1], \"response_tokens\": []}", "line 1: empty prompt_tokens or response_tokens"),
            ("{\"prompt_tokens\": [1], \"response_tokens\": [1, 2, 3, 4, 5]}", "the response has 5 tokens, more than rollout.max_new_tokens (4)"),
        ]
        for (text, message) in cases {
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try RejectionPool.load([file], vocab: 16, maxNewTokens: 4), text) { error in
                XCTAssertTrue("\(error)".contains(message), "\(text): \(error)")
                XCTAssertFalse("\(error)".contains("\n"), "one line: \(error)")
            }
        }
        XCTAssertThrowsError(try RejectionPool.load(["/nonexistent/kept.jsonl"], vocab: 16, maxNewTokens: 4)) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/kept.jsonl: cannot read"), "\(error)")
        }
    }

    /// Samples drawn at temperature T carry log-probs of softmax(logits / T); the reference pass and
    /// the training pass at T give the same numbers (so PPO's ratios and KL are on-policy), and at
    /// T = 1 they would not.
    func testLogprobsAreOfTheDistributionSampledFrom() throws {
        let T: Float = 0.5
        var settings = RolloutSettings()
        settings.samplesPerPrompt = 3; settings.maxNewTokens = 6; settings.temperature = T
        let policy = ModelWeights.random(config: config, seed: 4, std: 0.3)
        let prompts = (0..<3).map { Prompt(id: $0, text: "", tokens: [Int32(6 + $0), 7, 8]) }
        let samples = try InProcessRollouts(settings: settings, runSeed: 2).rollouts(iteration: 0, prompts: prompts, policy: policy, policyVersion: 0)
        let reference = try ReferenceLogprobs.compute(try Transformer(weights: policy), samples: samples, temperature: T)
        let pass = try Backprop(weights: policy).forward(samples.map { $0.trainingSequence() })
        let (training, dx) = pass.languageModelLoss(grads: nil, backward: false, temperature: T)
        dx.deallocate()
        let (raw, dx1) = pass.languageModelLoss(grads: nil, backward: false)
        dx1.deallocate()
        var worst: Float = 0, rawGap: Float = 0
        for (i, s) in samples.enumerated() {
            for t in s.response.indices {
                let p = s.prompt.count + t
                worst = max(worst, abs(s.logprobs[t] - reference[i][t]), abs(s.logprobs[t] - training.logprobs[i][p]))
                rawGap = max(rawGap, abs(s.logprobs[t] - raw.logprobs[i][p]))
            }
        }
        XCTAssertLessThan(worst, 1e-4, "sampler, reference and training log-probs at T")
        XCTAssertGreaterThan(rawGap, 1e-2, "the untempered log-probs are another distribution")
    }

    /// With the value head on the policy trunk, the values scored as the samples are generated (on
    /// the inference engine, LoRA merged in) are those the training pass gives (LoRA apart), to
    /// float32 rounding, so PPO takes them and makes no value pass; a separate critic still makes one.
    func testValuesScoredAtGenerationAreTheValuePassValues() throws {
        var settings = PPOSettings()
        settings.critic = .head; settings.epochs = 1; settings.minibatchSize = 8
        let policy = ModelWeights.random(config: config, seed: 5, std: 0.1)
        let lora = try LoRAAdapters(config: LoRAConfig(rank: 4), model: config)
        var rng = SplitMix64(seed: 3)
        for i in 0..<lora.count { lora.storage[i] = 0.1 * rng.nextNormal() } // non-zero B: the merge matters
        let ppo = try PPOTrainer(policy: policy, lora: lora, reference: policy.copy(), criticInit: nil, kl: KLController(beta: 0.05), settings: settings)
        let head = ScalarHead.random(width: config.width, seed: 8, std: 0.5)
        withExtendedLifetime(head) { _ = ppo.valueHead.storage.update(from: head.storage) }
        let prompts = (0..<4).map { Prompt(id: $0, text: "", tokens: [Int32(6 + $0), 7, 8]) }
        var rollout = RolloutSettings()
        rollout.samplesPerPrompt = 2; rollout.maxNewTokens = 5
        var samples = try InProcessRollouts(settings: rollout, runSeed: 1).rollouts(
            iteration: 0, prompts: prompts, policy: ppo.generatingPolicy, valueHead: ppo.generatingValueHead, policyVersion: 0)
        let pass = try ppo.values(samples.map { $0.trainingSequence() })
        var worst: Float = 0
        for (s, v) in zip(samples, pass) {
            XCTAssertEqual(s.values?.count, s.response.count)
            worst = max(worst, zip(s.values ?? [], v).map { abs($0 - $1) }.max() ?? .infinity)
        }
        XCTAssertLessThan(worst, 1e-4, "values at generation vs the training pass")
        let all = pass.flatMap { $0 }
        XCTAssertGreaterThan(all.max()! - all.min()!, 0.1, "the head should tell the rows apart")
        for i in samples.indices { samples[i].reward = Float(i % 2) }
        XCTAssertFalse(try ppo.update(samples).valuePass)

        settings.critic = .separate
        let separate = try PPOTrainer(policy: policy, reference: policy.copy(), criticInit: nil, kl: KLController(beta: 0.05), settings: settings)
        XCTAssertNil(separate.generatingValueHead)
        XCTAssertTrue(try separate.update(samples).valuePass, "a separate critic is another model: its values need its own pass")
    }

    /// Early stop acts after the minibatch whose approximate KL passes 1.5 x the limit, within an
    /// epoch: with one epoch of four minibatches it stops after the second (the first is measured
    /// before any step, at a KL of rounding noise).
    func testEarlyStopActsWithinAnEpoch() throws {
        var settings = PPOSettings()
        settings.learningRate = 3e-2; settings.epochs = 1; settings.minibatchSize = 8; settings.critic = .head
        settings.earlyStopKL = 1e-6
        let policy = ModelWeights.random(config: config, seed: 11, std: 0.1)
        let ppo = try PPOTrainer(policy: policy, reference: policy.copy(), criticInit: nil, kl: KLController(beta: 0.05), settings: settings)
        let prompts = (0..<8).map { Prompt(id: $0, text: "", tokens: [Int32(6 + $0), 7, 8]) }
        var rollout = RolloutSettings()
        rollout.samplesPerPrompt = 4; rollout.maxNewTokens = 4
        var samples = try InProcessRollouts(settings: rollout, runSeed: 1).rollouts(iteration: 0, prompts: prompts, policy: policy, policyVersion: 0)
        for i in samples.indices { samples[i].reward = Float(i % 3) }
        let stats = try ppo.update(samples)
        XCTAssertTrue(stats.earlyStopped)
        XCTAssertEqual(stats.minibatches, 2)
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
