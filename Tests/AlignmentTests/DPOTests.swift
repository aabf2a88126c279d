import Alignment
import Engine
import Foundation
import XCTest

/// DPO: the loss against values computed by hand (Python's math module, shown in comments), the
/// pair's loss against log-probs from the inference engine (an independent forward pass), the
/// gradient against central finite differences, and learning on a synthetic preference.
final class DPOTests: XCTestCase {
    let config = ModelConfig(layers: 1, width: 32, heads: 4, kvHeads: 2, ffnWidth: 64, vocab: 16, ropeTheta: 10000, contextLength: 32)

    func testLossAndDerivativeMatchHandComputedValues() {
        // -(q log s(h) + (1 - q) log s(-h)) and s(h) - q, s the logistic function.
        for (h, q, loss, dh) in [(Float(0.3), Float(1), 0.554355244, Float(-0.425557483)),
                                 (0.3, 0.8, 0.614355244, -0.225557483),
                                 (-2, 0.9, 1.926928011, -0.780797078),
                                 (0, 0.5, 0.693147181, 0)] {
            let r = DPOMath.loss(h: h, label: q)
            XCTAssertEqual(r.loss, loss, accuracy: 1e-6, "h \(h) q \(q)")
            XCTAssertEqual(r.dh, dh, accuracy: 1e-6, "h \(h) q \(q)")
        }
        XCTAssertEqual(DPOMath.smoothed(1, 0.1), 0.9, accuracy: 1e-7)
        XCTAssertEqual(DPOMath.smoothed(0.25, 0.2), 0.35, accuracy: 1e-7)
        // Far from 0 the loss stays finite (log-sigmoid without overflow).
        XCTAssertEqual(DPOMath.loss(h: -200, label: 1).loss, 200, accuracy: 1e-3)
    }

    /// A sequence of prompt + answer with the loss mask on the answer.
    func sequence(_ prompt: [Int32], _ answer: [Int32]) -> TrainingSequence {
        TrainingSequence(tokens: prompt + answer, lossMask: prompt.map { _ in 0 } + answer.map { _ in 1 })
    }

    func twoPairs() -> [DPOPair] {
        [DPOPair(chosen: sequence([1, 2, 3], [4, 5]), rejected: sequence([1, 2, 3], [6, 7, 8]), pChosen: 0.8),
         DPOPair(chosen: sequence([9, 3], [10, 11, 2]), rejected: sequence([9, 3], [12]), pChosen: 1)]
    }

    /// A policy and a reference that differ (beta 0.5, smoothing 0.1), and the two pairs scored under the reference.
    func twoPairsUnderTwoModels() throws -> (DPOTrainer, [DPOPair], policy: ModelWeights, reference: ModelWeights) {
        let reference = ModelWeights.random(config: config, seed: 1, std: 0.2), policy = ModelWeights.random(config: config, seed: 2, std: 0.2)
        var settings = DPOSettings()
        settings.beta = 0.5; settings.labelSmoothing = 0.1
        let dpo = try DPOTrainer(policy: policy, reference: reference, schedule: LRSchedule(peak: 1e-3, decay: .constant), settings: settings)
        var pairs = twoPairs()
        try dpo.scoreReference(&pairs)
        return (dpo, pairs, policy, reference)
    }

    func testTheLossOfTwoPairsMatchesLogprobsFromTheInferenceEngine() throws {
        let (dpo, pairs, policy, reference) = try twoPairsUnderTwoModels()
        let settings = dpo.settings
        let loss = try dpo.evaluate(pairs).loss

        // The same from the inference engine's log-probs and the formula.
        func logprob(_ weights: ModelWeights, _ s: TrainingSequence) throws -> Float {
            let k = s.lossMask.firstIndex(of: 1)!
            let sample = Sample(promptId: 0, index: 0, prompt: Array(s.tokens[..<k]), response: Array(s.tokens[k...]), logprobs: [], policyVersion: 0, seed: 0)
            return try ReferenceLogprobs.compute(Transformer(weights: weights), samples: [sample])[0].reduce(0, +)
        }
        var expected = 0.0
        for pair in pairs {
            XCTAssertEqual(pair.referenceChosen, try logprob(reference, pair.chosen), accuracy: 1e-4)
            let h = settings.beta * ((try logprob(policy, pair.chosen) - logprob(reference, pair.chosen))
                                     - (try logprob(policy, pair.rejected) - logprob(reference, pair.rejected)))
            let q = (1 - 0.1) * pair.pChosen + 0.1 * (1 - pair.pChosen)
            let s = 1 / (1 + exp(-Double(h)))
            expected += -(Double(q) * log(s) + Double(1 - q) * log(1 - s)) / 2
        }
        XCTAssertEqual(loss, expected, accuracy: 1e-4)
        XCTAssertGreaterThan(abs(loss - log(2)), 1e-3, "policy and reference differ, so the loss is not log 2")
    }

