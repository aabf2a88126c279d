import Engine
import Formats
import Foundation
import XCTest

final class GGUFModelTests: XCTestCase {
    func tinyModel() throws -> (ModelWeights, URL) {
        let tok = try TestVocabulary.make()
        let config = ModelConfig(layers: 2, width: 32, heads: 4, kvHeads: 2, ffnWidth: 48, vocab: tok.vocabSize,
                                 ropeTheta: 10000, contextLength: 64)
        let weights = ModelWeights.random(config: config, seed: 3)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("charter-tiny-\(UUID()).gguf")
        try GGUFModel.writer(weights: weights, tokenizer: tok, name: "tiny").write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return (weights, url)
    }

    func testF32ExportReloadsToIdenticalWeightsAndLogits() throws {
        let (weights, url) = try tinyModel()
        let loaded = try GGUFModel.load(url)
        XCTAssertEqual(loaded.config, weights.config)
        XCTAssertEqual(Array(loaded.weights.storage), Array(weights.storage), "weights differ after the round trip")
        XCTAssertEqual(try loaded.tokenizer.encode("hello<|im_end|>"), [262, 2])
        let tokens: [Int32] = [5, 100, 262, 7]
        let a = try Transformer(weights: weights), b = try Transformer(weights: loaded.weights)
        XCTAssertEqual(try a.forward([(a.makeCache(capacity: 4), tokens)], outputs: .everyToken),
                       try b.forward([(b.makeCache(capacity: 4), tokens)], outputs: .everyToken))
    }

    /// The file holds attn_q/attn_k in llama.cpp's interleaved layout: within each head, file row 2i + j
    /// is engine row j * D/2 + i.
    func testQueryRowsAreStoredInterleavedInTheFile() throws {
        let (weights, url) = try tinyModel()
        let file = try GGUFFile(url: url)
        let stored = file.floats(file.tensor("blk.0.attn_q.weight")!)
        let engine = weights.view("layers.0.wq")!
        let C = 32, D = 8
        for h in 0..<4 { for i in 0..<D / 2 { for j in 0..<2 {
            let fileRow = h * D + 2 * i + j, engineRow = h * D + j * D / 2 + i
            XCTAssertEqual(Array(stored[fileRow * C ..< (fileRow + 1) * C]), Array(engine[engineRow * C ..< (engineRow + 1) * C]))
        } } }
    }

    func testF16ExportReloadsWithinHalfPrecision() throws {
        let tok = try TestVocabulary.make()
        let config = ModelConfig(layers: 1, width: 16, heads: 2, kvHeads: 1, ffnWidth: 24, vocab: tok.vocabSize, contextLength: 16)
        let weights = ModelWeights.random(config: config, seed: 4)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("charter-f16-\(UUID()).gguf")
        defer { try? FileManager.default.removeItem(at: url) }
        try GGUFModel.writer(weights: weights, tokenizer: tok, name: "tiny", type: .f16).write(to: url)
        let loaded = try GGUFModel.load(url)
        let worst = zip(loaded.weights.storage, weights.storage).map { abs($0 - $1) / max(abs($1), 1e-3) }.max()!
        XCTAssertLessThanOrEqual(worst, 1e-3, "max relative difference \(worst)")
    }

    func testMissingTensorAndWrongShapeAreNamed() throws {
        let tok = try TestVocabulary.make()
        let config = ModelConfig(layers: 1, width: 16, heads: 2, kvHeads: 1, ffnWidth: 24, vocab: tok.vocabSize, contextLength: 16)
        var g = GGUFModel.writer(weights: ModelWeights.random(config: config, seed: 1), tokenizer: tok, name: "t")
        g.tensors.removeAll { $0.name == "blk.0.ffn_up.weight" }
        XCTAssertThrowsError(try GGUFModel.load(write(g))) {
            XCTAssertTrue("\($0)".hasSuffix(".gguf: tensor \"blk.0.ffn_up.weight\" is missing from the file"), "\($0)")
        }
        var h = GGUFModel.writer(weights: ModelWeights.random(config: config, seed: 1), tokenizer: tok, name: "t")
        let i = h.tensors.firstIndex { $0.name == "blk.0.ffn_up.weight" }!
        h.tensors[i].shape = [16, 24]
        XCTAssertThrowsError(try GGUFModel.load(write(h))) {
            XCTAssertTrue("\($0)".contains("tensor \"blk.0.ffn_up.weight\" has shape [16, 24], the metadata implies [24, 16]"), "\($0)")
        }
    }

    func write(_ g: GGUFWriter) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("charter-\(UUID()).gguf")
        try g.write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }
}
