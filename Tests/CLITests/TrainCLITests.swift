import Foundation
import XCTest

/// `charter train`: the recipe in rounds on the tiny model, in process and on workers, stopped and resumed.
extension CLITests {
    /// A folder with copies of examples/ and constitutions/, and examples/cai-tiny.yaml writing its run
    /// to RUN (with `edit` applied to the configuration's text).
    func trainFolder(_ label: String, edit: (String) -> String = { $0 }) throws -> (dir: URL, config: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("charter-train-\(label)-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        for folder in ["examples", "constitutions"] {
            try FileManager.default.copyItem(at: Self.root.appendingPathComponent(folder), to: dir.appendingPathComponent(folder))
        }
        let config = dir.appendingPathComponent("examples/cai-tiny.yaml").path
        try edit(try file(config)).write(toFile: config, atomically: true, encoding: .utf8)
        return (dir, config)
    }

    func json(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
    }

    /// Every stage of examples/cai-tiny.yaml, two rounds, in process; then on 2 workers, killed
    /// (kill -9) inside each stage in turn and resumed: the same policy, bit for bit, the same
    /// evaluation, and every label once.
    func testTrainRunsTheTinyRecipeAndResumesToTheSameOutputs() throws {
        let (dir, config) = try trainFolder("tiny")
        let run = dir.appendingPathComponent("runs/cai-tiny").path
        let first = try charter(["train", "--config", config, "--in-process"])
        XCTAssertEqual(first.status, 0, first.err)
        XCTAssertEqual(try json(run + "/final.json")["policy"] as? String, run + "/round-2/ppo/policy")
        let stages = try file(run + "/stages.jsonl").split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(stages.map { "\($0["round"]!) \($0["stage"]!)" },
                       ["0 sl_cai"] + [1, 2].flatMap { k in ["pairs", "label", "reward_models", "rejection", "ppo", "eval"].map { "\(k) \($0)" } })
        XCTAssertEqual(stages[0]["policy_unchanged"] as? Bool, true, "a random model's revisions are all cut off")
        for group in ["helpful", "harmless"] {
            XCTAssertEqual(try file(run + "/round-1/label/\(group).jsonl").split(separator: "\n").count, 8, "8 pairs a round")
            XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/round-2/reward_models/\(group)/score_head.safetensors"))
        }
        // Round 2's rejection sampling also weighs the 16 answers round 1 kept (8 prompts an iteration, the same prompts).
        let kept1 = try jsonLines(run + "/round-1/rejection/kept.jsonl"), kept2 = try jsonLines(run + "/round-2/rejection/kept.jsonl")
        XCTAssertEqual(kept1.count, 16)
        XCTAssertTrue(kept1.allSatisfy { $0["pooled_from"] == nil && ($0["response_tokens"] as? [Int])?.count == 8 })
        XCTAssertEqual(kept2.count, 16)
        XCTAssertTrue(kept2.allSatisfy { ($0["pooled_from"] as? String ?? run + "/round-1/rejection/kept.jsonl") == run + "/round-1/rejection/kept.jsonl" })
        XCTAssertEqual(try jsonLines(run + "/round-2/rejection/metrics.jsonl").map { $0["pooled"] as? Int }, [8, 8])
        XCTAssertNil(try jsonLines(run + "/round-1/rejection/metrics.jsonl")[0]["pooled"], "round 1 has nothing to pool")
        let summary = try json(run + "/round-2/eval/summary.json")
        let wins = try XCTUnwrap(summary["win_rates"] as? [String: [String: [String: Any]]])
        XCTAssertEqual(Set(wins.keys), ["start", "previous"], "round 2 meets the start and round 1")
        for (_, groups) in wins {
            XCTAssertEqual(Set(groups.keys), ["helpful", "harmless"])
            for (_, w) in groups {
                let rate = w["win_rate"] as! Double, low = w["low"] as! Double, high = w["high"] as! Double
                XCTAssertTrue(0 <= low && low <= rate && rate <= high && high <= 1, "\(w)")
                XCTAssertEqual(w["prompts"] as? Int, 16)
            }
        }
        // The win rate is the labels' own: recomputed from the judge's p_a of each held-out prompt.
        let p = try file(run + "/round-2/eval/vs-start-harmless.jsonl").split(separator: "\n")
            .map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["p_a"] as! Double }
        XCTAssertEqual(wins["start"]!["harmless"]!["win_rate"] as! Double, Double(p.filter { $0 > 0.5 }.count) / 16 + Double(p.filter { $0 == 0.5 }.count) / 32, accuracy: 1e-12)
        let policies = try XCTUnwrap(summary["policies"] as? [String: [String: Any]])
        XCTAssertEqual(policies["policy"]?["mean_tokens"] as? Double, 8, "a random model fills max_new_tokens")
        XCTAssertNotNil(policies["start"]?["reward_harmless"] as? Double)
        // KL to the reference (the start): the start's own answers score 0 up to float rounding,
        // generation's log-probs against a fresh forward pass of the same model.
        XCTAssertEqual(try XCTUnwrap(policies["start"]?["kl_to_reference"] as? Double), 0, accuracy: 1e-3)
        XCTAssertNotNil(policies["policy"]?["kl_to_reference"] as? Double)