    func testTheGradientMatchesFiniteDifferences() throws {
        let (dpo, pairs, policy, _) = try twoPairsUnderTwoModels()
        _ = try dpo.gradient(pairs)
        let grads = Array(dpo.trainer.grads)
        // The parameters with the largest gradients, and a few at random.
        var rng = SplitMix64(seed: 7)
        let top = grads.indices.sorted { abs(grads[$0]) > abs(grads[$1]) }.prefix(6)
        let picks = Array(top) + (0..<6).map { _ in Int(rng.next() % UInt64(grads.count)) }
        let eps: Float = 1e-2
        for i in picks {
            let saved = policy.storage[i]
            policy.storage[i] = saved + eps
            let up = try dpo.evaluate(pairs).loss
            policy.storage[i] = saved - eps
            let down = try dpo.evaluate(pairs).loss
            policy.storage[i] = saved
            let numeric = (up - down) / Double(2 * eps)
            XCTAssertEqual(Double(grads[i]), numeric, accuracy: 2e-3 + 0.05 * abs(numeric), "parameter \(i)")
        }
    }

    func testAnEvenLabelAtTheReferenceGivesNoGradient() throws {
        let policy = ModelWeights.random(config: config, seed: 2, std: 0.2)
        let dpo = try DPOTrainer(policy: policy, schedule: LRSchedule(peak: 1e-3, decay: .constant), settings: DPOSettings())
        var pairs = twoPairs().map { p -> DPOPair in var p = p; p.pChosen = 0.5; return p }
        try dpo.scoreReference(&pairs)
        XCTAssertEqual(try dpo.gradient(pairs), log(2), accuracy: 1e-6, "policy = reference: h = 0")
        XCTAssertEqual(dpo.trainer.grads.map(abs).max(), 0)
    }

    /// Chosen answers end in token 5, rejected ones in token 7: after training, held-out pairs are
    /// ranked right by the implicit reward and the loss is well below log 2.
    func testDPOLearnsASyntheticPreference() throws {
        var rng = SplitMix64(seed: 3)
        func pair() -> DPOPair {
            let prompt = (0..<3).map { _ in Int32(8 + rng.next() % 8) }, body = Int32(1 + rng.next() % 3)
            return DPOPair(chosen: sequence(prompt, [body, 5]), rejected: sequence(prompt, [body, 7]))
        }
        var train = (0..<16).map { _ in pair() }, heldOut = (0..<8).map { _ in pair() }
        var settings = DPOSettings()
        settings.beta = 0.5; settings.batchSize = 8; settings.microBatchSize = 4
        let dpo = try DPOTrainer(policy: .random(config: config, seed: 4, std: 0.1), schedule: LRSchedule(peak: 3e-3, decay: .constant), settings: settings)
        try dpo.scoreReference(&train)
        try dpo.scoreReference(&heldOut)
        let before = try dpo.evaluate(heldOut)
        XCTAssertEqual(before.loss, log(2), accuracy: 1e-6)
        for _ in 0..<20 { for start in stride(from: 0, to: 16, by: 8) { _ = try dpo.step(Array(train[start ..< start + 8])) } }
        let after = try dpo.evaluate(heldOut)
        XCTAssertEqual(after.accuracy, 1)
        XCTAssertLessThan(after.loss, 0.3)
        XCTAssertGreaterThan(after.margin, 0)
    }

    func testBadSettingsAreRefusedByName() {
        var s = DPOSettings()
        s.beta = 0
        XCTAssertThrowsError(try s.validate()) { XCTAssertEqual("\($0)", "beta must be a positive number, found 0.0") }
        s = DPOSettings(); s.labelSmoothing = 0.5
        XCTAssertThrowsError(try s.validate()) { XCTAssertEqual("\($0)", "label smoothing must be in [0, 0.5), found 0.5") }
    }
}
