@testable import Alignment
import Engine
import Formats
import Foundation
import Tokenizer
import XCTest

final class RewardModelTests: XCTestCase {
    let config = ModelConfig(layers: 2, width: 32, heads: 4, kvHeads: 2, ffnWidth: 64, vocab: 32, ropeTheta: 10000, contextLength: 32)

    func rewardModel(seed: UInt64) throws -> RewardModel {
        let tokens = (0..<32).map { "t\($0)" }
        let tok = try BPETokenizer(tokens: tokens, merges: [])
        let policy = LoadedModel(weights: .random(config: config, seed: seed, std: 0.05), tokenizer: tok, source: URL(fileURLWithPath: "/"))
        return try RewardModel.initialize(from: policy, seed: seed + 1)
    }

    /// The rule: the better response contains token 7.
    func pairs(_ count: Int, seed: UInt64, p: Float = 1) -> [PreferencePair] {
        var rng = SplitMix64(seed: seed)
        func response(with7: Bool) -> [Int32] {
            var r = (0..<8).map { _ in Int32(8 + rng.next() % 24) }
            if with7 { r[Int(rng.next() % 8)] = 7 }
            return [1, 2, 3] + r
        }
        return (0..<count).map { _ in PreferencePair(chosen: response(with7: true), rejected: response(with7: false), pChosen: p) }
    }

    func testBradleyTerryLearnsAKnownRule() throws {
        let rm = try rewardModel(seed: 1)
        let trainer = try RewardModelTrainer(rm: rm, schedule: LRSchedule(peak: 3e-3, warmupSteps: 5, totalSteps: 80))
        let heldOut = pairs(200, seed: 99)
        let before = try trainer.evaluate(heldOut)
        for s in 0..<80 { try trainer.step(pairs(16, seed: UInt64(s))) }
        let after = try trainer.evaluate(heldOut)
        print("reward model: held-out accuracy \(before.accuracy) -> \(after.accuracy), loss \(before.loss) -> \(after.loss), ECE \(after.calibrationError)")
        XCTAssertGreaterThanOrEqual(after.accuracy, 0.95)
        XCTAssertLessThan(after.loss, before.loss)
    }

    func testSoftLabelOneHalfHasNoPreferredSide() throws {
        // Two different sequences, so the gradient is not zero by symmetry: with identical rows it is
        // exactly zero in theory, and whether it comes out as 0 or 1e-9 depends on the BLAS kernel.
        let a: [Int32] = [1, 2, 3, 9, 10, 11], b: [Int32] = [1, 2, 3, 12, 7, 20]
        /// The gradients (head, then trunk) and loss of one step from the same start.
        func gradient(_ pair: PreferencePair, lr: Float = 1e-3) throws -> (grads: [Float], loss: Double, rm: RewardModel) {
            let rm = try rewardModel(seed: 2)
            let trainer = try RewardModelTrainer(rm: rm, schedule: LRSchedule(peak: lr, decay: .constant), settings: .init(clipNorm: nil))
            let loss = try trainer.step([pair]).loss
            return (Array(trainer.headGrads) + Array(trainer.trunk.grads), loss, rm)
        }
        /// max |x - y| relative to max |x|: the sums are the same up to their order.
        func relativeDiff(_ x: [Float], _ y: [Float]) -> Float {
            zip(x, y).map { abs($0 - $1) }.max()! / max(x.map(abs).max()!, 1e-30)
        }
        let start = try rewardModel(seed: 2)
        let d0 = try start.scores([a])[0] - start.scores([b])[0]
        XCTAssertGreaterThan(abs(d0), 1e-3, "the two sequences should score differently to start with")

        // A label of 0.5 has no preferred side: (a, b) and (b, a) give the same gradient and loss.
        let ab = try gradient(PreferencePair(chosen: a, rejected: b, pChosen: 0.5))
        let ba = try gradient(PreferencePair(chosen: b, rejected: a, pChosen: 0.5))
        XCTAssertEqual(ab.loss, ba.loss, accuracy: 1e-6)
        XCTAssertLessThan(relativeDiff(ab.grads, ba.grads), 1e-4)
        // p and 1 - p with the sides swapped are the same label.
        let hard = try gradient(PreferencePair(chosen: a, rejected: b, pChosen: 1))
        let swapped = try gradient(PreferencePair(chosen: b, rejected: a, pChosen: 0))
        XCTAssertEqual(hard.loss, swapped.loss, accuracy: 1e-6)
        XCTAssertLessThan(relativeDiff(hard.grads, swapped.grads), 1e-4)
        // The gradient is (sigmoid(d) - p) times the same direction: the hard label's is larger by
        // (sigmoid(d) - 1) / (sigmoid(d) - 0.5), and a step along it moves d toward the chosen side.
        let s = 1 / (1 + expf(-d0)), ratio = (s - 1) / (s - 0.5)
        XCTAssertLessThan(relativeDiff(hard.grads, ab.grads.map { $0 * ratio }), 1e-3)
        XCTAssertGreaterThan(try hard.rm.scores([a])[0] - hard.rm.scores([b])[0], d0)

        // Trained on the rule's pairs labelled 0.5, the model learns no preference.
        let soft = try RewardModelTrainer(rm: try rewardModel(seed: 3), schedule: LRSchedule(peak: 3e-3, decay: .constant))
        for s in 0..<40 { try soft.step(pairs(16, seed: UInt64(s), p: 0.5)) }
        let eval = pairs(100, seed: 77)
        let c = try soft.rm.scores(eval.map(\.chosen)), r = try soft.rm.scores(eval.map(\.rejected))
        let meanGap = zip(c, r).map { abs($0 - $1) }.reduce(0, +) / Float(eval.count)
        XCTAssertLessThan(meanGap, 0.1, "scores should stay together, mean |d| \(meanGap)")
    }

