import Engine
import Foundation
import XCTest

final class SamplingTests: XCTestCase {
    /// Probabilities 1/6, 2/6, 3/6 at temperature 1.
    let logits: [Float] = [0, Float(log(2.0)), Float(log(3.0))]

    func sample(_ params: SamplingParams, _ rng: inout SplitMix64) -> SampledToken {
        logits.withUnsafeBufferPointer { Sampler.sample(logits: $0.baseAddress!, vocab: 3, params: params, rng: &rng) }
    }

    func frequencies(_ params: SamplingParams, draws: Int = 60_000) -> [Double] {
        var rng = SplitMix64(seed: 42)
        var counts = [0, 0, 0]
        for _ in 0..<draws { counts[Int(sample(params, &rng).id)] += 1 }
        return counts.map { Double($0) / Double(draws) }
    }

    func testGreedyPicksArgmaxWithRawLogprob() {
        var rng = SplitMix64(seed: 1)
        let t = sample(SamplingParams(temperature: 0), &rng)
        XCTAssertEqual(t.id, 2)
        XCTAssertEqual(t.logprob, 0)
        XCTAssertEqual(t.rawLogprob, Float(log(0.5)), accuracy: 1e-6)
    }

    func testTemperatureOneFollowsSoftmax() {
        let f = frequencies(SamplingParams(temperature: 1))
        for (got, want) in zip(f, [1.0 / 6, 2.0 / 6, 3.0 / 6]) { XCTAssertEqual(got, want, accuracy: 0.01) }
        var rng = SplitMix64(seed: 3)
        let t = sample(SamplingParams(temperature: 1), &rng)
        XCTAssertEqual(t.logprob, t.rawLogprob, accuracy: 1e-6)
        XCTAssertEqual(t.rawLogprob, Float(log(Double(t.id + 1) / 6)), accuracy: 1e-6)
    }

    func testTemperatureTwoFlattens() {
        // p_i proportional to sqrt(i + 1): 1, 1.414, 1.732 over 4.146
        let z = 1 + 2.0.squareRoot() + 3.0.squareRoot()
        let f = frequencies(SamplingParams(temperature: 2))
        for (i, got) in f.enumerated() { XCTAssertEqual(got, Double(i + 1).squareRoot() / z, accuracy: 0.01) }
        var rng = SplitMix64(seed: 5)
        let t = sample(SamplingParams(temperature: 2), &rng)
        XCTAssertEqual(t.logprob, Float(log(Double(t.id + 1).squareRoot() / z)), accuracy: 1e-5)
    }

    func testTopKRenormalisesOverTheKBest() {
        let f = frequencies(SamplingParams(temperature: 1, topK: 2))
        XCTAssertEqual(f[0], 0)
        XCTAssertEqual(f[1], 0.4, accuracy: 0.01)
        var rng = SplitMix64(seed: 9)
        for _ in 0..<20 {
            let t = sample(SamplingParams(temperature: 1, topK: 2), &rng)
            XCTAssertEqual(t.logprob, Float(log(t.id == 1 ? 0.4 : 0.6)), accuracy: 1e-6)
            XCTAssertEqual(t.rawLogprob, Float(log(Double(t.id + 1) / 6)), accuracy: 1e-6)
        }
    }

    func testTopPKeepsTheSmallestSetWithEnoughMass() {
        // 0.5 is reached by token 2 alone; 0.6 needs tokens 2 and 1 (mass 5/6).
        XCTAssertEqual(frequencies(SamplingParams(temperature: 1, topP: 0.5), draws: 2000), [0, 0, 1])
        let f = frequencies(SamplingParams(temperature: 1, topP: 0.6))
        XCTAssertEqual(f[0], 0)
        XCTAssertEqual(f[1], 0.4, accuracy: 0.01)
    }

    func testTopPOverALargeVocabularyMatchesFullSort() {
        // 5000 logits: the growing candidate window must find the same nucleus as a full sort.
        var rng = SplitMix64(seed: 8)
        let big = (0..<5000).map { _ in rng.nextNormal() * 3 }
        let params = SamplingParams(temperature: 1, topP: 0.9)
        var a = SplitMix64(seed: 1)
        var seen = Set<Int32>()
        for _ in 0..<500 {
            seen.insert(big.withUnsafeBufferPointer { Sampler.sample(logits: $0.baseAddress!, vocab: 5000, params: params, rng: &a) }.id)
        }
        let order = big.indices.sorted { big[$0] > big[$1] }
        let z = big.map { exp(Double($0)) }.reduce(0, +)
        var mass = 0.0, nucleus = Set<Int32>()
        for i in order { nucleus.insert(Int32(i)); mass += exp(Double(big[i])) / z; if mass >= 0.9 { break } }
        XCTAssertTrue(seen.isSubset(of: nucleus), "sampled outside the nucleus")
    }

    func testInvalidParamsAreRefusedByName() {
        XCTAssertThrowsError(try SamplingParams(temperature: -1).validate()) { XCTAssertTrue("\($0)".contains("temperature")) }
        XCTAssertThrowsError(try SamplingParams(topP: 0).validate()) { XCTAssertTrue("\($0)".contains("top-p")) }
        XCTAssertThrowsError(try SamplingParams(topK: -2).validate()) { XCTAssertTrue("\($0)".contains("top-k")) }
    }
}
