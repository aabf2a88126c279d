@testable import Alignment
import Engine
import Formats
import Foundation
import Logging
import XCTest

/// The run drivers in process: a run stopped at a checkpoint and resumed by a new driver ends with
/// the same bytes (weights) and the same numbers (metrics) as the run left alone. Tiny random
/// models with SmolLM2's tokenizer (models/ must hold the default model).
final class RunDriverTests: XCTestCase {
    var folder: URL!
    let logger = Logger(label: "test")
    let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../examples").standardized.path

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("charter-driver-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

    /// A tiny RL run configuration in the test folder, its run folder `run`.
    func rlConfig(_ algorithm: String, lora: Bool) throws -> String {
        let yaml = """
        run: {dir: run, iterations: 3, seed: 4}
        model: {policy: "tiny:layers=1,width=32,seed=3"\(lora ? ", lora: {rank: 2}" : "")}
        data: {prompts: \(examples)/prompts.jsonl, prompts_per_iteration: 4}
        reward:
          rules: [{type: keyword, value: "e", weight: 1}]
        algorithm:
          name: \(algorithm)
          ppo: {epochs: 2, minibatch_size: 4, critic: head, learning_rate: 0.003}
          rejection: {learning_rate: 0.003}
        rollout: {samples_per_prompt: 2, max_new_tokens: 4}
        """
        let path = folder.appendingPathComponent("\(algorithm).yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func rlDriver(_ config: String, _ start: RunStart) throws -> RLDriver {
        try RLDriver(configPath: config, start: start, logger: logger,
                     scorer: { c, tok, base, rates, _ in try c.makeScorer(tokenizer: tok, base: base, rates: rates) },
                     source: { c, _, tok, _, _ in InProcessRollouts(settings: c.rolloutSettings(tokenizer: tok), runSeed: c.seed) })
    }

    /// The metrics lines without the fields that measure time.
    func figures(_ metricsFile: URL) throws -> [[String: String]] {
        try String(contentsOf: metricsFile, encoding: .utf8).split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return object.filter { !$0.key.hasSuffix("seconds") && $0.key != "time" }.mapValues { "\($0)" }
        }
    }

    func checkStoppedAndResumedRunMatches(_ algorithm: String, lora: Bool) throws {
        let config = try rlConfig(algorithm, lora: lora)
        let run = folder.appendingPathComponent("run")
        try rlDriver(config, .fresh).execute()
        let whole = try Data(contentsOf: run.appendingPathComponent("policy/model.safetensors"))
        let wholeFigures = try figures(run.appendingPathComponent("metrics.jsonl"))
        XCTAssertEqual(wholeFigures.count, 3)

        try rlDriver(config, .overwrite).execute(stopAt: 1)
        XCTAssertEqual(try figures(run.appendingPathComponent("metrics.jsonl")).count, 1)
        let resumed = try rlDriver(config, .resume)
        XCTAssertEqual(resumed.run.iteration, 0, "the checkpoint is read when the run starts, not when it is built")
        try resumed.execute()
        XCTAssertEqual(resumed.run.iteration, 3)
        XCTAssertEqual(try Data(contentsOf: run.appendingPathComponent("policy/model.safetensors")), whole, "\(algorithm): resumed weights differ")
        XCTAssertEqual(try figures(run.appendingPathComponent("metrics.jsonl")), wholeFigures, "\(algorithm): resumed metrics differ")

        // A finished run resumed again does nothing; a fresh start in its folder is refused.
        try rlDriver(config, .resume).execute()
        XCTAssertEqual(try figures(run.appendingPathComponent("metrics.jsonl")).count, 3)
        XCTAssertThrowsError(try rlDriver(config, .fresh)) { error in
            XCTAssertTrue("\(error)".contains("already holds a run"), "\(error)")
        }
    }

    /// A full disk under a run's log is an error naming the file, not a crash; a line cut off by it
    /// is dropped when the log is opened again (resume).
    func testAFullDiskIsAnErrorNamingTheLogAndACutLineIsDropped() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("charter-runlog-\(UUID()).jsonl")
        defer { try? FileManager.default.removeItem(at: url) }
        let log = try RunLog(url, keepBefore: 0)
        try log.write(["iteration": 0, "reward": 1])
        let full = open("/dev/full", O_WRONLY)
        XCTAssertGreaterThanOrEqual(full, 0)
        dup2(full, log.handle.fileDescriptor) // writes now fail as on a full disk (ENOSPC)
        close(full)
        XCTAssertThrowsError(try log.write(["iteration": 1, "reward": 2])) { error in
            XCTAssertTrue("\(error)".contains("\(url.path): cannot write ("), "\(error)")
            XCTAssertFalse("\(error)".contains("\n"))
        }
        try Data("{\"iteration\": 0}\n{\"iteration\": 1, \"rew".utf8).write(to: url)
        _ = try RunLog(url, keepBefore: 2)
        XCTAssertEqual(try String(contentsOf: url, encoding: .utf8), "{\"iteration\": 0}\n", "the cut line is gone, the whole one kept")
    }

    func testAStoppedPPORunResumesToTheSameWeightsAndMetrics() throws {
        try checkStoppedAndResumedRunMatches("ppo", lora: false)
    }

    func testAStoppedRejectionSamplingRunWithLoRAResumesToTheSameWeightsAndMetrics() throws {
        try checkStoppedAndResumedRunMatches("rejection", lora: true)
    }

