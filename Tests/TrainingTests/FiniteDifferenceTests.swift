import Engine
import XCTest

/// Gradients against central finite differences of the loss, on a tiny model with ragged
/// sequences, a partial loss mask and per-token weights. The loss is computed in float32, so the
/// step is large (1e-2) and the check is on a sample of coordinates per tensor:
/// |analytic - numeric| <= 5e-4 + 1e-2 * |numeric| (measured worst: about 5e-5).
final class FiniteDifferenceTests: XCTestCase {
    let config = ModelConfig(layers: 2, width: 16, heads: 4, kvHeads: 2, ffnWidth: 24, vocab: 40, ropeTheta: 10000, contextLength: 32)

    func batch() -> [TrainingSequence] {
        [TrainingSequence(tokens: [3, 7, 1, 39, 22, 5], lossMask: [0, 0, 1, 1, 0, 1], weights: [0, 0, 1.5, -0.7, 0, 2]),
         TrainingSequence(tokens: [9, 9, 14], lossMask: [0, 1, 1]),
         TrainingSequence(tokens: [30], lossMask: [0])]
    }

    /// The loss at a sampling temperature (log-softmax of logits / T, as PPO uses) against finite
    /// differences, same tolerance (a smaller step: the curvature grows as 1 / T^2): the 1 / T of the
    /// chain rule must reach every tensor.
    func testTemperedLossAgreesWithFiniteDifferences() throws {
        let weights = ModelWeights.random(config: config, seed: 22, std: 0.3)
        let net = try Backprop(weights: weights)
        let T: Float = 0.6
        func lossAndGradients(into grads: ModelWeights) throws -> Double {
            let pass = try net.forward(batch())
            let (report, dx) = pass.languageModelLoss(grads: grads, temperature: T)
            pass.backward(dx, grads: grads)
            dx.deallocate()
            return report.loss
        }
        let grads = ModelWeights(config: config), scratch = ModelWeights(config: config)
        let atOne = try net.forward(batch()).languageModelLoss(grads: nil, backward: false)
        atOne.1.deallocate()
        let tempered = try lossAndGradients(into: grads)
        XCTAssertGreaterThan(abs(tempered - atOne.0.loss), 1e-3, "the temperature should change the loss")
        var rng = SplitMix64(seed: 6)
        for slot in weights.layout.slots {
            for _ in 0..<4 {
                let i = slot.offset + Int(rng.next() % UInt64(slot.count))
                let saved = weights.storage[i], h: Float = 3e-3
                weights.storage[i] = saved + h; let up = try lossAndGradients(into: scratch)
                weights.storage[i] = saved - h; let down = try lossAndGradients(into: scratch)
                weights.storage[i] = saved
                let numeric = (up - down) / Double(2 * h), analytic = Double(grads.storage[i])
                XCTAssertLessThanOrEqual(abs(analytic - numeric), 5e-4 + 1e-2 * abs(numeric), "\(slot.name)[\(i - slot.offset)]: analytic \(analytic), numeric \(numeric)")
            }
        }
    }

    func testEveryParameterTensorAgreesWithFiniteDifferences() throws {
        let weights = ModelWeights.random(config: config, seed: 21, std: 0.3)
        let net = try Backprop(weights: weights)
        let grads = ModelWeights(config: config)
        _ = try net.lossAndGradients(batch(), grads: grads)
        let scratch = ModelWeights(config: config)
        func loss() throws -> Double { try net.lossAndGradients(batch(), grads: scratch).loss }

        var rng = SplitMix64(seed: 5)
        var worst = 0.0
        for slot in weights.layout.slots {
            for _ in 0..<6 {
                let i = slot.offset + Int(rng.next() % UInt64(slot.count))
                let saved = weights.storage[i], h: Float = 1e-2
                weights.storage[i] = saved + h; let up = try loss()
                weights.storage[i] = saved - h; let down = try loss()
                weights.storage[i] = saved
                let numeric = (up - down) / Double(2 * h), analytic = Double(grads.storage[i])
                let excess = abs(analytic - numeric) - (5e-4 + 1e-2 * abs(numeric))
                worst = max(worst, abs(analytic - numeric))
                XCTAssertLessThanOrEqual(excess, 0, "\(slot.name)[\(i - slot.offset)]: analytic \(analytic), numeric \(numeric)")
            }
        }
        print("finite differences: max |analytic - numeric| = \(worst)")
    }

