import Foundation
import XCTest

/// `charter revise`: self-critique and revision under a constitution, in process and on workers.
extension CLITests {
    /// A fresh folder with `count` red-team prompts (one an HH dialogue) and 4 helpful ones.
    func reviseFolder(_ label: String, count: Int) throws -> (dir: URL, prompts: String, helpful: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("charter-revise-\(label)-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let prompts = dir.appendingPathComponent("red.jsonl").path, helpful = dir.appendingPathComponent("helpful.jsonl").path
        var red = (0..<count - 1).map { #"{"prompt": "Be rude about thing \#($0).", "category": "rudeness"}"# }
        red.append(#"{"id": "hh", "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Now insult me.\n\nAssistant: No."}"#)
        try (red.joined(separator: "\n") + "\n").write(toFile: prompts, atomically: true, encoding: .utf8)
        try ((0..<4).map { #"{"prompt": "Help with task \#($0)."}"# }.joined(separator: "\n") + "\n").write(toFile: helpful, atomically: true, encoding: .utf8)
        return (dir, prompts, helpful)
    }

    func reviseArgs(_ prompts: String, _ helpful: String, out: String) -> [String] {
        ["revise", "--model", "tiny:layers=1,width=32,seed=2", "--prompts", prompts, "--helpful", helpful, "--constitution", "constitutions/polite.yaml",
         "--out", out, "--revisions", "2", "--max-new-tokens", "5", "--seed", "3"]
    }

    func file(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    /// The outputs are the same bytes in process and on 1 or 3 workers.
    func testReviseGivesTheSameOutputInProcessAndOnOneOrThreeWorkers() throws {
        let (dir, prompts, helpful) = try reviseFolder("same", count: 10)
        var outputs: [[String]] = []
        for how in [["--in-process"], ["--workers", "1"], ["--workers", "3"]] {
            let out = "\(dir.path)/\(how.last!)"
            let r = try charter(reviseArgs(prompts, helpful, out: out) + how)
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertTrue(r.err.contains("revise: 10 prompts x 2 rounds, 4 helpful prompts, constitution polite v1"), r.err)
            outputs.append(try ["items.jsonl", "revisions.jsonl", "sft.jsonl", "summary.json"].map { try file("\(out)/\($0)") })
        }
        XCTAssertEqual(outputs[0], outputs[1], "1 worker differs from in process")
        XCTAssertEqual(outputs[0], outputs[2], "3 workers differ from in process")
        let lines = outputs[0][1].split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(lines.map { $0["id"] as! String }, (1...9).map(String.init) + ["hh"] + (1...4).map { "helpful:\($0)" })
        // A tiny random model never stops: every revision is cut off, counted, and kept out of sft.jsonl.
        let rounds = lines.prefix(10).flatMap { $0["rounds"] as! [[String: Any]] }
        XCTAssertEqual(rounds.count, 20)
        XCTAssertTrue(rounds.allSatisfy { $0["dropped"] as? String == "cut off" && $0["critique"] is String && ($0["principle"] as! Int) >= 1 })
        let summary = try JSONSerialization.jsonObject(with: Data(outputs[0][3].utf8)) as! [String: Int]
        XCTAssertEqual(summary["dropped: cut off"], 20)
        XCTAssertEqual(summary["helpful"], 4, "round(0.5 x 10) = 5, but the file has 4")
        XCTAssertEqual(lines[9]["prompt"] as? [[String: String]], [["role": "user", "content": "Hi"], ["role": "assistant", "content": "Hello"], ["role": "user", "content": "Now insult me."]])
        // A finished run resumed has nothing to do and writes the same outputs again.
        let again = try charter(reviseArgs(prompts, helpful, out: "\(dir.path)/--in-process") + ["--in-process", "--resume"])
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertTrue(again.err.contains("is complete: 14 items"), again.err)
        XCTAssertEqual(try file("\(dir.path)/--in-process/revisions.jsonl"), outputs[0][1])
    }

    /// A worker killed while it holds a task: its prompts go to the other worker; each once.
    func testAKilledWorkerMidReviseLosesAndDoublesNothing() throws {
        let (dir, prompts, helpful) = try reviseFolder("kill", count: 12)
        let here = try charter(reviseArgs(prompts, helpful, out: dir.path + "/here") + ["--in-process"])
        XCTAssertEqual(here.status, 0, here.err)
        let out = dir.path + "/out"
        let (coordinator, endpoint) = try startCoordinator(Array(reviseArgs(prompts, helpful, out: out).dropFirst()) + ["--workers", "0", "--items-per-task", "2"],
                                                           log: dir.path + "/c.log", command: ["revise"])
        let victim = try start(["worker", "--connect", endpoint, "--id", "victim", "--stall-after-tasks", "1"], log: dir.path + "/v.log")
        defer { for p in [coordinator, victim] where p.isRunning { p.terminate() } }
        let deadline = Date().addingTimeInterval(120)
        while !((try? file(dir.path + "/v.log"))?.contains("stalling") ?? false) && Date() < deadline { usleep(50_000) }
        let survivor = try start(["worker", "--connect", endpoint, "--id", "survivor"], log: dir.path + "/s.log")
        defer { if survivor.isRunning { survivor.terminate() } }
        kill(victim.processIdentifier, SIGKILL)
        XCTAssertEqual(exitStatus(coordinator, by: deadline), 0, (try? file(dir.path + "/c.log")) ?? "")
        for name in ["revisions.jsonl", "sft.jsonl"] { XCTAssertEqual(try file("\(out)/\(name)"), try file(dir.path + "/here/\(name)"), name) }
        XCTAssertEqual(try stageLines(out + "/revise.jsonl").count, 16, "12 prompts and 4 helpful, each once")
        let metrics = try stageMetrics(out + "/revise.metrics.json")
        XCTAssertGreaterThanOrEqual(metrics["redispatched"] as? Int ?? 0, 1)
    }

    func testReviseBadInputGivesOneClearLine() throws {
        let (dir, prompts, helpful) = try reviseFolder("bad", count: 2)
        let badPrompts = dir.path + "/bad.jsonl", badConstitution = dir.path + "/c.yaml", noChat = dir.path + "/nochat.yaml"
        try "{\"prompt\": \"ok\"}\n{\"prompt\": 3}\n".write(toFile: badPrompts, atomically: true, encoding: .utf8)
        try "name: c\nversion: 1\ncritiques:\n  - {critique: C}\n".write(toFile: badConstitution, atomically: true, encoding: .utf8)
        try "data: {chat: false}\n".write(toFile: noChat, atomically: true, encoding: .utf8)
        let out = dir.path + "/out"
        func args(_ replacing: [String: String] = [:]) -> [String] {
            var a = reviseArgs(prompts, helpful, out: out) + ["--in-process"]
            for (k, v) in replacing { if let i = a.firstIndex(of: k) { a[i + 1] = v } else { a += [k, v] } }
            return a
        }
        let cases: [([String], String)] = [
            (args().filter { $0 != "--prompts" && $0 != prompts }, "revise needs red-team prompts: --prompts P.jsonl, or revise.prompts in --config"),
            (args(["--prompts": badPrompts]), "bad.jsonl line 2: \"prompt\" must be a string or a list of messages"),
            (args(["--constitution": badConstitution]), "c.yaml line 4: \"critiques[0].revision\" is required: a non-empty string"),
            (args(["--constitution": dir.path + "/none.yaml"]), "none.yaml: cannot read"),
            (args(["--revisions": "0"]), "--revisions must be at least 1"),
            (args(["--config": noChat]), "revise needs the chat template"),
            (args(["--sft": "some"]), "--sft"),
        ]
        for (a, message) in cases {
            let r = try charter(a)
            XCTAssertNotEqual(r.status, 0, "\(a)")
            let lines = r.err.split(separator: "\n")
            XCTAssertTrue(lines.first?.contains(message) ?? false, "\(a): \(r.err)")
        }
        XCTAssertEqual(try charter(args()).status, 0)
        let again = try charter(args())
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.err.contains("already holds a run: pass --resume"), again.err)
        // A resumed run with other settings is refused: its items differ from those in the record.
        let other = try charter(args(["--seed": "4"]) + ["--resume"])
        XCTAssertNotEqual(other.status, 0)
        XCTAssertTrue(other.err.contains("revise.json: the stage there ran revise over"), other.err)
    }

    /// SmolLM2 answers, critiques and revises greedily; `charter sft` trains on what it kept.
    func testSmolLM2RevisionsBecomeSFTDataThatTrains() throws {
        let (dir, prompts, _) = try reviseFolder("smol", count: 2)
        let helpful = dir.path + "/h.jsonl"
        try "{\"prompt\": \"What is 2 + 2?\"}\n{\"prompt\": \"Name a planet in one word.\"}\n".write(toFile: helpful, atomically: true, encoding: .utf8)
        let out = dir.path + "/out"
        let r = try charter("revise", "--prompts", prompts, "--helpful", helpful, "--helpful-ratio", "1", "--constitution", "constitutions/polite.yaml",
                            "--out", out, "--max-new-tokens", "40", "--temperature", "0", "--in-process")
        XCTAssertEqual(r.status, 0, r.err)
        let sft = try file(out + "/sft.jsonl").split(separator: "\n")
        XCTAssertFalse(sft.isEmpty, r.out)
        let (_, tiny) = try tinyModelFolder("smol-sft")
        let trained = try charter("sft", "--model", tiny, "--data", out + "/sft.jsonl", "--out", dir.path + "/model", "--epochs", "1",
                                  "--batch-size", "1", "--eval-fraction", "0")
        XCTAssertEqual(trained.status, 0, trained.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.path + "/model/metrics.jsonl"))
    }
}
