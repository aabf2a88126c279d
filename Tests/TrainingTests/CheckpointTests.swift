import Engine
import Formats
import Foundation
import Tokenizer
import XCTest

final class CheckpointTests: XCTestCase {
    let config = ModelConfig(layers: 2, width: 16, heads: 4, kvHeads: 2, ffnWidth: 24, vocab: 262, ropeTheta: 10000, contextLength: 32)

    func tempFolder() -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("charter-ckpt-\(UUID())")
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func tokenizer() throws -> BPETokenizer { try BPETokenizerFixture.make() }

    func testModelFolderRoundTripIsExact() throws {
        let model = LoadedModel(weights: .random(config: config, seed: 1), tokenizer: try tokenizer(), source: URL(fileURLWithPath: "/"),
                                chatTemplate: "{{ messages }}")
        let a = tempFolder(), b = tempFolder()
        try Checkpoint.saveModel(model, to: a)
        let once = try ModelLoader.load(a.path)
        try Checkpoint.saveModel(once, to: b)
        let twice = try ModelLoader.load(b.path)
        XCTAssertEqual(once.config, config)
        XCTAssertEqual(Array(once.weights.storage), Array(model.weights.storage))
        XCTAssertEqual(Array(twice.weights.storage), Array(model.weights.storage))
        XCTAssertEqual(twice.tokenizer.tokens, model.tokenizer.tokens)
        XCTAssertEqual(twice.tokenizer.eos, 2)
        XCTAssertEqual(twice.chatTemplate, "{{ messages }}")
        XCTAssertEqual(try twice.tokenizer.encode("abc a<|im_end|>"), try model.tokenizer.encode("abc a<|im_end|>"))
        XCTAssertEqual(try Data(contentsOf: a.appendingPathComponent("model.safetensors")), try Data(contentsOf: b.appendingPathComponent("model.safetensors")))
        let names = try FileManager.default.contentsOfDirectory(atPath: a.path).sorted()
        XCTAssertEqual(names, ["config.json", "generation_config.json", "manifest.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
    }

    /// Train 5 steps straight; train 3, save, load into fresh objects, train 2: same losses and weights, bit for bit.
    func testResumeReproducesTheUninterruptedRun() throws {
        let tok = try tokenizer()
        let schedule = LRSchedule(peak: 1e-2, warmupSteps: 2, totalSteps: 5)
        let settings = AdamW.Settings(weightDecay: 0.1)
        var rng = SplitMix64(seed: 3)
        let batches: [[TrainingSequence]] = (0..<5).map { _ in
            (0..<3).map { _ in
                let t = (0..<7).map { _ in Int32(rng.next() % 262) }
                return TrainingSequence(tokens: t, lossMask: [0, 0, 1, 1, 1, 1, 1])
            }
        }
        let straight = try Trainer(weights: .random(config: config, seed: 2), schedule: schedule, settings: settings)
        let straightLosses = try batches.map { try straight.step([$0]).loss }

        let first = try Trainer(weights: .random(config: config, seed: 2), schedule: schedule, settings: settings)
        for b in batches[0..<3] { _ = try first.step([b]) }
        let folder = tempFolder()
        try Checkpoint.saveTraining(LoadedModel(weights: first.weights, tokenizer: tok, source: folder), trainer: first,
                                    extra: ["cursor": 3], to: folder)
        let reloaded = try ModelLoader.load(folder.path)
        let resumed = try Trainer(weights: reloaded.weights, schedule: schedule, settings: settings)
        let extra = try Checkpoint.restoreTraining(resumed, from: folder)
        XCTAssertEqual(extra["cursor"] as? Int, 3)
        XCTAssertEqual(resumed.optimizer.step, 3)
        let resumedLosses = try batches[3...].map { try resumed.step([$0]).loss }
        XCTAssertEqual(resumedLosses, Array(straightLosses[3...]))
        XCTAssertEqual(Array(resumed.weights.storage), Array(straight.weights.storage))
    }

    /// A checkpoint whose model.safetensors is bfloat16 (half the bytes, weights rounded) still
    /// resumes exactly: the float32 weights travel in optimizer.safetensors. One saved without the
    /// optimizer state loads as a model and refuses to resume.
    func testAHalfPrecisionCheckpointResumesExactly() throws {
        let tok = try tokenizer()
        let trainer = try Trainer(weights: .random(config: config, seed: 2), schedule: LRSchedule(peak: 1e-2, totalSteps: 5))
        let batch = [TrainingSequence(tokens: [5, 9, 17, 33, 2], lossMask: [0, 1, 1, 1, 1])]
        for _ in 0..<2 { _ = try trainer.step([batch]) }
        let full = tempFolder(), half = tempFolder(), export = tempFolder()
        let model = LoadedModel(weights: trainer.weights, tokenizer: tok, source: full)
        try Checkpoint.saveTraining(model, trainer: trainer, extra: [:], to: full)
        try Checkpoint.saveTraining(model, trainer: trainer, extra: [:], as: .bf16, to: half)
        try Checkpoint.saveTraining(model, trainer: trainer, extra: [:], as: .bf16, optimizerState: false, to: export)
        func size(_ folder: URL, _ file: String) throws -> Int { try Data(contentsOf: folder.appendingPathComponent(file)).count }
        XCTAssertLessThan(try size(half, "model.safetensors"), try size(full, "model.safetensors") / 2 + 4096)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: half.appendingPathComponent("config.json"))) as! [String: Any]
        XCTAssertEqual(config["torch_dtype"] as? String, "bfloat16")
        let rounded = try ModelLoader.load(half.path)
        let worst = zip(rounded.weights.storage, trainer.weights.storage).map { abs($0 - $1) / max(abs($1), 1e-30) }.max()!
        XCTAssertGreaterThan(worst, 0, "bfloat16 rounds")
        XCTAssertLessThanOrEqual(worst, 1.0 / 256, "bfloat16 keeps 8 significant bits")
        let resumed = try Trainer(weights: rounded.weights, schedule: LRSchedule(peak: 1e-2, totalSteps: 5))
        _ = try Checkpoint.restoreTraining(resumed, from: half)
        XCTAssertEqual(Array(resumed.weights.storage), Array(trainer.weights.storage), "the float32 weights come back exactly")
        XCTAssertFalse(FileManager.default.fileExists(atPath: export.appendingPathComponent("optimizer.safetensors").path))
        let exported = try ModelLoader.load(export.path)
        let again = try ModelLoader.load(half.path) // kept in a constant: its weights' storage lives as long as it does
        XCTAssertEqual(Array(exported.weights.storage), Array(again.weights.storage), "the same rounded weights")
        XCTAssertThrowsError(try Checkpoint.restoreTraining(try Trainer(weights: exported.weights, schedule: LRSchedule(peak: 1)), from: export)) {
            XCTAssertTrue("\($0)".contains("was saved without its optimizer state (--no-optimizer-state), so it cannot be resumed"), "\($0)")
        }
    }

