import Foundation
import XCTest

/// Named model versions: a model other than the policy reaching workers through the broadcast.
extension CLITests {
    /// Two reward models trained on the same tiny trunk (rm0 a little, rm1 more), a configuration
    /// that names rm0, and score items.
    func rewardModelsFolder(_ label: String) throws -> (dir: URL, config: String, items: String, trained: String) {
        let (dir, tiny) = try tinyModelFolder(label)
        let pairs = (0..<8).map { #"{"prompt": "Say hi \#($0)", "chosen": "Hello there!", "rejected": "No.", "p_chosen": 0.9}"# }
        try Data(pairs.joined(separator: "\n").utf8).write(to: dir.appendingPathComponent("pairs.jsonl"))
        for (name, epochs) in [("rm0", "1"), ("rm1", "3")] {
            let r = try charter("rm", "train", "--model", tiny, "--pairs", dir.appendingPathComponent("pairs.jsonl").path, "--out", "\(dir.path)/\(name)",
                                "--lr", "1e-3", "--batch-size", "4", "--epochs", epochs, "--eval-fraction", "0.25")
            XCTAssertEqual(r.status, 0, r.err)
        }
        let config = dir.appendingPathComponent("score.yaml").path
        try "model: {policy: \"\(tiny)\"}\nreward: {helpfulness_model: \"\(dir.path)/rm0\"}\n".write(toFile: config, atomically: true, encoding: .utf8)
        let items = dir.appendingPathComponent("items.jsonl").path
        let lines = (0..<8).map { #"{"id": "i\#($0)", "prompt": "Say hi \#($0)", "response": "\#($0 % 2 == 0 ? "Hello there!" : "No.")"}"# }
        try (lines.joined(separator: "\n") + "\n").write(toFile: items, atomically: true, encoding: .utf8)
        return (dir, config, items, "\(dir.path)/rm1")
    }

    /// A reward model trained apart from the configuration's reaches 3 workers as reward.helpful
    /// version 1 (they never read its folder): their scores equal those computed in process with
    /// that model, bit for bit, and differ from the configuration's model's.
    func testATrainedRewardModelReachesThreeWorkersAsANewVersion() throws {
        let (dir, config, items, trained) = try rewardModelsFolder("versions")
        func scores(_ out: String, _ extra: [String]) throws -> [String: String] {
            let r = try charter(["stage", "score", "--config", config, "--items", items, "--out", "\(dir.path)/\(out)"] + extra)
            XCTAssertEqual(r.status, 0, r.err)
            if extra.contains("3") {
                XCTAssertEqual(r.err.components(separatedBy: "now at reward.helpful version 1").count - 1, 3, r.err)
                let m = try stageMetrics("\(dir.path)/\(out)/score.metrics.json")
                XCTAssertGreaterThan(m["bytes_broadcast"] as? Int ?? 0, 0)
            }
            return try stageLines("\(dir.path)/\(out)/score.jsonl")
        }
        let original = try scores("original", ["--in-process"])
        let here = try scores("here", ["--in-process", "--model", "reward.helpful=\(trained)"])
        let workers = try scores("workers", ["--workers", "3", "--items-per-task", "2", "--model", "reward.helpful=\(trained)"])
        XCTAssertEqual(here.count, 8)
        XCTAssertEqual(workers, here, "workers scored with another model than the coordinator's")
        XCTAssertNotEqual(original["i0"], here["i0"], "the trained model should score differently from the configuration's")
    }

    func testAModelReplacementThatCannotWorkGivesOneClearLine() throws {
        let (dir, config, items, trained) = try rewardModelsFolder("bad-versions")
        let wide = dir.appendingPathComponent("wide").path
        XCTAssertEqual(try charter("model", "tiny", "--out", wide, "--layers", "1", "--width", "48").status, 0)
        let out = dir.path + "/out"
        let base = ["stage", "score", "--config", config, "--items", items, "--out", out, "--workers", "0"]
        let cases: [(String, String)] = [
            ("reward.helpful", "--model reward.helpful: expected NAME=FOLDER"),
            ("judge=\(trained)", "judge is not a model a stage can replace"),
            ("reward.safety=\(trained)", "the configuration names no safety reward model"),
            ("policy=\(wide)", "do not match the configuration's policy"),
        ]
        for (value, message) in cases {
            let r = try charter(base + ["--model", value])
            XCTAssertNotEqual(r.status, 0, value)
            XCTAssertTrue(r.err.contains(message), "\(value): \(r.err)")
        }
        let twice = try charter(base + ["--model", "reward.helpful=\(trained)", "--model", "reward.helpful=\(trained)"])
        XCTAssertTrue(twice.err.contains("--model names a model twice"), twice.err)
    }
}