        try checkReport(run, stages: stages, summary: summary)

        // On workers, killed (kill -9) inside each stage in turn and resumed each time.
        let other = dir.appendingPathComponent("runs/other").path
        let moved = config.replacingOccurrences(of: "cai-tiny.yaml", with: "cai-other.yaml")
        try file(config).replacingOccurrences(of: "../runs/cai-tiny", with: "../runs/other").write(toFile: moved, atomically: true, encoding: .utf8)
        let steps = stages.map { "round-\($0["round"]!)/\($0["stage"]!)" }
        var killedInside: [String] = [], killedPids: [Int32] = [], starts = 0
        for step in steps where !FileManager.default.fileExists(atPath: "\(other)/\(step)/done.json") {
            let began = Date()
            let p = try start(["train", "--config", moved, "--workers", "2"] + (starts > 0 ? ["--resume"] : []), log: "\(dir.path)/killed-\(starts).log")
            starts += 1
            // Inside the stage: once it has written a file (an RL stage: once an iteration is logged).
            let rl = step.hasSuffix("ppo") || step.hasSuffix("rejection"), deadline = Date().addingTimeInterval(300)
            while p.isRunning && Date() < deadline && !wrote("\(other)/\(step)", since: began, only: rl ? "metrics.jsonl" : nil) { usleep(5_000) }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            killedPids.append(p.processIdentifier)
            XCTAssertTrue(p.endedBySignal, "killed in \(step)")
            if !FileManager.default.fileExists(atPath: "\(other)/\(step)/done.json") { killedInside.append(step) }
            if starts == 1 {
                let refused = try charter(["train", "--config", moved, "--workers", "2"])
                XCTAssertNotEqual(refused.status, 0)
                XCTAssertTrue(refused.err.contains("already holds a run: pass --resume"), refused.err)
            }
        }
        XCTAssertTrue(killedInside.contains("round-1/ppo") && killedInside.contains("round-1/label"), "\(killedInside)")
        // The killed runs' workers end by themselves, however early their parent died.
        let orphansGone = Date().addingTimeInterval(20)
        while !workers(of: killedPids).isEmpty && Date() < orphansGone { usleep(50_000) }
        XCTAssertEqual(workers(of: killedPids), [], "workers outlived the killed train process")
        let resumed = try charter(["train", "--config", moved, "--workers", "2", "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.err)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: other + "/round-2/ppo/policy/model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: run + "/round-2/ppo/policy/model.safetensors")))
        XCTAssertEqual(try file(other + "/round-2/eval/vs-previous-helpful.jsonl"), try file(run + "/round-2/eval/vs-previous-helpful.jsonl"))
        func escaped(_ path: String) -> String { path.replacingOccurrences(of: "/", with: "\\/") } // as JSON writes it
        XCTAssertEqual(try file(other + "/round-2/rejection/kept.jsonl").replacingOccurrences(of: escaped(other), with: escaped(run)),
                       try file(run + "/round-2/rejection/kept.jsonl"), "the same answers kept, pooled from the same round")
        // Every label once: the same lines as the uninterrupted run's, none twice (workers append in arrival order).
        for labels in ["round-1/label/harmless.jsonl", "round-2/label/helpful.jsonl"] {
            let lines = try file("\(other)/\(labels)").split(separator: "\n")
            XCTAssertEqual(lines.sorted(), try file("\(run)/\(labels)").split(separator: "\n").sorted(), labels)
        }
        // A finished run resumed does nothing; a changed configuration is refused.
        let again = try charter(["train", "--config", moved, "--in-process", "--resume"])
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertEqual(again.err.components(separatedBy: "done before").count - 1, 13)
        try (try file(moved) + "\n# changed\n").write(toFile: moved, atomically: true, encoding: .utf8)
        let changed = try charter(["train", "--config", moved, "--in-process", "--resume"])
        XCTAssertNotEqual(changed.status, 0)
        XCTAssertTrue(changed.err.contains("config.yaml differs from"), changed.err)
    }

    /// DPO instead of reward models and RL: one round, and the policy it leaves is DPO's.
    func testTrainWithDPOAndBadRecipes() throws {
        let (dir, config) = try trainFolder("dpo") {
            $0.replacingOccurrences(of: "stages: [sl_cai, pairs, label, reward_models, rejection, ppo, eval]", with: "stages: [pairs, label, dpo, eval]")
                .replacingOccurrences(of: "rounds: 2", with: "rounds: 1").replacingOccurrences(of: "  rejection: {pool: true}\n", with: "")
        }
        let run = dir.appendingPathComponent("runs/cai-tiny").path
        let r = try charter(["train", "--config", config, "--in-process"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try json(run + "/final.json")["policy"] as? String, run + "/round-1/dpo/policy")
        XCTAssertEqual(try file(run + "/round-1/dpo/pairs.jsonl").split(separator: "\n").count, 16, "both label sets")
        XCTAssertNotNil(try json(run + "/round-1/eval/summary.json")["win_rates"])

        let bad = config.replacingOccurrences(of: "cai-tiny.yaml", with: "bad.yaml")
        for (text, message) in [("run: {dir: x}\n", "bad.yaml: no \"recipe\" section"),
                                ("run: {dir: x}\ndata: {prompts: prompts.jsonl}\nrecipe: {stages: [pairs, ppo]}\n", "ppo needs a reward: the reward_models stage"),
                                ("recipe: {stages: [sl_cai]}\n", "sl_cai needs red-team prompts in revise.prompts")] {
            try text.write(toFile: bad, atomically: true, encoding: .utf8)
            let refused = try charter(["train", "--config", bad, "--in-process"], in: dir)
            XCTAssertNotEqual(refused.status, 0)
            XCTAssertTrue(refused.err.contains(message), refused.err)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("examples/x").path))
        }
    }

    /// The pids of live worker processes started by one of `parents` (their --exit-with-parent).
    func workers(of parents: [Int32]) -> [Int32] {
        let wanted = Set(parents.map(String.init))
        return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }.filter { pid in
            guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let args = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let i = args.firstIndex(of: "--exit-with-parent"), i + 1 < args.count else { return false }
            return wanted.contains(args[i + 1])
        }.sorted()
    }

    /// Whether a file under `folder` (named `only`, if given) was written since `date`.
    func wrote(_ folder: String, since date: Date, only name: String? = nil) -> Bool {
        guard let files = FileManager.default.enumerator(atPath: folder) else { return false }
        return files.contains { f in
            let path = "\(folder)/\(f)"
            guard name.map({ (f as! String).hasSuffix($0) }) ?? true,
                  let a = try? FileManager.default.attributesOfItem(atPath: path), a[.type] as? FileAttributeType == .typeRegular,
                  (a[.size] as? Int ?? 0) > 0, let m = a[.modificationDate] as? Date else { return false }
            return m >= date
        }
    }

    /// The exact value of the page's number cell `id`.
    func cell(_ page: String, _ id: String) -> Double? {
        guard let start = page.range(of: "id=\"\(id)\" data-value=\"") else { return nil }
        return Double(page[start.upperBound...].prefix { $0 != "\"" })
    }

    /// `charter report` on the tiny run: its numbers are those of the stages' files.
    func checkReport(_ run: String, stages: [[String: Any]], summary: [String: Any]) throws {
        let r = try charter(["report", run])
        XCTAssertEqual(r.status, 0, r.err)
        let page = try file(run + "/report.html")
        // Self-contained: no script, nothing fetched (text on the page has its quotes escaped).
        XCTAssertFalse(page.contains("<script") || page.contains("src=\"") || page.contains("href=\""))
        for s in stages {
            XCTAssertEqual(cell(page, "time-r\(s["round"]!)-\(s["stage"]!)"), s["seconds"] as? Double, "\(s)")
        }
        let wins = summary["win_rates"] as! [String: [String: [String: Any]]]
        for against in ["start", "previous"] { for group in ["helpful", "harmless"] { for key in ["win_rate", "low", "high"] {
            let id = ["win_rate": "win", "low": "low", "high": "high"][key]! + "-r2-\(against)-\(group)"
            XCTAssertEqual(cell(page, id), wins[against]![group]![key] as? Double, id)
        } } }
        XCTAssertEqual(cell(page, "eval-r2-policy-mean_tokens"), 8)
        // The labeler's position bias, from the label file's orders: a shown first, then b shown first.
        let labels = try file(run + "/round-1/label/harmless.jsonl").split(separator: "\n")
            .map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["p_a_orders"] as! [Double] }
        let first = labels.flatMap { [$0[0], 1 - $0[1]] }.reduce(0, +) / Double(2 * labels.count)
        XCTAssertEqual(try XCTUnwrap(cell(page, "label-r1-harmless-first")), first, accuracy: 1e-12)
        // PPO's KL curve carries the metrics file's values.
        let kl = try file(run + "/round-1/ppo/metrics.jsonl").split(separator: "\n")
            .map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["kl"] as! Double }
        let chart = try XCTUnwrap(page.range(of: "id=\"chart-r1-ppo-kl\""))
        let values = try XCTUnwrap(page[chart.upperBound...].range(of: "data-y=\"")).upperBound
        XCTAssertEqual(page[values...].prefix { $0 != "\"" }.split(separator: " ").map { Double($0)! }, kl)
        XCTAssertTrue(page.contains("Sample answers, round 2"))

        // Bad input: not a run folder; a damaged metrics file, named with its stage.
        let notRun = try charter(["report", run + "/round-1"])
        XCTAssertNotEqual(notRun.status, 0)
        XCTAssertTrue(notRun.err.contains("round-1: not a charter train run folder"), notRun.err)
        let metrics = run + "/round-1/ppo/metrics.jsonl", kept = try file(metrics)
        try (kept + "{broken\n").write(toFile: metrics, atomically: true, encoding: .utf8)
        let damaged = try charter(["report", run])
        XCTAssertNotEqual(damaged.status, 0)
        XCTAssertTrue(damaged.err.contains("round-1/ppo/metrics.jsonl line 3: not valid JSON"), damaged.err) // 2 iterations, then the broken line
        try kept.write(toFile: metrics, atomically: true, encoding: .utf8)
    }
}
