import Engine
import XCTest

final class OptimizerTests: XCTestCase {
    /// Two AdamW steps (lr 0.1, betas 0.9/0.999, eps 1e-8, weight decay 0.01, decay before the Adam
    /// step as torch.optim.AdamW) worked out by hand:
    /// step 1: p = p * 0.999 - 0.1 * g / |g|  ->  [0.899, -1.898, 0.4995]
    /// step 2: m = [0.014, -0.008, -0.03], v = [1.249e-5, 4.996e-5, 9e-5], bias corrections 0.19 and 0.001999
    ///         ->  [0.8048831, -1.8694683, 0.5734142]
    func testTwoAdamWStepsMatchHandComputedValues() {
        let params = UnsafeMutableBufferPointer<Float>.allocate(capacity: 3), grads = UnsafeMutableBufferPointer<Float>.allocate(capacity: 3)
        defer { params.deallocate(); grads.deallocate() }
        _ = params.initialize(from: [1, -2, 0.5])
        let adam = AdamW(count: 3, settings: .init(beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, clipNorm: nil), decayRanges: [0..<3])
        _ = grads.initialize(from: [0.1, -0.2, 0])
        adam.update(params: params, grads: grads, lr: 0.1)
        for (got, want) in zip(params, [0.899, -1.898, 0.4995] as [Float]) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        _ = grads.initialize(from: [0.05, 0.1, -0.3])
        adam.update(params: params, grads: grads, lr: 0.1)
        for (got, want) in zip(params, [0.8048831, -1.8694683, 0.5734142] as [Float]) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        XCTAssertEqual(adam.step, 2)
    }

    func testGlobalNormClippingScalesGradients() {
        let params = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2), grads = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2)
        defer { params.deallocate(); grads.deallocate() }
        _ = params.initialize(from: [0, 0])
        _ = grads.initialize(from: [3, 4])
        let adam = AdamW(count: 2, settings: .init(clipNorm: 1), decayRanges: [])
        XCTAssertEqual(adam.update(params: params, grads: grads, lr: 0.01), 5)
        XCTAssertEqual(grads[0], 0.6, accuracy: 1e-7)
        XCTAssertEqual(grads[1], 0.8, accuracy: 1e-7)
        XCTAssertEqual(adam.m[1], 0.08, accuracy: 1e-7) // (1 - 0.9) * clipped gradient
    }

    /// A NaN or infinite gradient leaves parameters, moments and the step count as they were.
    func testNonFiniteGradientSkipsTheStep() {
        let params = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2), grads = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2)
        defer { params.deallocate(); grads.deallocate() }
        _ = params.initialize(from: [1, 2])
        let adam = AdamW(count: 2, settings: .init(weightDecay: 0.1, clipNorm: 1), decayRanges: [0..<2])
        _ = grads.initialize(from: [0.5, 0.5])
        adam.update(params: params, grads: grads, lr: 0.1)
        let before = (Array(params), Array(adam.m), Array(adam.v))
        for bad: Float in [.nan, .infinity] {
            _ = grads.initialize(from: [bad, 0.5])
            XCTAssertFalse(adam.update(params: params, grads: grads, lr: 0.1).isFinite)
            XCTAssertEqual(Array(params), before.0)
            XCTAssertEqual(Array(adam.m), before.1)
            XCTAssertEqual(Array(adam.v), before.2)
        }
        XCTAssertEqual(adam.step, 1)
        XCTAssertEqual(adam.skippedSteps, 2)
    }

    func testScheduleWarmsUpThenDecays() {
        let cosine = LRSchedule(peak: 1, warmupSteps: 4, totalSteps: 14, decay: .cosine, minRatio: 0.1)
        XCTAssertEqual(cosine.rate(at: 0), 0.25)
        XCTAssertEqual(cosine.rate(at: 3), 1)
        XCTAssertEqual(cosine.rate(at: 4), 1)
        XCTAssertEqual(cosine.rate(at: 9), 0.55, accuracy: 1e-6)  // halfway: 0.1 + 0.9 * 0.5
        XCTAssertEqual(cosine.rate(at: 14), 0.1, accuracy: 1e-6)
        XCTAssertEqual(cosine.rate(at: 100), 0.1, accuracy: 1e-6)
        let linear = LRSchedule(peak: 2, warmupSteps: 0, totalSteps: 10, decay: .linear, minRatio: 0)
        XCTAssertEqual(linear.rate(at: 5), 1, accuracy: 1e-6)
        XCTAssertEqual(LRSchedule(peak: 3, decay: .constant).rate(at: 50), 3)
    }

    /// A tiny model learns a fixed mapping: every even token is followed by token + 1.
    func testTrainingDrivesTheLossDown() throws {
        let config = ModelConfig(layers: 2, width: 32, heads: 4, kvHeads: 2, ffnWidth: 64, vocab: 24, ropeTheta: 10000, contextLength: 32)
        let trainer = try Trainer(weights: .random(config: config, seed: 9, std: 0.05),
                                  schedule: LRSchedule(peak: 3e-3, warmupSteps: 5, totalSteps: 120, decay: .cosine),
                                  settings: .init(weightDecay: 0.01))
        var rng = SplitMix64(seed: 4)
        func sequence() -> TrainingSequence {
            var tokens: [Int32] = []
            for _ in 0..<6 { let e = Int32(rng.next() % 12) * 2; tokens += [e, e + 1] }
            return TrainingSequence(tokens: tokens, lossMask: tokens.indices.map { $0 % 2 == 1 ? 1 : 0 })
        }
        let heldOut = (0..<8).map { _ in sequence() }
        let start = try trainer.evaluate(heldOut)
        var last: StepReport?
        for _ in 0..<120 { last = try trainer.step([(0..<4).map { _ in sequence() }, (0..<4).map { _ in sequence() }]) }
        let end = try trainer.evaluate(heldOut)
        print("tiny SFT: held-out loss \(start) -> \(end), last training loss \(last!.loss)")
        XCTAssertGreaterThan(start, 2.5) // about log(24) at random init
        XCTAssertLessThan(end, 0.1, "the pair rule is deterministic: loss should approach 0")
        XCTAssertEqual(last?.step, 120)
        XCTAssertEqual(last?.targets, 48)
    }
}
