import Alignment
import Foundation
import XCTest

/// Hand-computed values; the working is in each comment.
final class PPOMathTests: XCTestCase {
    func close(_ a: [Float], _ b: [Float], _ tol: Float = 1e-5, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: tol, "\(a) vs \(b)", file: file, line: line) }
    }

    func testTokenRewardsCarryTheKLPenaltyAndTheScoreAtTheEnd() {
        // KL per token = policy - reference = [0.5, 0, 0.5]; times -0.1; score 1 added at the last token.
        close(PPOMath.tokenRewards(score: 1, policyLogprobs: [-1, -2, -0.5], referenceLogprobs: [-1.5, -2, -1], beta: 0.1), [-0.05, 0, 0.95])
    }

    func testGAE() {
        // gamma 1, lambda 0.95: deltas [0.1, 0.1, 0.3]; A2 = 0.3, A1 = 0.1 + 0.95 * 0.3 = 0.385, A0 = 0.1 + 0.95 * 0.385 = 0.46575.
        let a = PPOMath.advantages(rewards: [0, 0, 1], values: [0.5, 0.6, 0.7], gamma: 1, lambda: 0.95)
        close(a.advantages, [0.46575, 0.385, 0.3])
        close(a.returns, [0.96575, 0.985, 1.0])
        // gamma 0.9, lambda 0.5: deltas [0.54 - 0.5, 0.63 - 0.6, 1 - 0.7] = [0.04, 0.03, 0.3]; A1 = 0.03 + 0.45 * 0.3, A0 = 0.04 + 0.45 * 0.165.
        close(PPOMath.advantages(rewards: [0, 0, 1], values: [0.5, 0.6, 0.7], gamma: 0.9, lambda: 0.5).advantages, [0.11425, 0.165, 0.3])
    }

    func testWhitening() {
        // mean 2, population std sqrt(2/3) = 0.8164966
        close(PPOMath.whiten([1, 2, 3]), [-1.2247449, 0, 1.2247449])
    }

    func testClippedSurrogate() {
        let old: Float = -1
        // ratio 1.5, A = 1: min(1.5, 1.2) = 1.2 from the clipped branch: no gradient.
        var r = PPOMath.policyLoss(logp: old + logf(1.5), oldLogp: old, advantage: 1, clip: 0.2)
        XCTAssertEqual(r.loss, -1.2, accuracy: 1e-6); XCTAssertEqual(r.dLogp, 0); XCTAssertTrue(r.clipped)
        // ratio 1.5, A = -1: min(-1.5, -1.2) = -1.5, unclipped: loss 1.5, d/dlogp = -ratio * A = 1.5.
        r = PPOMath.policyLoss(logp: old + logf(1.5), oldLogp: old, advantage: -1, clip: 0.2)
        XCTAssertEqual(r.loss, 1.5, accuracy: 1e-6); XCTAssertEqual(r.dLogp, 1.5, accuracy: 1e-6); XCTAssertFalse(r.clipped)
        // ratio 1.1 inside the range, A = 2: loss -2.2, gradient -2.2.
        r = PPOMath.policyLoss(logp: old + logf(1.1), oldLogp: old, advantage: 2, clip: 0.2)
        XCTAssertEqual(r.loss, -2.2, accuracy: 1e-6); XCTAssertEqual(r.dLogp, -2.2, accuracy: 1e-6)
    }

    func testClippedValueLoss() {
        // v 1.0, old 0.5, R 2: plain (1 - 2)^2 = 1, clipped v 0.7: 1.69 wins -> 0.845, and v is outside the clip: no gradient.
        var r = PPOMath.valueLoss(value: 1, oldValue: 0.5, target: 2, clip: 0.2)
        XCTAssertEqual(r.loss, 0.845, accuracy: 1e-6); XCTAssertEqual(r.dValue, 0)
        // v 0.6 inside the clip: both branches 1.96 -> 0.98, gradient v - R = -1.4.
        r = PPOMath.valueLoss(value: 0.6, oldValue: 0.5, target: 2, clip: 0.2)
        XCTAssertEqual(r.loss, 0.98, accuracy: 1e-6); XCTAssertEqual(r.dValue, -1.4, accuracy: 1e-6)
        // v 0.1, old 0.5, R 0: plain 0.01, clipped 0.3 -> 0.09 wins -> 0.045, no gradient.
        r = PPOMath.valueLoss(value: 0.1, oldValue: 0.5, target: 0, clip: 0.2)
        XCTAssertEqual(r.loss, 0.045, accuracy: 1e-6); XCTAssertEqual(r.dValue, 0)
    }

    func testApproxKLAndExplainedVariance() {
        // (1 - 1 - 0) + (2 - 1 - ln 2) = 0.3068528, over 2
        XCTAssertEqual(PPOMath.approxKL(logRatios: [0, logf(2)]), 0.1534264, accuracy: 1e-6)
        XCTAssertEqual(PPOMath.explainedVariance(values: [1, 2, 3], returns: [1, 2, 3]), 1)
        XCTAssertEqual(PPOMath.explainedVariance(values: [2, 2, 2], returns: [1, 2, 3]), 0, accuracy: 1e-6)
    }

    func testAdaptiveKLMovesBetaTheRightWayAndSettles() {
        var c = KLController(beta: 0.1, target: 6, horizon: 10_000)
        c.update(observedKL: 12, samples: 100) // error clipped to 0.2: beta * (1 + 0.2 * 0.01)
        XCTAssertEqual(c.beta, 0.1002, accuracy: 1e-7)
        c.update(observedKL: 3, samples: 100)  // error -0.5 clipped to -0.2
        XCTAssertEqual(c.beta, 0.1002 * 0.998, accuracy: 1e-7)
        var fixed = KLController(beta: 0.1)
        fixed.update(observedKL: 100, samples: 100)
        XCTAssertEqual(fixed.beta, 0.1)
        // A policy whose KL falls as beta rises, KL = 0.6 / beta: equilibrium at beta 0.1 for target 6.
        var sim = KLController(beta: 0.02, target: 6, horizon: 1000)
        var kl: Float = 0
        for _ in 0..<400 { kl = 0.6 / sim.beta; sim.update(observedKL: kl, samples: 100) }
        XCTAssertEqual(sim.beta, 0.1, accuracy: 0.005)
        XCTAssertEqual(kl, 6, accuracy: 0.3)
    }
}
