import Foundation
import XCTest

/// `charter stage` over real worker processes on loopback.
extension CLITests {
    /// A fresh folder (removed after the test) with a stage configuration on a tiny model made from
    /// its spec (a keyword rule for score) and `count` items that every kind can read.
    func stageFolder(_ label: String, count: Int) throws -> (dir: URL, config: String, items: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("charter-stage-\(label)-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let config = dir.appendingPathComponent("stage.yaml").path
        try """
            run: {seed: 4}
            model: {policy: "tiny:layers=1,width=32,seed=2"}
            reward:
              rules: [{type: keyword, value: "a", weight: 1}]
            rollout: {max_new_tokens: 6}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let items = dir.appendingPathComponent("items.jsonl").path
        let lines = try (0..<count).map { i -> String in
            let o: [String: Any] = ["id": "item-\(i)", "prompt": "Tell me about thing \(i).", "steps": ["Critique that.", "Rewrite it."],
                                    "options": [" (A)", " (B)"], "response": i % 2 == 0 ? "a cat" : "no", "tag": i]
            return String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self)
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: items, atomically: true, encoding: .utf8)
        return (dir, config, items)
    }

    /// The output's lines by id; fails if an id is there twice.
    func stageLines(_ path: String) throws -> [String: String] {
        var byId: [String: String] = [:]
        for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let id = o["id"] as! String
            XCTAssertNil(byId[id], "\(id) is in \(path) twice")
            byId[id] = String(line)
        }
        return byId
    }

    func stageMetrics(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
    }

    /// Every kind gives the same lines, bit for bit, in process and on 1 or 3 workers.
    func testEachStageKindGivesTheSameOutputInProcessAndOnOneOrThreeWorkers() throws {
        let (dir, config, items) = try stageFolder("kinds", count: 12)
        for kind in ["generate", "revise", "options", "score"] {
            var outputs: [[String: String]] = []
            for how in [["--in-process"], ["--workers", "1"], ["--workers", "3"]] {
                let out = "\(dir.path)/\(kind)-\(how.last!)"
                let r = try charter(["stage", kind, "--config", config, "--items", items, "--out", out] + how)
                XCTAssertEqual(r.status, 0, r.err)
                XCTAssertTrue(r.err.contains("stage \(kind): 12 items in"), r.err)
                outputs.append(try stageLines("\(out)/\(kind).jsonl"))
            }
            XCTAssertEqual(outputs[0].count, 12)
            XCTAssertEqual(outputs[0], outputs[1], "\(kind): 1 worker differs from in process")
            XCTAssertEqual(outputs[0], outputs[2], "\(kind): 3 workers differ from in process")
            let line = try JSONSerialization.jsonObject(with: Data(outputs[0]["item-0"]!.utf8)) as! [String: Any]
            XCTAssertEqual(line["tag"] as? Int, 0, "input fields are kept")
            switch kind {
            case "generate": XCTAssertNotNil(line["text"] as? String)
            case "revise": XCTAssertEqual((line["answers"] as? [String])?.count, 3)
            case "options": XCTAssertEqual((line["option_logprobs"] as? [Double])?.count, 2)
            default: XCTAssertEqual(line["rule_reward"] as? Double, 1, "\"a cat\" has the keyword")
            }
        }
    }

    func testStageBadInputGivesOneClearLine() throws {
        let (dir, config, items) = try stageFolder("bad", count: 2)
        let bad = dir.appendingPathComponent("bad.jsonl").path
        try "{\"prompt\": \"x\"}\n{\"text\": \"y\"}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let noRewards = dir.appendingPathComponent("plain.yaml").path
        try "model: {policy: \"tiny:layers=1,width=32\"}\n".write(toFile: noRewards, atomically: true, encoding: .utf8)
        let out = dir.path + "/out"
        let cases: [([String], String)] = [
            (["stage", "generate", "--config", config, "--items", bad, "--out", out, "--in-process"], "bad.jsonl line 2: needs a non-empty string \"prompt\""),
            (["stage", "revise", "--config", config, "--items", bad, "--out", out], "line 1: revise needs \"steps\""),
            (["stage", "score", "--config", noRewards, "--items", items, "--out", out], "a score stage needs reward models, a judge or rules"),
            (["stage", "judge", "--config", config, "--items", items, "--out", out], "judge"),
            (["stage", "generate", "--config", config, "--items", items, "--out", out, "--items-per-task", "0"], "--items-per-task must be at least 1"),
        ]
        for (args, message) in cases {
            let r = try charter(args)
            XCTAssertNotEqual(r.status, 0, args.joined(separator: " "))
            XCTAssertTrue(r.err.contains(message), "\(args): \(r.err)")
        }
        let first = try charter("stage", "generate", "--config", config, "--items", items, "--out", out, "--in-process")
        XCTAssertEqual(first.status, 0, first.err)
        let again = try charter("stage", "generate", "--config", config, "--items", items, "--out", out, "--in-process")
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.err.contains("pass --resume to continue it, or --overwrite"), again.err)
        let done = try charter("stage", "generate", "--config", config, "--items", items, "--out", out, "--in-process", "--resume")
        XCTAssertEqual(done.status, 0, done.err)
        XCTAssertTrue(done.err.contains("is complete: 2 items"), done.err)
        let changed = dir.appendingPathComponent("changed.jsonl").path
        try (try String(contentsOfFile: items, encoding: .utf8) + "{\"prompt\": \"one more\"}\n").write(toFile: changed, atomically: true, encoding: .utf8)
        let other = try charter("stage", "generate", "--config", config, "--items", changed, "--out", out, "--resume")
        XCTAssertNotEqual(other.status, 0)
        XCTAssertTrue(other.err.contains("generate.json: the stage there ran generate over"), other.err)
    }

    /// A worker killed while it holds a task: its items go to the other worker; each item once.
    func testAKilledWorkerMidStageLosesAndDoublesNoItem() throws {
        let (dir, config, items) = try stageFolder("killw", count: 16)
        let reference = try charter("stage", "generate", "--config", config, "--items", items, "--out", dir.path + "/here", "--in-process")
        XCTAssertEqual(reference.status, 0, reference.err)
        let out = dir.path + "/out"
        let (stage, endpoint) = try startCoordinator(["--config", config, "--items", items, "--out", out, "--workers", "0", "--items-per-task", "2"],
                                                     log: dir.path + "/c.log", command: ["stage", "generate"])
        // The victim works alone until it holds its second task, then the survivor joins and the victim dies.
        let victim = try start(["worker", "--connect", endpoint, "--id", "victim", "--stall-after-tasks", "1"], log: dir.path + "/v.log")
        defer { for p in [stage, victim] where p.isRunning { p.terminate() } }
        let deadline = Date().addingTimeInterval(120)
        while !((try? String(contentsOfFile: dir.path + "/v.log", encoding: .utf8))?.contains("stalling") ?? false) && Date() < deadline { usleep(50_000) }
        let survivor = try start(["worker", "--connect", endpoint, "--id", "survivor"], log: dir.path + "/s.log")
        defer { if survivor.isRunning { survivor.terminate() } }
        kill(victim.processIdentifier, SIGKILL)
        XCTAssertEqual(exitStatus(stage, by: deadline), 0, (try? String(contentsOfFile: dir.path + "/c.log", encoding: .utf8)) ?? "")
        XCTAssertEqual(try stageLines(out + "/generate.jsonl"), try stageLines(dir.path + "/here/generate.jsonl"))
        let metrics = try stageMetrics(out + "/generate.metrics.json")
        XCTAssertGreaterThanOrEqual(metrics["redispatched"] as? Int ?? 0, 1)
        XCTAssertEqual(metrics["items_dispatched"] as? Int, 16 + 2 * (metrics["redispatched"] as? Int ?? 0))
    }

    /// kill -9 of the coordinator mid-stage and `--resume`: the output ends with every item once, and
    /// the restarted coordinator dispatches only the items not in the file, each once.
    func testAKilledStageResumesWithoutDispatchingAnItemTwice() throws {
        let (dir, config, items) = try stageFolder("killc", count: 20)
        let reference = try charter("stage", "revise", "--config", config, "--items", items, "--out", dir.path + "/here", "--in-process")
        XCTAssertEqual(reference.status, 0, reference.err)
        let out = dir.path + "/out"
        let args = ["--config", config, "--items", items, "--out", out, "--workers", "0", "--items-per-task", "2"]
        let (stage, endpoint) = try startCoordinator(args, log: dir.path + "/c1.log", command: ["stage", "revise"])
        // The worker stops itself when its fourth task arrives, so the coordinator has its first three
        // results (6 items) in the file and the kill comes at a known point.
        let worker = try start(["worker", "--connect", endpoint, "--id", "w", "--pause-after-tasks", "3"], log: dir.path + "/w.log")
        addTeardownBlock { if worker.isRunning { kill(worker.processIdentifier, SIGCONT); kill(worker.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(120)
        while !Self.isStopped(worker.processIdentifier) && worker.isRunning && Date() < deadline { usleep(10_000) }
        XCTAssertTrue(Self.isStopped(worker.processIdentifier), "the worker should have paused itself")
        kill(stage.processIdentifier, SIGKILL)
        stage.waitUntilExit()
        let before = try stageLines(out + "/revise.jsonl").count
        XCTAssertEqual(before, 6)
        kill(worker.processIdentifier, SIGCONT)
        let resumed = try charter(["stage", "revise"] + args + ["--bind", endpoint, "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.err)
        XCTAssertTrue(resumed.err.contains("14 of 20 items to do"), resumed.err)
        XCTAssertEqual(try stageLines(out + "/revise.jsonl"), try stageLines(dir.path + "/here/revise.jsonl"))
        let metrics = try stageMetrics(out + "/revise.metrics.json")
        XCTAssertEqual(metrics["items_dispatched"] as? Int, 20 - before, "no item dispatched twice after the restart")
        XCTAssertEqual(metrics["items_run"] as? Int, 20 - before)
    }

    /// The protocol is language-neutral: scripts/python-worker (pyzmq and protoc's Python classes,
    /// Debian's /usr/bin/python3) registers, heartbeats, and answers a generate stage; items of
    /// a kind it does not do come back as item errors, and the stage still ends.
    func testThePythonWorkerAnswersAGenerateStage() throws {
        let (dir, config, items) = try stageFolder("python", count: 10)
        for kind in ["generate", "options"] {
            let out = "\(dir.path)/\(kind)"
            let (stage, endpoint) = try startCoordinator(["--config", config, "--items", items, "--out", out, "--workers", "0", "--items-per-task", "3"],
                                                         log: "\(dir.path)/\(kind).log", command: ["stage", kind])
            let workerLog = "\(dir.path)/\(kind)-py.log"
            let worker = try start([Self.root.path + "/scripts/python-worker/worker.py", "--connect", endpoint, "--id", "py-\(kind)"],
                                   log: workerLog, executable: "/usr/bin/python3")
            defer { for p in [stage, worker] where p.isRunning { p.terminate() } }
            let deadline = Date().addingTimeInterval(60)
            let (stageStatus, workerStatus) = (exitStatus(stage, by: deadline), exitStatus(worker, by: deadline))
            let logs = [workerLog, "\(dir.path)/\(kind).log"].map { (try? String(contentsOfFile: $0, encoding: .utf8)) ?? "" }.joined(separator: "\n")
            XCTAssertEqual(stageStatus, 0, logs)
            XCTAssertEqual(workerStatus, 0, logs)
            let lines = try stageLines("\(out)/\(kind).jsonl").mapValues { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
            XCTAssertEqual(lines.count, 10)
            for i in 0..<10 {
                let line = lines["item-\(i)"]
                if kind == "generate" {
                    XCTAssertEqual(line?["text"] as? String, "synthetic answer: Tell me about thing \(i).")
                } else {
                    XCTAssertEqual(line?["error"] as? String, "the Python worker answers generate tasks only, not OPTIONS")
                }
            }
        }
    }
}
