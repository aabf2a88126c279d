import Foundation
import XCTest

/// Direct RLAIF (`reward.judge`): the feedback model's rating as the reward, in process and on workers.
extension CLITests {
    /// The judge scores on the workers of a distributed run; the rewards, the ratings and the
    /// trained weights are the same as in one process, with 1 or 2 workers.
    func testJudgeRewardIsTheSameInProcessAndOnWorkers() throws {
        let (dir, tiny) = try tinyModelFolder("judge")
        var metrics: [[[String: Any]]] = [], weights: [Data] = []
        for (label, command) in [("rl", ["rl"]), ("one", ["local", "--workers", "1"]), ("two", ["local", "--workers", "2", "--prompts-per-task", "1"])] {
            let (path, text) = try runConfig(dir, name: label, run: label, model: tiny, iterations: 2, seed: 4, prompts: 4, tokens: 6,
                                             ppo: "epochs: 1, minibatch_size: 8, critic: head, learning_rate: 0.001")
            let judged = text.replacingOccurrences(of: "reward:\n", with: "reward:\n  judge: {principle: \"How kind is the answer?\", weight: 2}\n")
            try Data(judged.utf8).write(to: URL(fileURLWithPath: path))
            let r = try charter(command + ["--config", path])
            XCTAssertEqual(r.status, 0, r.err)
            metrics.append(try jsonLines("\(dir.path)/\(label)/metrics.jsonl"))
            weights.append(try Data(contentsOf: dir.appendingPathComponent("\(label)/policy/model.safetensors")))
        }
        for m in metrics[0] {
            let rating = try XCTUnwrap(m["judge_rating_mean"] as? Double, "the mean rating is in the metrics")
            XCTAssertTrue(rating > 1 && rating < 10, "\(rating)")
        }
        for key in ["reward_mean", "judge_rating_mean", "kl", "policy_loss"] {
            XCTAssertEqual(metrics[1].map { $0[key] as? Double }, metrics[0].map { $0[key] as? Double }, key)
            XCTAssertEqual(metrics[2].map { $0[key] as? Double }, metrics[0].map { $0[key] as? Double }, key)
        }
        let samples = try jsonLines("\(dir.path)/rl/samples.jsonl")
        XCTAssertTrue(samples.allSatisfy { $0["judge_rating"] is Double }, "each logged sample has its rating")
        XCTAssertEqual(weights[1], weights[0], "1 worker must reach the in-process run's weights")
        XCTAssertEqual(weights[2], weights[0], "2 workers must reach the in-process run's weights")
    }

    /// A judge section without its principle stops the run before anything starts, with one line.
    func testJudgeWithoutAPrincipleIsRefused() throws {
        let (dir, tiny) = try tinyModelFolder("judge-bad")
        let (path, text) = try runConfig(dir, model: tiny, iterations: 1, seed: 1, prompts: 2)
        try Data(text.replacingOccurrences(of: "reward:\n", with: "reward:\n  judge: {weight: 2}\n").utf8).write(to: URL(fileURLWithPath: path))
        let r = try charter("rl", "--config", path)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertEqual(r.err.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").last,
                       "Error: c.yaml line 5: \"reward.judge.principle\" is required (the question the feedback model rates each response under)")
    }
}