    func testMaskedOutTokensGetNoGradientAndAccumulationAdds() throws {
        let weights = ModelWeights.random(config: config, seed: 22, std: 0.3)
        let net = try Backprop(weights: weights)
        let noTargets = ModelWeights(config: config)
        let r = try net.lossAndGradients([TrainingSequence(tokens: [1, 2, 3], lossMask: [0, 0, 0])], grads: noTargets)
        XCTAssertEqual(r.loss, 0)
        XCTAssertTrue(noTargets.storage.allSatisfy { $0 == 0 })

        // Two micro-batches with the whole batch's normaliser add up to the batch in one go.
        let all = ModelWeights(config: config), parts = ModelWeights(config: config)
        let b = batch()
        let whole = try net.lossAndGradients(b, grads: all)
        let first = try net.lossAndGradients([b[0]], grads: parts, normalizer: Double(whole.targets))
        let second = try net.lossAndGradients([b[1], b[2]], grads: parts, normalizer: Double(whole.targets))
        XCTAssertEqual(first.loss + second.loss, whole.loss, accuracy: 1e-6)
        // Equal up to float32 summation order.
        let diff = zip(all.storage, parts.storage).map { abs($0 - $1) }.max()!, scale = all.storage.map(abs).max()!
        XCTAssertLessThanOrEqual(diff, 1e-5 * scale, "max gradient difference \(diff), max gradient \(scale)")
    }

    func testBadBatchesAreRefusedByName() throws {
        let net = try Backprop(weights: ModelWeights.random(config: config, seed: 1))
        let g = ModelWeights(config: config)
        let cases: [(TrainingSequence, String)] = [
            (TrainingSequence(tokens: [1, 2], lossMask: [1, 1]), "position 0 cannot be a target"),
            (TrainingSequence(tokens: [1, 2], lossMask: [0]), "1 mask values for 2 tokens"),
            (TrainingSequence(tokens: [1, 40], lossMask: [0, 1]), "token id 40 outside the vocabulary"),
            (TrainingSequence(tokens: [], lossMask: []), "sequence 0 is empty"),
            (TrainingSequence(tokens: [1, 2], lossMask: [0, 1], weights: [1]), "1 weights for 2 tokens"),
        ]
        for (seq, message) in cases {
            XCTAssertThrowsError(try net.lossAndGradients([seq], grads: g)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
        XCTAssertTrue(g.storage.allSatisfy { $0 == 0 }, "a refused batch must not touch the gradients")
    }
}

final class ScalarHeadGradientTests: XCTestCase {
    /// loss = sum_i c_i * score_i over the last token of each sequence and over every token of the
    /// first; checked against central differences on the head and on every trunk tensor.
    func testScalarHeadAndTrunkAgreeWithFiniteDifferences() throws {
        let config = ModelConfig(layers: 1, width: 16, heads: 2, kvHeads: 1, ffnWidth: 24, vocab: 30, ropeTheta: 10000, contextLength: 16)
        let weights = ModelWeights.random(config: config, seed: 31, std: 0.3)
        let head = ScalarHead.random(width: 16, seed: 2, std: 0.5)
        head.storage[16] = 0.3
        let net = try Backprop(weights: weights)
        let batch = [TrainingSequence(tokens: [4, 8, 15, 16], lossMask: [0, 0, 0, 0]), TrainingSequence(tokens: [23, 29], lossMask: [0, 0])]
        let rows = [0, 1, 2, 3, 5]
        let coefs: [Float] = [0.5, -1, 2, 0.25, -1.5]
        func loss() throws -> Double {
            let s = try net.forward(batch).scores(head, rows: rows)
            return zip(s, coefs).reduce(0.0) { $0 + Double($1.0 * $1.1) }
        }
        let grads = ModelWeights(config: config)
        let headGrads = UnsafeMutablePointer<Float>.allocate(capacity: 17)
        headGrads.initialize(repeating: 0, count: 17)
        defer { headGrads.deallocate() }
        let pass = try net.forward(batch)
        let dx = pass.scoreBackward(head, dScores: coefs, rows: rows, headGrads: headGrads, grads: grads)
        pass.backward(dx, grads: grads)
        dx.deallocate()

        func check(_ buffer: UnsafeMutableBufferPointer<Float>, _ analytic: (Int) -> Float, _ indices: [Int], _ name: String) throws {
            for i in indices {
                let saved = buffer[i], h: Float = 1e-2
                buffer[i] = saved + h; let up = try loss()
                buffer[i] = saved - h; let down = try loss()
                buffer[i] = saved
                let numeric = (up - down) / Double(2 * h)
                XCTAssertEqual(Double(analytic(i)), numeric, accuracy: 5e-4 + 1e-2 * abs(numeric), "\(name)[\(i)]")
            }
        }
        try check(head.storage, { headGrads[$0] }, [0, 5, 15, 16], "head")
        var rng = SplitMix64(seed: 3)
        for slot in weights.layout.slots {
            try check(weights.storage, { grads.storage[$0] }, (0..<4).map { _ in slot.offset + Int(rng.next() % UInt64(slot.count)) }, slot.name)
        }
    }
}
