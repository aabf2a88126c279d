import Engine
import XCTest

final class GenerationTests: XCTestCase {
    func request(_ prompt: [Int32], seed: UInt64, maxNew: Int = 12, stops: Set<Int32> = []) -> GenerationRequest {
        GenerationRequest(prompt: prompt, params: SamplingParams(temperature: 1, topK: 50, topP: 0.95, maxNewTokens: maxNew, stopTokens: stops, seed: seed))
    }

    func testFixedSeedRepeatsAndAnotherSeedDiffers() throws {
        let gen = Generator(model: try TinyModel.make())
        let p = TinyModel.tokens(5, seed: 1)
        let a = try gen.generate([request(p, seed: 10)]), b = try gen.generate([request(p, seed: 10)])
        let c = try gen.generate([request(p, seed: 11)])
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a[0].tokens, c[0].tokens)
    }

    func testSameSeedGivesSameTokensInAnyBatch() throws {
        let gen = Generator(model: try TinyModel.make())
        let target = request(TinyModel.tokens(4, seed: 2), seed: 77)
        let alone = try gen.generate([target])[0]
        let others = [request(TinyModel.tokens(9, seed: 3), seed: 1), request(TinyModel.tokens(2, seed: 4), seed: 2, maxNew: 3)]
        let inBatch = try gen.generate([others[0], target, others[1]])[1]
        XCTAssertEqual(alone, inBatch, "tokens and log-probs must not depend on the batch")
        XCTAssertEqual(alone.tokens.count, 12)
        XCTAssertEqual(alone.finishReason, .length)
    }

    /// Prompt + response never exceeds the context, so a training pass over the sample still fits.
    func testGenerationStopsWhenTheContextIsFull() throws {
        let gen = Generator(model: try TinyModel.make())
        let context = TinyModel.config.contextLength
        let r = try gen.generate([request(TinyModel.tokens(context - 5, seed: 1), seed: 3, maxNew: 20)])[0]
        XCTAssertEqual(r.tokens.count, 5)
        XCTAssertEqual(r.finishReason, .length)
    }

    func testStopTokenEndsTheSequenceAndIsKept() throws {
        let gen = Generator(model: try TinyModel.make())
        let p = TinyModel.tokens(5, seed: 1)
        let free = try gen.generate([request(p, seed: 10, maxNew: 12)])[0]
        let stop = free.tokens[3]
        let firstStop = free.tokens.firstIndex(of: stop)!
        let stopped = try gen.generate([request(p, seed: 10, maxNew: 12, stops: [stop])])[0]
        XCTAssertEqual(stopped.tokens, Array(free.tokens[...firstStop]))
        XCTAssertEqual(stopped.finishReason, .stop)
    }

    /// A server's hooks: each row of logits is seen before its token is chosen (the chosen token's
    /// raw log-prob is that row's log-softmax), and `ended` stops one sequence of a batch early.
    func testServerHooksSeeTheLogitsAndEndASequence() throws {
        let gen = Generator(model: try TinyModel.make())
        let p = TinyModel.tokens(5, seed: 1)
        let free = try gen.generate([request(p, seed: 10), request(p, seed: 11)])
        var rows: [[Float]] = [], chosen: [SampledToken] = [], counts = [0, 0]
        let hooked = try gen.generate([request(p, seed: 10), request(p, seed: 11)], onLogits: { i, row in
            if i == 0 { rows.append(Array(UnsafeBufferPointer(start: row, count: gen.model.config.vocab))) }
        }, onToken: { i, t in
            counts[i] += 1
            if i == 0 { chosen.append(t) }
        }, ended: { i in i == 1 && counts[1] == 3 })
        XCTAssertEqual(hooked[0], free[0], "the hooks change nothing of a sequence they do not end")
        XCTAssertEqual(hooked[1].tokens, Array(free[1].tokens.prefix(3)))
        XCTAssertEqual(hooked[1].finishReason, .stop)
        XCTAssertEqual(rows.count, free[0].tokens.count)
        for (row, t) in zip(rows, chosen) {
            let logZ = log(row.map { exp(Double($0)) }.reduce(0, +))
            XCTAssertEqual(Double(row[Int(t.id)]) - logZ, Double(t.rawLogprob), accuracy: 1e-4)
        }
    }

    func testRecordedRawLogprobsEqualAFreshForwardPass() throws {
        let net = try TinyModel.make()
        let p = TinyModel.tokens(5, seed: 1)
        let r = try Generator(model: net).generate([request(p, seed: 4)])[0]
        let all = p + r.tokens
        let logits = try net.forward([(net.makeCache(capacity: all.count), all)], outputs: .everyToken)
        let V = net.config.vocab
        for (i, t) in r.tokens.enumerated() {
            let row = Array(logits[(p.count - 1 + i) * V ..< (p.count + i) * V])
            let lse = row.withUnsafeBufferPointer { VectorMath.logSumExp($0.baseAddress!, V) }
            XCTAssertEqual(r.rawLogprobs[i], row[Int(t)] - lse, accuracy: 1e-4, "token \(i)")
            XCTAssertLessThanOrEqual(r.logprobs[i], 0)
        }
    }

    func testBadRequestsAreRefused() throws {
        let gen = Generator(model: try TinyModel.make())
        XCTAssertThrowsError(try gen.generate([request([], seed: 1)])) { XCTAssertTrue("\($0)".contains("empty prompt")) }
        XCTAssertThrowsError(try gen.generate([request(TinyModel.tokens(128, seed: 1), seed: 1)])) { XCTAssertTrue("\($0)".contains("context")) }
    }

    func testDerivedSeedsAreStableAndDistinct() {
        XCTAssertEqual(SplitMix64.derive(1, 2, 3), SplitMix64.derive(1, 2, 3))
        XCTAssertNotEqual(SplitMix64.derive(1, 2, 3), SplitMix64.derive(1, 3, 2))
        XCTAssertNotEqual(SplitMix64.derive(1, 2), SplitMix64.derive(2, 2))
    }
}
