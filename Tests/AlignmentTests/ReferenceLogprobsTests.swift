import Alignment
import Engine
import XCTest

final class ReferenceLogprobsTests: XCTestCase {
    let config = ModelConfig(layers: 2, width: 32, heads: 4, kvHeads: 2, ffnWidth: 64, vocab: 32, ropeTheta: 10000, contextLength: 64)

    func samples() -> [Sample] {
        var rng = SplitMix64(seed: 9)
        return (0..<7).map { k in
            let prompt = (0..<(3 + k % 4)).map { _ in Int32(rng.next() % 32) }
            let response = (0..<(1 + k % 5)).map { _ in Int32(rng.next() % 32) }
            return Sample(promptId: k, index: 0, prompt: prompt, response: response, logprobs: response.map { _ in 0 }, policyVersion: 0, seed: 0)
        }
    }

    /// Bitwise the same however the samples are grouped (so a worker's task cut cannot change them),
    /// and within 1e-4 of the training forward pass, an independent implementation.
    func testGroupingDoesNotChangeTheResultAndTrainingAgrees() throws {
        let weights = ModelWeights.random(config: config, seed: 4)
        let model = try Transformer(weights: weights)
        let one = try ReferenceLogprobs.compute(model, samples: samples(), group: 1)
        XCTAssertEqual(try ReferenceLogprobs.compute(model, samples: samples(), group: 3), one)
        XCTAssertEqual(try ReferenceLogprobs.compute(model, samples: samples(), group: 7), one)
        let backprop = try Backprop(weights: weights)
        for (s, got) in zip(samples(), one) {
            XCTAssertEqual(got.count, s.response.count)
            let (report, dx) = try backprop.forward([s.trainingSequence()]).languageModelLoss(grads: nil, backward: false)
            dx.deallocate()
            let expected = Array(report.logprobs[0][s.prompt.count...])
            for (a, b) in zip(got, expected) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        }
    }
}