    func sftDriver(_ out: String, _ start: RunStart, lora: Bool = false) throws -> EpochDriver {
        var settings = SFTSettings()
        settings.epochs = 2; settings.batchSize = 8; settings.learningRate = 3e-3
        var job = TrainingJob(out: out, baseModel: "tiny:layers=1,width=32,seed=3", data: "\(examples)/sft-sample.jsonl")
        job.settings = try JSONEncoder().encode(settings)
        if lora { job.lora = LoRAConfig(rank: 2, alpha: nil, targets: [.q, .v]) }
        return try EpochDriver(job: job, start: start, logger: logger, load: { try ModelLoader.load($0) }) { model, adapters in
            let data = try ChatData.load(URL(fileURLWithPath: job.data), tokenizer: model.tokenizer, maxLength: 96)
            let (train, heldOut) = SFTRun.split(data.examples.map(\.sequence), heldOutFraction: 0.1, seed: 0)
            return try SFTRun(weights: model.weights, lora: adapters, train: train, heldOut: heldOut, settings: settings)
        }
    }

    func testAStoppedSFTRunResumesToTheSameWeights() throws {
        for lora in [false, true] {
            let whole = folder.appendingPathComponent("whole-\(lora)").path, stopped = folder.appendingPathComponent("stopped-\(lora)").path
            try sftDriver(whole, .fresh, lora: lora).execute()
            let first = try sftDriver(stopped, .fresh, lora: lora)
            try first.execute(stopAt: first.run.stepsPerEpoch) // the end of epoch 1: its checkpoint
            let resumed = try sftDriver(stopped, .resume, lora: lora)
            XCTAssertEqual(resumed.run.batchesDone, first.run.stepsPerEpoch)
            try resumed.execute()
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: stopped + "/model.safetensors")),
                           try Data(contentsOf: URL(fileURLWithPath: whole + "/model.safetensors")), "lora \(lora): resumed weights differ")
            let steps = { (out: String) in try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").count }
            XCTAssertEqual(try steps(stopped), try steps(whole))
        }
    }

    func testAResumeWithOtherSettingsIsRefused() throws {
        let out = folder.appendingPathComponent("sft").path
        let first = try sftDriver(out, .fresh)
        try first.execute(stopAt: first.run.stepsPerEpoch)
        var job = first.job
        var settings = SFTSettings()
        settings.epochs = 2; settings.batchSize = 8; settings.learningRate = 1e-3
        job.settings = try JSONEncoder().encode(settings)
        job.settingsOptions = "--lr"
        XCTAssertThrowsError(try EpochDriver(job: job, start: .resume, logger: logger, load: { try ModelLoader.load($0) }) { _, _ in first.run }) { error in
            XCTAssertTrue("\(error)".contains("the options differ from the run in \(out); use the same --lr"), "\(error)")
        }
        job.keep = 0
        XCTAssertThrowsError(try EpochDriver(job: job, start: .resume, logger: logger, load: { try ModelLoader.load($0) }) { _, _ in first.run }) { error in
            XCTAssertEqual("\(error)", "keep must be at least 1, found 0")
        }
    }

    /// A checkpoint whose bytes changed after it was written is refused on resume, before any of it
    /// is used (it would otherwise resume and fail later, or not at all).
    func testAResumeFromADamagedCheckpointIsRefused() throws {
        let config = try rlConfig("ppo", lora: false)
        try rlDriver(config, .fresh).execute(stopAt: 1)
        let state = folder.appendingPathComponent("run/checkpoint/state.safetensors")
        var bytes = try Data(contentsOf: state)
        bytes[bytes.count - 5] ^= 0x01
        try bytes.write(to: state)
        XCTAssertThrowsError(try rlDriver(config, .resume).execute()) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(state.path): checksum "), "\(error)")
        }
        // Behind the manifest, values no run can continue from (as a faulty writer might seal them).
        let json = folder.appendingPathComponent("run/checkpoint/state.json")
        let good = try String(contentsOf: json, encoding: .utf8)
        for (field, value, message) in [("iteration", "999", "iteration 999 is outside 0...3"), ("iteration", "-1", "iteration -1 is outside 0...3"),
                                        ("cursor", "-5", "cursor -5 is outside 0..."), ("policyVersion", "-3", "policyVersion -3 is outside 0...")] {
            let damaged = good.replacingOccurrences(of: #""\#(field)"\s*:\s*-?[0-9]+"#, with: "\"\(field)\": \(value)", options: .regularExpression)
            XCTAssertNotEqual(damaged, good, field)
            try damaged.write(to: json, atomically: true, encoding: .utf8)
            try CheckpointManifest.write(in: json.deletingLastPathComponent())
            XCTAssertThrowsError(try rlDriver(config, .resume).execute()) { error in
                XCTAssertTrue("\(error)".contains(message) && "\(error)".contains("the checkpoint is damaged"), "\(error)")
            }
        }
    }

    /// An iteration generates all its sequences at once: more than their caches can hold in this
    /// machine's memory is refused before the run folder is touched.
    func testAnIterationTooLargeForTheMachineIsRefusedBeforeTheRunStarts() throws {
        let path = try rlConfig("ppo", lora: false)
        let text = try String(contentsOfFile: path, encoding: .utf8)
            .replacingOccurrences(of: "samples_per_prompt: 2", with: "samples_per_prompt: 2000000000")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try rlDriver(path, .fresh)) { error in
            XCTAssertTrue("\(error)".contains("an iteration of 8000000000 sequences (data.prompts_per_iteration x rollout.samples_per_prompt) of up to "), "\(error)")
            XCTAssertTrue("\(error)".contains("more than this machine's"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("run").path))
    }
}
