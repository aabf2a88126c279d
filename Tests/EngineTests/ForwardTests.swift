import Engine
import XCTest

final class ForwardTests: XCTestCase {
    let V = TinyModel.config.vocab

    func testIncrementalDecodeWithCacheEqualsFullForward() throws {
        let net = try TinyModel.make()
        let tokens = TinyModel.tokens(20, seed: 1)
        let full = try net.forward([(net.makeCache(capacity: 20), tokens)], outputs: .everyToken)

        // Prefill 7 tokens, then one token per step.
        let cache = net.makeCache(capacity: 20)
        var stepwise = try net.forward([(cache, Array(tokens[0..<7]))], outputs: .everyToken)
        for t in 7..<20 { stepwise += try net.forward([(cache, [tokens[t]])], outputs: .lastPerSequence) }

        let diff = TinyModel.maxDifference(full[...], stepwise[...])
        XCTAssertLessThanOrEqual(diff, 1e-5, "max |full - incremental| = \(diff)")
        XCTAssertEqual(cache.length, 20)
    }

    func testMixedLengthBatchEqualsEachSequenceAloneBitwise() throws {
        let net = try TinyModel.make()
        let prompts = [TinyModel.tokens(3, seed: 2), TinyModel.tokens(11, seed: 3), TinyModel.tokens(1, seed: 4), TinyModel.tokens(6, seed: 5)]
        let alone = try prompts.map { try net.forward([(net.makeCache(capacity: 16), $0)], outputs: .everyToken) }
        let batch = try net.forward(prompts.map { (net.makeCache(capacity: 16), $0) }, outputs: .everyToken)
        var offset = 0
        for (i, p) in prompts.enumerated() {
            let part = batch[offset * V ..< (offset + p.count) * V]
            XCTAssertEqual(Array(part), alone[i], "sequence \(i): max difference \(TinyModel.maxDifference(part, alone[i][...]))")
            offset += p.count
        }
        // Decode steps in a batch equal decode steps alone, too.
        let caches = prompts.map { _ in net.makeCache(capacity: 16) }
        _ = try net.forward(zip(caches, prompts).map { ($0, $1) }, outputs: .lastPerSequence)
        let batchStep = try net.forward(caches.map { ($0, [Int32(9)]) }, outputs: .lastPerSequence)
        for (i, p) in prompts.enumerated() {
            let c = net.makeCache(capacity: 16)
            _ = try net.forward([(c, p)], outputs: .lastPerSequence)
            let aloneStep = try net.forward([(c, [Int32(9)])], outputs: .lastPerSequence)
            XCTAssertEqual(Array(batchStep[i * V ..< (i + 1) * V]), aloneStep, "decode step of sequence \(i)")
        }
    }

    /// Logits of chosen tokens only (a reference pass's response rows) are those rows of the full
    /// output, bit for bit; ranges that do not fit the items are refused before any work.
    func testChosenTokenRowsAreThoseOfTheFullOutput() throws {
        let net = try TinyModel.make()
        let prompts = [TinyModel.tokens(5, seed: 6), TinyModel.tokens(9, seed: 7), TinyModel.tokens(2, seed: 8)]
        let full = try net.forward(prompts.map { (net.makeCache(capacity: 16), $0) }, outputs: .everyToken)
        let wanted = [2..<5, 0..<0, 1..<2]
        let some = try net.forward(prompts.map { (net.makeCache(capacity: 16), $0) }, outputs: .tokens(wanted))
        var expected: [Float] = [], offset = 0
        for (p, range) in zip(prompts, wanted) {
            for t in range { expected += full[(offset + t) * V ..< (offset + t + 1) * V] }
            offset += p.count
        }
        XCTAssertEqual(some.count, 4 * V)
        XCTAssertEqual(some, expected)
        let cache = net.makeCache(capacity: 16)
        XCTAssertThrowsError(try net.forward([(cache, prompts[0])], outputs: .tokens([0..<6]))) {
            XCTAssertEqual("\($0)", "invalid input: sequence 0: output tokens 0..<6 outside its 5 new tokens")
        }
        XCTAssertThrowsError(try net.forward([(cache, prompts[0])], outputs: .tokens([]))) {
            XCTAssertEqual("\($0)", "invalid input: 1 sequences but token ranges for 0")
        }
        XCTAssertEqual(cache.length, 0)
    }

    func testForwardRejectsBadInputWithoutTouchingTheCache() throws {
        let net = try TinyModel.make()
        let cache = net.makeCache(capacity: 4)
        XCTAssertThrowsError(try net.forward([(cache, [Int32(V)])], outputs: .lastPerSequence)) {
            XCTAssertEqual("\($0)", "invalid input: token id 256 outside the vocabulary 0..<256")
        }
        XCTAssertThrowsError(try net.forward([(cache, [1, 2, 3, 4, 5])], outputs: .lastPerSequence)) {
            XCTAssertEqual("\($0)", "invalid input: sequence 0 needs 5 positions, its cache holds 4")
        }
        XCTAssertThrowsError(try net.forward([(cache, [])], outputs: .lastPerSequence))
        XCTAssertEqual(cache.length, 0)
    }

    func testInvalidConfigIsRefusedByName() {
        var c = TinyModel.config
        c.kvHeads = 3
        XCTAssertThrowsError(try Transformer(weights: ModelWeights(config: c))) {
            XCTAssertEqual("\($0)", "invalid model config: heads (4) must be a multiple of kvHeads (3)")
        }
    }

    /// Attention of one query against its own prefix, computed naively in Double, equals the engine's.
    func testSingleLayerForwardMatchesNaiveDoubleReference() throws {
        let config = ModelConfig(layers: 1, width: 16, heads: 2, kvHeads: 1, ffnWidth: 24, vocab: 32, ropeTheta: 10000, contextLength: 16)
        let weights = ModelWeights.random(config: config, seed: 11, std: 0.3)
        let net = try Transformer(weights: weights)
        let tokens: [Int32] = [3, 17, 5, 30, 1]
        let ours = try net.forward([(net.makeCache(capacity: 8), tokens)], outputs: .everyToken)
        let reference = NaiveLlama(weights: weights).logits(tokens)
        var worst = 0.0
        for i in 0..<ours.count { worst = max(worst, abs(Double(ours[i]) - reference[i])) }
        XCTAssertLessThanOrEqual(worst, 1e-4, "max |engine - naive double| = \(worst)")
    }
}
