import Engine
import Formats
import Foundation
import XCTest

/// Forward and backward against PyTorch (transformers) on small Hugging Face models in float64:
/// ../shared/reference/tiny-llama (a 2-layer Llama), and the families Charter runs beside it,
/// made by scripts/make-family-references.py into Tests/Fixtures/families: Llama 3 (rope scaling
/// llama3, untied embeddings) and Qwen2 (q, k, v biases). Each holds a padded batch of 3 with a
/// loss mask, the loss, the logits and the gradient of every parameter; the engine computes in float32.
final class HFReferenceTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let tinyLlama = repository.deletingLastPathComponent().appendingPathComponent("shared/reference/tiny-llama")
    static let families = repository.appendingPathComponent("Tests/Fixtures/families")

    struct Batch: Decodable { let input_ids: [[Int32]]; let lengths: [Int]; let loss_mask: [[Float]]; let loss: Double }

    func load(_ folder: URL) throws -> (ModelWeights, [TrainingSequence], Batch) {
        let weights = try HFModel.loadWeights(folder)
        let batch = try JSONDecoder().decode(Batch.self, from: Data(contentsOf: folder.appendingPathComponent("batch.json")))
        let sequences = batch.lengths.indices.map { b in
            TrainingSequence(tokens: Array(batch.input_ids[b].prefix(batch.lengths[b])), lossMask: Array(batch.loss_mask[b].prefix(batch.lengths[b])))
        }
        return (weights, sequences, batch)
    }

    /// The largest difference between the reference's logits and those of `weights` (by default
    /// the folder's model) at every real position, and the engine's logits.
    func logitsDifference(_ folder: URL, weights given: ModelWeights? = nil) throws -> (worst: Double, ours: [Float]) {
        let (loaded, sequences, batch) = try load(folder)
        let weights = given ?? loaded
        let ours = try Backprop(weights: weights).logits(sequences)
        let ref = try XCTUnwrap(try SafetensorsFile(url: folder.appendingPathComponent("logits.safetensors")).doubles("logits"))
        let T = batch.input_ids[0].count, V = weights.config.vocab
        var worst = 0.0, row = 0
        for (b, len) in batch.lengths.enumerated() {
            for t in 0..<len {
                for v in 0..<V { worst = max(worst, abs(Double(ours[row * V + v]) - ref[(b * T + t) * V + v])) }
                row += 1
            }
        }
        return (worst, ours)
    }

    /// Every real position's logits within 1e-4 of the reference, from training's forward pass and
    /// from the inference engine's.
    func checkLogits(_ folder: URL, file: StaticString = #filePath, line: UInt = #line) throws {
        let (weights, sequences, _) = try load(folder)
        let (worst, ours) = try logitsDifference(folder)
        print("\(folder.lastPathComponent) logits: max |engine - PyTorch| = \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-4, file: file, line: line)
        // The inference engine (KV cache, batched decode) gives the training pass's logits.
        let engine = try Transformer(weights: weights)
        let items = sequences.map { (cache: engine.makeCache(capacity: $0.tokens.count), tokens: $0.tokens) }
        let decoded = try engine.forward(items, outputs: .everyToken)
        XCTAssertEqual(decoded.count, ours.count, file: file, line: line)
        XCTAssertLessThanOrEqual(zip(decoded, ours).map { abs($0 - $1) }.max() ?? 1, 1e-4, file: file, line: line)
    }

    /// The folder's weights under `config` (same layout), with `change` applied.
    func variant(_ folder: URL, config: (inout ModelConfig) -> Void = { _ in }, change: (ModelWeights) -> Void = { _ in }) throws -> ModelWeights {
        let loaded = try HFModel.loadWeights(folder)
        var c = loaded.config
        config(&c)
        let w = ModelWeights(config: c)
        _ = w.storage.update(from: loaded.storage)
        change(w)
        return w
    }

    /// The loss, and every gradient within a relative 1e-5 (max |ours - ref| / max |ref|, float32
    /// against float64; measured 6e-7 on tiny-llama). Returns the number of tensors checked.
    @discardableResult
    func checkGradients(_ folder: URL, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let (weights, sequences, batch) = try load(folder)
        let grads = ModelWeights(config: weights.config)
        let report = try Backprop(weights: weights).lossAndGradients(sequences, grads: grads)
        XCTAssertEqual(report.loss, batch.loss, accuracy: 1e-5 * batch.loss, file: file, line: line)
        XCTAssertEqual(report.targets, Int(batch.loss_mask.joined().reduce(0, +)), file: file, line: line)

        let ref = try SafetensorsFile(url: folder.appendingPathComponent("grads.safetensors"))
        var checked = 0, worstRelative = 0.0
        for (engineName, hfName) in HFModel.tensorNames(weights.config) {
            guard let expected = ref.doubles(hfName) else { XCTFail("reference lacks \(hfName)", file: file, line: line); continue }
            let ours = grads.view(engineName)!
            let scale = expected.map(abs).max()!
            let worst = zip(ours, expected).map { abs(Double($0) - $1) }.max()!
            XCTAssertLessThanOrEqual(worst / scale, 1e-5, "\(hfName): max abs difference \(worst), max |grad| \(scale)", file: file, line: line)
            worstRelative = max(worstRelative, worst / scale)
            checked += 1
        }
        XCTAssertEqual(checked, ref.tensors.count, "every reference gradient has its engine tensor", file: file, line: line)
        print("\(folder.lastPathComponent): loss \(report.loss) vs \(batch.loss); worst gradient max-abs-difference / max-abs-gradient \(worstRelative)")
        return checked
    }

    func testTinyLlamaLogitsMatchPyTorch() throws {
        XCTAssertEqual(try HFModel.config(at: Self.tinyLlama).layers, 2)
        try checkLogits(Self.tinyLlama)
    }

    func testTinyLlamaLossAndEveryGradientMatchPyTorch() throws {
        XCTAssertEqual(try checkGradients(Self.tinyLlama), 20)
    }

    /// Llama 3: the rotary frequencies rescaled (all three bands of llama3 scaling are in the
    /// fixture), an output projection of its own.
    func testLlama3MatchesTransformers() throws {
        let folder = Self.families.appendingPathComponent("llama3")
        let c = try HFModel.config(at: folder)
        XCTAssertEqual(c.ropeScaling, RopeScaling(factor: 8, lowFreqFactor: 0.5, highFreqFactor: 4, originalContext: 32))
        XCTAssertFalse(c.tiedEmbeddings)
        try checkLogits(folder)
        // Plain rotary embeddings give other logits: the fixture does exercise the rescaling.
        XCTAssertGreaterThan(try logitsDifference(folder, weights: variant(folder, config: { $0.ropeScaling = nil })).worst, 1e-3)
        XCTAssertEqual(try checkGradients(folder), 2 + 1 + 2 * 9)
    }

    /// Qwen2: biases on q, k and v, each with its gradient.
    func testQwen2MatchesTransformers() throws {
        let folder = Self.families.appendingPathComponent("qwen2")
        let c = try HFModel.config(at: folder)
        XCTAssertTrue(c.attentionBias)
        XCTAssertEqual(c.ropeTheta, 1_000_000)
        try checkLogits(folder)
        let unbiased = try variant(folder, change: { w in
            for l in 0..<c.layers { for b in ["bq", "bk", "bv"] { w.view("layers.\(l).\(b)")!.update(repeating: 0) } }
        })
        XCTAssertGreaterThan(try logitsDifference(folder, weights: unbiased).worst, 1e-3, "the biases matter in the fixture")
        XCTAssertEqual(try checkGradients(folder), 2 + 2 * 12)
    }
}
