import Engine
import Formats
import Foundation
import XCTest

/// Forward and backward against PyTorch on ../shared/reference/tiny-llama: a 2-layer Llama in
/// Hugging Face layout (float64), a padded batch of 3 with a loss mask, and PyTorch's loss, logits
/// and the gradient of every parameter. The engine computes in float32.
final class TinyLlamaReferenceTests: XCTestCase {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/reference/tiny-llama")

    struct Batch: Decodable { let input_ids: [[Int32]]; let lengths: [Int]; let loss_mask: [[Float]]; let loss: Double }

    func load() throws -> (ModelWeights, [TrainingSequence], Batch) {
        let weights = try HFModel.loadWeights(Self.folder)
        let batch = try JSONDecoder().decode(Batch.self, from: Data(contentsOf: Self.folder.appendingPathComponent("batch.json")))
        let sequences = batch.lengths.indices.map { b in
            TrainingSequence(tokens: Array(batch.input_ids[b].prefix(batch.lengths[b])), lossMask: Array(batch.loss_mask[b].prefix(batch.lengths[b])))
        }
        return (weights, sequences, batch)
    }

    func testLogitsMatchPyTorch() throws {
        let (weights, sequences, batch) = try load()
        XCTAssertEqual(weights.config.layers, 2)
        let ours = try Backprop(weights: weights).logits(sequences)
        let ref = try SafetensorsFile(url: Self.folder.appendingPathComponent("logits.safetensors")).doubles("logits")!
        let T = batch.input_ids[0].count, V = weights.config.vocab
        var worst = 0.0, row = 0
        for (b, len) in batch.lengths.enumerated() {
            for t in 0..<len {
                for v in 0..<V { worst = max(worst, abs(Double(ours[row * V + v]) - ref[(b * T + t) * V + v])) }
                row += 1
            }
        }
        print("tiny-llama logits: max |engine - PyTorch| = \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-4)
    }

    /// Relative tolerance per tensor: max |ours - ref| / max |ref| <= 1e-5 (float32 against float64; measured 6e-7).
    func testLossAndEveryGradientMatchPyTorch() throws {
        let (weights, sequences, batch) = try load()
        let grads = ModelWeights(config: weights.config)
        let report = try Backprop(weights: weights).lossAndGradients(sequences, grads: grads)
        XCTAssertEqual(report.loss, batch.loss, accuracy: 1e-5 * batch.loss)
        XCTAssertEqual(report.targets, Int(batch.loss_mask.joined().reduce(0, +)))

        let ref = try SafetensorsFile(url: Self.folder.appendingPathComponent("grads.safetensors"))
        var checked = 0, worstRelative = 0.0
        for (engineName, hfName) in HFModel.tensorNames(weights.config) {
            guard let expected = ref.doubles(hfName) else { XCTFail("reference lacks \(hfName)"); continue }
            let ours = grads.view(engineName)!
            let scale = expected.map(abs).max()!
            let worst = zip(ours, expected).map { abs(Double($0) - $1) }.max()!
            XCTAssertLessThanOrEqual(worst / scale, 1e-5, "\(hfName): max abs difference \(worst), max |grad| \(scale)")
            worstRelative = max(worstRelative, worst / scale)
            checked += 1
        }
        XCTAssertEqual(checked, 20)
        print("tiny-llama: loss \(report.loss) vs \(batch.loss); worst gradient max-abs-difference / max-abs-gradient \(worstRelative)")
    }
}