    func testAccuracyCountsTheRankingNotTheMargin() throws {
        let rm = try rewardModel(seed: 4)
        let trainer = try RewardModelTrainer(rm: rm, schedule: LRSchedule(peak: 1e-3))
        let a: [Int32] = [1, 2, 3, 9, 10, 11], b: [Int32] = [1, 2, 3, 12, 7, 20]
        let (sa, sb) = (try rm.scores([a])[0], try rm.scores([b])[0])
        let (high, low) = sa > sb ? (a, b) : (b, a)
        // Ranked right, though by less than the margin: correct.
        let ranked = try trainer.evaluate([PreferencePair(chosen: high, rejected: low, margin: 100)])
        XCTAssertEqual(ranked.accuracy, 1)
        XCTAssertEqual(try trainer.evaluate([PreferencePair(chosen: low, rejected: high, margin: 0)]).accuracy, 0)
    }

    func testSaveAndLoadKeepTheScores() throws {
        let tokURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        let tok = try GGUFModel.tokenizer(of: GGUFFile(url: tokURL))
        let c = ModelConfig(layers: 1, width: 16, heads: 2, kvHeads: 1, ffnWidth: 24, vocab: tok.vocabSize, contextLength: 64)
        let rm = try RewardModel.initialize(from: LoadedModel(weights: .random(config: c, seed: 5), tokenizer: tok, source: tokURL), seed: 6)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("charter-rm-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try rm.save(folder)
        let back = try RewardModel.load(folder)
        let seqs = [try rm.tokens(prompt: "Hi", response: "Hello!"), try rm.tokens(prompt: "2+2?", response: "4")]
        XCTAssertEqual(try back.scores(seqs), try rm.scores(seqs))

        let pairsFile = FileManager.default.temporaryDirectory.appendingPathComponent("charter-pairs-\(UUID()).jsonl")
        defer { try? FileManager.default.removeItem(at: pairsFile) }
        try Data(#"{"prompt": "a", "chosen": "b", "rejected": "c", "p_chosen": 0.8, "margin": 1}"#.utf8).write(to: pairsFile)
        let loaded = try PreferencePair.load(pairsFile, rm: rm, maxLength: 64)
        XCTAssertEqual(loaded.first?.pChosen, 0.8)
        XCTAssertEqual(loaded.first?.margin, 1)
        for (bad, message) in [(#"{"prompt": "a", "chosen": "b"}"#, "line 1: needs \"chosen\" and \"rejected\""), (#"{"prompt": "a", "chosen": "b", "rejected": "c", "p_chosen": 2}"#, "\"p_chosen\" must be a number in [0, 1]"), ("oops", "line 1: not valid JSON")] {
            try Data(bad.utf8).write(to: pairsFile)
            XCTAssertThrowsError(try PreferencePair.load(pairsFile, rm: rm, maxLength: 64)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
    }

    /// Micro-batches change how a step is computed, not what it is: the gradients of one batch of
    /// four pairs, whole or one pair per pass, agree up to summation order.
    func testMicroBatchesGiveTheWholeBatchsGradient() throws {
        let batch = pairs(4, seed: 3)
        var grads: [[Float]] = [], losses: [Double] = []
        for micro in [nil, 1] as [Int?] {
            let trainer = try RewardModelTrainer(rm: try rewardModel(seed: 2), schedule: LRSchedule(peak: 1e-3, decay: .constant), settings: .init(clipNorm: nil))
            losses.append(try trainer.step(batch, microBatch: micro).loss)
            grads.append(Array(trainer.headGrads) + Array(trainer.trunk.grads))
        }
        XCTAssertEqual(losses[0], losses[1], accuracy: 1e-6)
        let scale = grads[0].map(abs).max()!
        XCTAssertGreaterThan(scale, 0)
        XCTAssertLessThan(zip(grads[0], grads[1]).map { abs($0 - $1) }.max()! / scale, 1e-4)
    }
}
