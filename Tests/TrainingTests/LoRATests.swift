import Engine
import Formats
import Foundation
import XCTest

final class LoRATests: XCTestCase {
    let config = ModelConfig(layers: 2, width: 16, heads: 4, kvHeads: 2, ffnWidth: 24, vocab: 40, ropeTheta: 10000, contextLength: 32)
    let batch = [TrainingSequence(tokens: [3, 7, 1, 39, 22, 5], lossMask: [0, 0, 1, 1, 0, 1], weights: [0, 0, 1.5, -0.7, 0, 2]),
                 TrainingSequence(tokens: [9, 9, 14], lossMask: [0, 1, 1])]

    func testFreshAdaptersLeaveTheModelUnchanged() throws {
        let weights = ModelWeights.random(config: config, seed: 1, std: 0.3)
        let lora = try LoRAAdapters(config: LoRAConfig(rank: 4), model: config)
        lora.initialize(seed: 2)
        let net = try Backprop(weights: weights)
        let base = try net.logits(batch)
        net.lora = lora
        XCTAssertEqual(try net.logits(batch), base)
    }

    func testMergedWeightsGiveTheAdapterForward() throws {
        let weights = ModelWeights.random(config: config, seed: 1, std: 0.3)
        let lora = try LoRAAdapters(config: LoRAConfig(rank: 3, alpha: 5), model: config)
        var rng = SplitMix64(seed: 3)
        for i in 0..<lora.count { lora.storage[i] = 0.3 * rng.nextNormal() } // non-zero B too
        let net = try Backprop(weights: weights)
        net.lora = lora
        let adapted = try net.logits(batch)
        let merged = ModelWeights(config: config)
        merged.storage.update(from: weights.storage)
        lora.merge(into: merged)
        let viaMerge = try Backprop(weights: merged).logits(batch)
        let diff = zip(adapted, viaMerge).map { abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(diff, 1e-5, "max |adapter forward - merged forward| = \(diff)")
        let base = try Backprop(weights: weights).logits(batch)
        XCTAssertGreaterThan(zip(adapted, base).map { abs($0 - $1) }.max()!, 1e-2, "the adapters should change the model")
    }

    /// Adapter gradients against central differences (float32 loss, step 1e-2).
    func testAdapterGradientsAgreeWithFiniteDifferences() throws {
        let weights = ModelWeights.random(config: config, seed: 4, std: 0.3)
        let lora = try LoRAAdapters(config: LoRAConfig(rank: 2, alpha: 4), model: config)
        var rng = SplitMix64(seed: 5)
        for i in 0..<lora.count { lora.storage[i] = 0.3 * rng.nextNormal() }
        let net = try Backprop(weights: weights)
        net.lora = lora
        let grads = UnsafeMutablePointer<Float>.allocate(capacity: lora.count)
        grads.initialize(repeating: 0, count: lora.count)
        defer { grads.deallocate() }
        let pass = try net.forward(batch)
        let (_, dx) = pass.languageModelLoss(grads: nil)
        pass.backward(dx, grads: nil, loraGrads: grads)
        dx.deallocate()
        func loss() throws -> Double { try net.forward(batch).languageModelLoss(grads: nil, backward: false).0.loss }
        for s in lora.slots {
            for offset in [s.a, s.a + s.inDim + 1, s.b, s.b + s.outDim * lora.config.rank - 1] {
                let saved = lora.storage[offset], h: Float = 1e-2
                lora.storage[offset] = saved + h; let up = try loss()
                lora.storage[offset] = saved - h; let down = try loss()
                lora.storage[offset] = saved
                let numeric = (up - down) / Double(2 * h)
                XCTAssertEqual(Double(grads[offset]), numeric, accuracy: 5e-4 + 1e-2 * abs(numeric), "layer \(s.layer) \(s.target) at \(offset)")
            }
        }
    }

    func testAdapterTrainingLowersTheLossAndLeavesTheBaseAlone() throws {
        let weights = ModelWeights.random(config: config, seed: 6, std: 0.3)
        let before = Array(weights.storage)
        let lora = try LoRAAdapters(config: LoRAConfig(rank: 4, targets: [.q, .v, .down]), model: config)
        lora.initialize(seed: 7)
        let trainer = try Trainer(weights: weights, lora: lora, schedule: LRSchedule(peak: 1e-2, decay: .constant))
        let first = try trainer.step([batch]).loss
        var last = first
        for _ in 0..<40 { last = try trainer.step([batch]).loss }
        XCTAssertLessThan(last, first * 0.5, "loss \(first) -> \(last)")
        XCTAssertEqual(Array(weights.storage), before, "the base must stay frozen")
        XCTAssertEqual(trainer.optimizer.m.count, lora.count)
    }

    func testLoRACheckpointHoldsMergedWeightsAndResumes() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("charter-lora-\(UUID())")
        defer { try? FileManager.default.removeItem(at: folder) }
        let tok = try BPETokenizerFixture.make()
        let c = ModelConfig(layers: 1, width: 16, heads: 2, kvHeads: 1, ffnWidth: 24, vocab: tok.vocabSize, contextLength: 32)
        let base = ModelWeights.random(config: c, seed: 8, std: 0.3)
        let seqs = [TrainingSequence(tokens: [5, 70, 200, 9, 12], lossMask: [0, 1, 1, 1, 1])]
        let lora = try LoRAAdapters(config: LoRAConfig(rank: 2), model: c)
        lora.initialize(seed: 9)
        let trainer = try Trainer(weights: base, lora: lora, schedule: LRSchedule(peak: 1e-2, decay: .constant))
        for _ in 0..<3 { _ = try trainer.step([seqs]) }
        try Checkpoint.saveTraining(LoadedModel(weights: base, tokenizer: tok, source: folder), trainer: trainer, extra: [:], to: folder)
        // The folder's model.safetensors is the merged model: it gives the adapted logits.
        let adapted = try trainer.backprop.logits(seqs)
        let saved = try Backprop(weights: ModelLoader.load(folder.path).weights).logits(seqs)
        XCTAssertLessThanOrEqual(zip(adapted, saved).map { abs($0 - $1) }.max()!, 1e-5)
        let next = try trainer.step([seqs]).loss

        // Resume from the unmerged base: the same next loss.
        let lora2 = try LoRAAdapters(config: LoRAConfig(rank: 2), model: c)
        let resumed = try Trainer(weights: ModelWeights.random(config: c, seed: 8, std: 0.3), lora: lora2, schedule: LRSchedule(peak: 1e-2, decay: .constant))
        _ = try Checkpoint.restoreTraining(resumed, from: folder)
        XCTAssertEqual(resumed.optimizer.step, 3)
        XCTAssertEqual(try resumed.step([seqs]).loss, next, accuracy: 1e-9)
    }