    /// The manifest lists every file; a byte flipped, a file cut short or gone, or the manifest
    /// itself gone: each refused with one line naming the file, before anything is restored.
    func testACheckpointWhoseBytesChangedIsRefused() throws {
        let folder = tempFolder()
        let model = LoadedModel(weights: .random(config: config, seed: 1), tokenizer: try tokenizer(), source: folder)
        let lora = try LoRAAdapters(config: LoRAConfig(rank: 2), model: config)
        let trainer = try Trainer(weights: model.weights, lora: lora, schedule: LRSchedule(peak: 1))
        try Checkpoint.saveTraining(model, trainer: trainer, extra: [:], files: ["metrics.jsonl": Data("{}\n".utf8)], to: folder)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("manifest.json"))) as! [String: [String: Any]]
        XCTAssertEqual(manifest["files"]!.keys.sorted(), ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "config.json", "generation_config.json",
                                                          "metrics.jsonl", "model.safetensors", "optimizer.safetensors", "tokenizer.json", "tokenizer_config.json", "trainer_state.json"])
        XCTAssertNoThrow(try Checkpoint.restoreTraining(trainer, from: folder))

        let optimizer = folder.appendingPathComponent("optimizer.safetensors")
        let good = try Data(contentsOf: optimizer)
        var flipped = good
        flipped[flipped.count - 3] ^= 0x10
        try flipped.write(to: optimizer)
        XCTAssertThrowsError(try Checkpoint.restoreTraining(trainer, from: folder)) {
            XCTAssertTrue("\($0)".hasPrefix("\(optimizer.path): checksum "), "\($0)")
            XCTAssertTrue("\($0)".hasSuffix("; the checkpoint is damaged"), "\($0)")
        }
        try good.prefix(good.count - 1).write(to: optimizer)
        XCTAssertThrowsError(try Checkpoint.restoreTraining(trainer, from: folder)) {
            XCTAssertEqual("\($0)", "\(optimizer.path): \(good.count - 1) bytes, the manifest says \(good.count); the checkpoint is damaged")
        }
        try good.write(to: optimizer)
        let adapter = folder.appendingPathComponent("adapter/adapter_model.safetensors")
        try FileManager.default.removeItem(at: adapter)
        XCTAssertThrowsError(try Checkpoint.restoreTraining(trainer, from: folder)) { XCTAssertEqual("\($0)", "\(adapter.path): missing; the checkpoint is damaged") }
        try FileManager.default.removeItem(at: folder.appendingPathComponent("manifest.json"))
        XCTAssertThrowsError(try Checkpoint.restoreTraining(trainer, from: folder)) {
            XCTAssertEqual("\($0)", "\(folder.path) has no manifest.json: not a checkpoint Charter finished writing (or one written before checkpoints had manifests; start again with --overwrite)")
        }
    }

    func testBrokenCheckpointsAreNamed() throws {
        let folder = tempFolder()
        let model = LoadedModel(weights: .random(config: config, seed: 1), tokenizer: try tokenizer(), source: folder)
        try Checkpoint.saveModel(model, to: folder)
        let trainer = try Trainer(weights: model.weights, schedule: LRSchedule(peak: 1))
        XCTAssertThrowsError(try Checkpoint.restoreTraining(trainer, from: folder)) { XCTAssertTrue("\($0)".contains("trainer_state.json"), "\($0)") }
        // A truncated model.safetensors names the tensor and the size.
        let st = folder.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: st)
        try data.prefix(data.count - 100).write(to: st)
        XCTAssertThrowsError(try ModelLoader.load(folder.path)) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }
        try Data("{\"hidden_size\": \"wide\"}".utf8).write(to: folder.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try ModelLoader.load(folder.path)) { XCTAssertTrue("\($0)".contains("\"hidden_size\" must be an integer"), "\($0)") }
        XCTAssertThrowsError(try ModelLoader.load("/nonexistent/folder")) { XCTAssertEqual("\($0)", "model /nonexistent/folder not found") }
    }

    func testSmolLM2TokenizerSurvivesTheHuggingFaceFormat() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        let original = try GGUFModel.tokenizer(of: GGUFFile(url: url))
        let folder = tempFolder()
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try HFTokenizer.tokenizerJSON(original).write(to: folder.appendingPathComponent("tokenizer.json"))
        try HFTokenizer.configJSON(original, contextLength: 8192, chatTemplate: nil).write(to: folder.appendingPathComponent("tokenizer_config.json"))
        let back = try HFTokenizer.load(folder)
        XCTAssertEqual(back.tokens, original.tokens)
        XCTAssertEqual(back.merges.count, original.merges.count)
        XCTAssertTrue(zip(back.merges, original.merges).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 })
        XCTAssertEqual([back.bos, back.eos, back.pad, back.unknown], [1, 2, 2, 0])
        let text = "<|im_start|>user\nWhat's 12+7? Ünïcödé 東京 🐍<|im_end|>"
        XCTAssertEqual(try back.encode(text), try original.encode(text))
    }

    /// tokenizer.json's vocabulary and merges are written without Foundation (which takes seconds
    /// to sort 49k keys): its string literals must read back as they were.
    func testHandWrittenJSONStringsReadBack() throws {
        for s in ["a\"b", "back\\slash", "tab\tnew\nline\u{1}", "Ġé中🐍", ""] {
            let parsed = try JSONSerialization.jsonObject(with: Data(("[" + HFTokenizer.quoted(s) + "]").utf8)) as? [String]
            XCTAssertEqual(parsed, [s])
        }
    }
}