    /// Adapters written as PEFT lays them out read back exactly, and the file's lora_A / lora_B,
    /// multiplied out by hand, give the merged weights: W + (alpha / r) B A.
    func testPEFTLayoutRoundTripsAndMergesByHand() throws {
        let weights = ModelWeights.random(config: config, seed: 1, std: 0.3)
        let lora = try LoRAAdapters(config: LoRAConfig(rank: 2, alpha: 6, targets: [.q, .down]), model: config)
        var rng = SplitMix64(seed: 5)
        for i in 0..<lora.count { lora.storage[i] = Float(rng.nextUniform() - 0.5) }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("charter-peft-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try PEFTAdapters.write(lora, base: "HuggingFaceTB/SmolLM2-135M-Instruct", into: folder)
        let back = try LoRAAdapters(config: lora.config, model: config)
        try PEFTAdapters.read(folder, into: back)
        XCTAssertEqual(Array(back.storage), Array(lora.storage))
        let adapterConfig = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("adapter_config.json"))) as! [String: Any]
        XCTAssertEqual(adapterConfig["r"] as? Int, 2); XCTAssertEqual(adapterConfig["lora_alpha"] as? Double, 6)
        XCTAssertEqual(adapterConfig["target_modules"] as? [String], ["q_proj", "down_proj"])
        XCTAssertEqual(adapterConfig["peft_type"] as? String, "LORA")

        let file = try SafetensorsFile(url: folder.appendingPathComponent("adapter_model.safetensors"))
        let merged = lora.merged(with: weights)
        let C = config.width, HD = config.heads * config.headDim, r = 2
        let a = try XCTUnwrap(file.floats("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight")) // (r, C)
        let b = try XCTUnwrap(file.floats("base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight")) // (HD, r)
        let wq = weights.layout.layer(1).wq
        var worst: Float = 0
        for o in 0..<HD {
            for i in 0..<C {
                let delta = (0..<r).reduce(Float(0)) { $0 + b[o * r + $1] * a[$1 * C + i] } * 3 // alpha / r
                worst = max(worst, abs(weights.storage[wq + o * C + i] + delta - merged.storage[wq + o * C + i]))
            }
        }
        XCTAssertLessThan(worst, 1e-6)
        let stray: [Float] = [1]
        try stray.withUnsafeBufferPointer { try SafetensorsFile.encode([("x", [1], $0)]).write(to: folder.appendingPathComponent("adapter_model.safetensors")) }
        XCTAssertThrowsError(try PEFTAdapters.read(folder, into: back)) { XCTAssertTrue("\($0)".contains("lora_A.weight is missing"), "\($0)") }
    }
}
