import Foundation
import XCTest

/// `charter label`: AI preference labels, in process and on workers.
extension CLITests {
    func labelFolder(_ label: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("charter-label-\(label)-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func labelArgs(out: String, pairs: String = "examples/polite-pairs.jsonl") -> [String] {
        ["label", "--judge", "tiny:layers=1,width=32,seed=2", "--pairs", pairs, "--constitution", "constitutions/default.yaml",
         "--out", out, "--principles", "2", "--seed", "3"]
    }

    func jsonLines(_ path: String) throws -> [[String: Any]] {
        try file(path).split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
    }

    /// The labels are the same bytes in process and on 1 or 3 workers, in the input's order, ready
    /// for `charter rm train`.
    func testLabelGivesTheSameOutputInProcessAndOnOneOrThreeWorkers() throws {
        let dir = try labelFolder("same")
        var outputs: [String] = []
        for how in [["--in-process"], ["--workers", "1"], ["--workers", "3", "--items-per-task", "4"]] {
            let out = "\(dir.path)/\(how[how.count > 2 ? 1 : how.count - 1]).jsonl"
            let r = try charter(labelArgs(out: out) + how)
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertTrue(r.err.contains("label: 24 pairs x 2 principles x 2 orders = 96 questions, constitution default v1"), r.err)
            XCTAssertTrue(r.err.contains("label: 24 pairs (0 errors)"), r.err)
            outputs.append(try file(out))
        }
        XCTAssertEqual(outputs[0], outputs[1], "1 worker differs from in process")
        XCTAssertEqual(outputs[0], outputs[2], "3 workers differ from in process")
        let lines = try jsonLines("\(dir.path)/--in-process.jsonl")
        XCTAssertEqual(lines.map { $0["id"] as! Int }, Array(0..<24))
        for l in lines {
            let pa = l["p_a"] as! Double, orders = l["p_a_orders"] as! [Double]
            XCTAssertEqual(pa, (orders[0] + orders[1]) / 2, accuracy: 1e-9)
            XCTAssertEqual(l["chosen"] as? String, pa >= 0.5 ? l["a"] as? String : l["b"] as? String)
            XCTAssertEqual(l["p_chosen"] as! Double, max(pa, 1 - pa), accuracy: 1e-12)
            XCTAssertEqual((l["principles"] as! [Int]).count, 2)
            XCTAssertNotNil(l["better"], "input fields are kept")
        }
        let questions = try stageLines("\(dir.path)/--in-process.stage/options.jsonl")
        XCTAssertEqual(questions.count, 96, "each question once")
        let trained = try charter("rm", "train", "--model", "tiny:layers=1,width=32,seed=2", "--pairs", "\(dir.path)/--in-process.jsonl",
                                  "--out", "\(dir.path)/rm", "--epochs", "1", "--eval-fraction", "0")
        XCTAssertEqual(trained.status, 0, "the labels train a reward model: \(trained.err)")
    }

    /// Chain of thought: a rationale stage, then the letters after each rationale; the same bytes
    /// in process and on 2 workers.
    func testLabelWithChainOfThoughtGivesTheSameOutputInProcessAndOnWorkers() throws {
        let dir = try labelFolder("cot")
        var outputs: [String] = []
        for how in [["--in-process"], ["--workers", "2"]] {
            let out = "\(dir.path)/\(how[0]).jsonl"
            let r = try charter(labelArgs(out: out) + ["--cot", "--cot-tokens", "6"] + how)
            XCTAssertEqual(r.status, 0, r.err)
            outputs.append(try file(out))
            XCTAssertEqual(try stageLines("\(dir.path)/\(how[0]).stage/rationales.jsonl").count, 96, "a rationale per question")
            let prompts = try jsonLines("\(dir.path)/\(how[0]).stage/items.jsonl").map { $0["prompt"] as! String }
            XCTAssertTrue(prompts.allSatisfy { $0.contains("step by step") && $0.hasSuffix("\nThe answer is: (") && !$0.contains("assistant\nThe answer is: (") },
                          "the letters come after the rationale")
        }
        XCTAssertEqual(outputs[0], outputs[1])
        XCTAssertEqual(try jsonLines("\(dir.path)/--in-process.jsonl").count, 24)
    }

    /// A finished labelling resumed asks nothing again; a fresh start on it is refused; --overwrite starts again.
    func testLabelResumesWithoutAskingAgainAndRefusesToOverwriteByAccident() throws {
        let dir = try labelFolder("resume")
        let out = dir.path + "/labels.jsonl"
        XCTAssertEqual(try charter(labelArgs(out: out) + ["--in-process"]).status, 0)
        let first = try file(out)
        let again = try charter(labelArgs(out: out) + ["--in-process"])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.err.contains("labels.jsonl already exists: pass --resume to finish the labels it came from, or --overwrite to label again"), again.err)
        let resumed = try charter(labelArgs(out: out) + ["--in-process", "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.err)
        XCTAssertTrue(resumed.err.contains("is complete: 96 items"), resumed.err)
        XCTAssertEqual(try file(out), first)
        let other = try charter(labelArgs(out: out) + ["--in-process", "--resume", "--principles", "1"])
        XCTAssertNotEqual(other.status, 0, "other questions are not the run the folder holds")
        XCTAssertTrue(other.err.contains("options.json: the stage there ran options over"), other.err)
        let overwritten = try charter(labelArgs(out: out) + ["--in-process", "--overwrite", "--principles", "1"])
        XCTAssertEqual(overwritten.status, 0, overwritten.err)
        XCTAssertEqual(try stageLines(dir.path + "/labels.stage/options.jsonl").count, 48)
    }

    func testLabelBadInputGivesOneClearLine() throws {
        let dir = try labelFolder("bad")
        let badPairs = dir.path + "/bad.jsonl", noComparisons = dir.path + "/c.yaml", unknown = dir.path + "/u.jsonl"
        try "{\"prompt\": \"p\", \"a\": \"x\", \"b\": \"y\"}\n{\"prompt\": \"p\", \"a\": \"x\"}\n".write(toFile: badPairs, atomically: true, encoding: .utf8)
        try "{\"prompt\": \"p\", \"a\": \"x\", \"b\": \"y\"}\n".write(toFile: unknown, atomically: true, encoding: .utf8)
        try "name: c\nversion: 1\ncritiques:\n  - {critique: C, revision: R}\n".write(toFile: noComparisons, atomically: true, encoding: .utf8)
        let out = dir.path + "/out.jsonl"
        func args(_ replacing: [String: String] = [:]) -> [String] {
            var a = labelArgs(out: out) + ["--in-process"]
            for (k, v) in replacing { if let i = a.firstIndex(of: k) { a[i + 1] = v } else { a += [k, v] } }
            return a
        }
        let cases: [([String], String)] = [
            (args(["--pairs": badPairs]), "bad.jsonl line 2: \"b\" must be a non-empty string (an answer to the prompt)"),
            (args(["--pairs": dir.path + "/none.jsonl"]), "none.jsonl: cannot read"),
            (args(["--constitution": noComparisons]), "constitution c has no comparisons: the labeler asks its comparison questions"),
            (args(["--principles": "17"]), "--principles 17: the constitution has 16 comparisons to draw from"),
            (args(["--principles": "0"]), "--principles must be at least 1"),
            (args(["--tag": "funny"]), "has no comparisons tagged \"funny\""),
            (args(["--clamp": "0.6,0.4"]), "--clamp 0.6,0.4: give two probabilities LO,HI with 0 <= LO < HI <= 1, such as 0.4,0.6"),
            (args(["--clamp": "0.4"]), "--clamp 0.4: give two probabilities"),
            (args(["--few-shot": "5"]), "--few-shot 5: the constitution has 1 worked comparison"),
            (args(["--orders": "three"]), "--orders"),
            (args(["--pairs": unknown]) + ["--eval"], "--eval needs pairs with a \"better\" field (\"a\" or \"b\")"),
            (args(["--judge": dir.path + "/missing.gguf"]), "missing.gguf not found"),
        ]
        for (a, message) in cases {
            let r = try charter(a)
            XCTAssertNotEqual(r.status, 0, "\(a)")
            let lines = r.err.split(separator: "\n")
            XCTAssertTrue(lines.first?.contains(message) ?? false, "\(a): \(r.err)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(a): a refused run writes no labels")
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.path + "/out.stage"), "\(a): nor a stage folder")
        }
    }

    /// SmolLM2 judging politeness on pairs with an obvious answer: it prefers a position, so one
    /// order alone is often wrong; averaging both orders agrees with the known answer far more often.
    func testSmolLM2JudgeAgreesWithKnownPairsOnlyWithBothOrders() throws {
        let dir = try labelFolder("smol")
        let r = try charter("label", "--pairs", "examples/polite-pairs.jsonl", "--constitution", "constitutions/polite.yaml",
                            "--out", dir.path + "/labels.jsonl", "--eval", "--in-process")
        XCTAssertEqual(r.status, 0, r.err)
        func agreed(_ row: String) throws -> Int {
            let line = try XCTUnwrap(r.out.split(separator: "\n").first { $0.contains("agreement, \(row):") }, r.out)
            return Int(line.split(separator: ":")[1].split(separator: "/")[0].trimmingCharacters(in: .whitespaces))!
        }
        let aFirst = try agreed("a shown first, one principle"), bFirst = try agreed("b shown first, one principle")
        let both = try agreed("both orders, one principle")
        XCTAssertGreaterThanOrEqual(both, 18, "of 24 obvious pairs:\n\(r.out)")
        XCTAssertGreaterThan(both, max(aFirst, bFirst), r.out)
        XCTAssertTrue(r.out.contains("expected calibration error of p_a (10 bins):"), r.out)
    }
}

/// `charter label --judge-url`: a judge behind an OpenAI-compatible server (scripts/fake-openai-server.py).
extension CLITests {
    /// Starts the stand-in server (its request log in `log`) and returns it with its address.
    func fakeJudge(_ options: [String], log: String) throws -> (process: Child, url: String) {
        let p = try start(["python3", "scripts/fake-openai-server.py", "--log", log] + options, log: log + ".out", executable: "/usr/bin/env")
        let deadline = Date().addingTimeInterval(30)
        var said = ""
        while p.isRunning && Date() < deadline && !said.hasSuffix("\n") { usleep(10_000); said = (try? String(contentsOfFile: log + ".out", encoding: .utf8)) ?? "" }
        let port = try XCTUnwrap(said.split(separator: "\n").first { $0.hasPrefix("port ") }?.dropFirst(5), "the fake judge did not say its port: \(said)")
        return (p, "http://127.0.0.1:\(port)")
    }

    /// Per prompt hash, the outcomes the server logged.
    func judgeLog(_ path: String) throws -> [String: [String]] {
        var byPrompt: [String: [String]] = [:]
        for line in try file(path).split(separator: "\n") {
            let parts = line.split(separator: " ").map(String.init)
            byPrompt[parts[0], default: []].append(parts[1])
        }
        return byPrompt
    }

    func endpointArgs(_ url: String, out: String) -> [String] {
        ["label", "--pairs", "examples/polite-pairs.jsonl", "--out", out, "--judge-url", url, "--judge-model", "fake",
         "--judge-timeout", "2.5", "--judge-retries", "4"]
    }

    /// Under 429s, 500s, time-outs, answers that trickle in and never end, dropped connections and
    /// bodies that are not JSON, every label ends up in the output once, each question is answered
    /// (paid) once, the failures are counted, and the labels equal those of a server that never fails. Run again with
    /// --overwrite, every answer comes from the cache: not one request.
    func testLabelThroughAFaultyEndpointLosesAndRepeatsNothing() throws {
        let dir = try labelFolder("endpoint")
        let (_, faulty) = try fakeJudge(["--faults"], log: dir.path + "/faulty.log")
        let out = dir.path + "/labels.jsonl"
        let r = try charter(endpointArgs(faulty, out: out))
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try jsonLines(out).count, 24)
        let asked = try judgeLog(dir.path + "/faulty.log").filter { $0.key != "-" }
        XCTAssertEqual(asked.count, 48, "48 questions")
        XCTAssertTrue(asked.values.allSatisfy { $0.filter { $0 == "ok" }.count == 1 }, "each answered once: \(asked)")
        XCTAssertTrue(asked.values.contains { $0.contains("trickle") }, "an answer trickled byte by byte was given up on and asked again")
        let metrics = try stageMetrics(dir.path + "/labels.stage/judge.metrics.json")
        let failures = metrics["failures"] as! [String: Int]
        for reason in ["429", "5xx", "malformed", "timeout"] { XCTAssertGreaterThanOrEqual(failures[reason] ?? 0, 1, "\(reason): \(metrics)") }
        XCTAssertTrue(r.err.contains("label: judge endpoint: "), r.err)

        let (_, healthy) = try fakeJudge([], log: dir.path + "/healthy.log")
        XCTAssertEqual(try charter(endpointArgs(healthy, out: dir.path + "/healthy.jsonl")).status, 0)
        XCTAssertEqual(try file(dir.path + "/healthy.jsonl"), try file(out), "the faults changed no label")

        // Requests are counted as they arrive (a slow answer's own line comes later).
        func requests() throws -> Int { try judgeLog(dir.path + "/faulty.log").values.reduce(0) { $0 + $1.filter { $0 == "asked" }.count } }
        let before = try requests()
        let again = try charter(endpointArgs(faulty, out: out) + ["--overwrite"])
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertEqual(try requests(), before, "no request: the cache answered")
        XCTAssertEqual(try stageMetrics(dir.path + "/labels.stage/judge.metrics.json")["cache_hits"] as? Int, 48)
        XCTAssertEqual(try file(out), try file(dir.path + "/healthy.jsonl"))
    }

    /// Killed mid-run and resumed: every question answered before the kill is not asked again
    /// (at most the requests in flight at the kill are), and the labels are complete.
    func testLabelThroughAnEndpointResumesAfterAKillWithoutAskingAgain() throws {
        let dir = try labelFolder("endpoint-kill")
        let (_, slow) = try fakeJudge(["--delay", "0.2"], log: dir.path + "/slow.log")
        let out = dir.path + "/labels.jsonl"
        let args = endpointArgs(slow, out: out) + ["--judge-concurrency", "2", "--items-per-task", "4"]
        let p = try start(args, log: dir.path + "/label.log")
        let cache = dir.path + "/labels.stage/judge-cache.jsonl"
        let deadline = Date().addingTimeInterval(60)
        while p.isRunning && Date() < deadline && ((try? file(cache))?.split(separator: "\n").count ?? 0) < 12 { usleep(20_000) }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "killed before the end")
        let resumed = try charter(args + ["--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.err)
        XCTAssertEqual(try jsonLines(out).count, 24)
        // A request the kill cut between its headers and its body is logged under "-", not a question.
        let asked = try judgeLog(dir.path + "/slow.log").filter { $0.key != "-" }
        XCTAssertEqual(asked.count, 48)
        XCTAssertLessThanOrEqual(asked.values.filter { $0.filter { $0 == "asked" }.count > 1 }.count, 2, "only what was in flight at the kill is asked again: \(asked)")
    }

    /// Through /v1/chat/completions the question goes as chat turns and the letters' log-probs are
    /// read where the answer names one; faults are retried as for completions.
    func testLabelThroughAChatEndpointReadsTheNamedLetter() throws {
        let dir = try labelFolder("endpoint-chat")
        let (_, faulty) = try fakeJudge(["--faults"], log: dir.path + "/chat.log")
        let out = dir.path + "/labels.jsonl"
        let r = try charter(endpointArgs(faulty, out: out) + ["--judge-api", "chat"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try jsonLines(out).count, 24)
        let asked = try judgeLog(dir.path + "/chat.log").filter { $0.key != "-" }
        XCTAssertEqual(asked.count, 48)
        XCTAssertTrue(asked.values.allSatisfy { $0.filter { $0 == "ok" }.count == 1 }, "each answered once: \(asked)")
        XCTAssertEqual(try stageMetrics(dir.path + "/labels.stage/judge.metrics.json")["missing_options"] as? Int, 0)
        let items = try jsonLines(dir.path + "/labels.stage/items.jsonl")
        XCTAssertTrue(items.allSatisfy { ($0["messages"] as? [[String: String]])?.last?["role"] == "user" && $0["prompt"] == nil }, "chat turns, no rendered prompt")
    }

    func testLabelEndpointOptionsAreChecked() throws {
        let dir = try labelFolder("endpoint-bad")
        let (_, keyed) = try fakeJudge(["--key", "right"], log: dir.path + "/keyed.log")
        let out = dir.path + "/labels.jsonl"
        let cases: [([String], String)] = [
            (endpointArgs("127.0.0.1:9", out: out), "--judge-url 127.0.0.1:9: give the server's address, such as http://127.0.0.1:8000"),
            (endpointArgs(keyed, out: out).filter { $0 != "--judge-model" && $0 != "fake" }, "--judge-url needs --judge-model"),
            (endpointArgs(keyed, out: out) + ["--judge", "models/x.gguf"], "--judge and --judge-url exclude each other"),
            (endpointArgs(keyed, out: out) + ["--judge-concurrency", "0"], "--judge-concurrency must be at least 1"),
            (endpointArgs(keyed, out: out) + ["--cot", "--judge-api", "chat"], "--cot needs --judge-api completions"),
            (endpointArgs(keyed, out: out) + ["--judge-key-env", "CHARTER_TEST_NO_SUCH_VARIABLE"], "the environment has no CHARTER_TEST_NO_SUCH_VARIABLE"),
            (endpointArgs(keyed, out: out) + ["--overwrite"], "answered 401: {\"error\": \"bad key\"}"),
        ]
        for (a, message) in cases {
            let r = try charter(a)
            XCTAssertNotEqual(r.status, 0, "\(a)")
            XCTAssertTrue(r.err.split(separator: "\n").contains { $0.contains(message) }, "\(a): \(r.err)")
        }
    }
}

/// `charter label --judge-url` against a real OpenAI-compatible server no one here wrote.
extension CLITests {
    /// llama-cpp-python's server on the F32 conversion of the default model (scripts/setup-peer.sh,
    /// which .ci/run runs), with an F32 KV cache: its labels for 20 pairs equal the local judge's on
    /// the same weights within 1e-4 (measured: 3e-6), since both read the same prompt text. (With
    /// llama.cpp's default F16 KV cache the difference was 6.5e-4.)
    func testLabelThroughLlamaCppServerAgreesWithTheLocalJudge() throws {
        let python = Self.root.appendingPathComponent(".bench/venv/bin/python").path, f32 = "models/smollm2-135m-f32.gguf"
        guard FileManager.default.isExecutableFile(atPath: python), FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(f32).path) else {
            throw XCTSkip("no llama-cpp-python server in .bench/venv or no \(f32): run scripts/setup-peer.sh")
        }
        let dir = try labelFolder("llamacpp")
        let pairs = dir.path + "/pairs.jsonl"
        try (try file("examples/polite-pairs.jsonl")).split(separator: "\n").prefix(20).joined(separator: "\n").appending("\n").write(toFile: pairs, atomically: true, encoding: .utf8)
        // A free port: bind port 0, read it, let it go (the server takes it a moment later).
        let port = try freeLoopbackPort()
        let serverLog = dir.path + "/server.log"
        let server = try start(["-m", "llama_cpp.server", "--model", f32, "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", "\(port)",
                                "--n_ctx", "2048", "--n_threads", "2", "--logits_all", "true", "--type_k", "0", "--type_v", "0"],
                               log: serverLog, executable: python)
        defer { server.terminate(); server.waitUntilExit(seconds: 30) }
        let url = "http://127.0.0.1:\(port)"
        let deadline = Date().addingTimeInterval(120)
        while server.isRunning && Date() < deadline && (try? Data(contentsOf: URL(string: url + "/v1/models")!)) == nil { usleep(200_000) }
        XCTAssertTrue(server.isRunning, (try? file(serverLog)) ?? "")

        try labelsThroughTheServerAgreeWithTheLocalJudge(url: url, judge: f32, concurrency: 1, pairs: pairs, dir: dir)
        try ratingsThroughTheServerAgreeWithTheLocalJudge(url: url, f32: f32, pairs: pairs, dir: dir)
    }

    /// `charter label` through the server at `url` (model name smollm2) against the local judge
    /// `judge` on the same 20 pairs: p_a within 1e-4, no option missing from the top log-probs; and
    /// through `/v1/chat/completions` (the server's own chat template), a label for every pair.
    func labelsThroughTheServerAgreeWithTheLocalJudge(url: String, judge: String, concurrency: Int, pairs: String, dir: URL) throws {
        let remote = try charter("label", "--pairs", pairs, "--out", dir.path + "/remote.jsonl", "--judge-url", url, "--judge-model", "smollm2",
                                 "--judge-concurrency", String(concurrency))
        XCTAssertEqual(remote.status, 0, remote.err)
        let local = try charter("label", "--pairs", pairs, "--out", dir.path + "/local.jsonl", "--judge", judge, "--in-process")
        XCTAssertEqual(local.status, 0, local.err)
        let r = try jsonLines(dir.path + "/remote.jsonl"), l = try jsonLines(dir.path + "/local.jsonl")
        XCTAssertEqual(r.count, 20)
        var worst = 0.0
        for (a, b) in zip(r, l) { worst = max(worst, abs((a["p_a"] as! Double) - (b["p_a"] as! Double))) }
        XCTAssertLessThan(worst, 1e-4, "largest |p_a difference| over 20 pairs")
        XCTAssertEqual(try stageMetrics(dir.path + "/remote.stage/judge.metrics.json")["missing_options"] as? Int, 0)
        let chat = try charter("label", "--pairs", pairs, "--out", dir.path + "/chat.jsonl", "--judge-url", url, "--judge-model", "smollm2",
                               "--judge-api", "chat", "--judge-concurrency", String(concurrency))
        XCTAssertEqual(chat.status, 0, chat.err)
        XCTAssertEqual(try jsonLines(dir.path + "/chat.jsonl").filter { $0["p_a"] is Double }.count, 20)
    }

    /// Direct RLAIF (`reward.judge.url`): the expected ratings of 20 answers through the server
    /// equal the local judge's on the same weights within 1e-3 (of a 1-10 scale).
    func ratingsThroughTheServerAgreeWithTheLocalJudge(url: String, f32: String, pairs: String, dir: URL) throws {
        let items = dir.path + "/answers.jsonl"
        let answers = try jsonLines(pairs).prefix(10).flatMap { p in
            ["a", "b"].map { k in String(decoding: try! JSONSerialization.data(withJSONObject: ["id": "\(p["id"]!)\(k)", "prompt": p["prompt"]!, "response": p[k]!]), as: UTF8.self) }
        }
        try (answers.joined(separator: "\n") + "\n").write(toFile: items, atomically: true, encoding: .utf8)
        func workerCaches() -> Set<String> {
            Set(((try? FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory())) ?? []).filter { $0.hasPrefix("charter-judge-local-") })
        }
        let cachesBefore = workerCaches()
        var ratings: [[Double]] = []
        for (name, judge, placement) in [("remote", "{principle: \"How polite is the answer?\", url: \"\(url)\", model: smollm2}", "--in-process"),
                                         ("local", "{principle: \"How polite is the answer?\"}", "--in-process"),
                                         ("worker", "{principle: \"How polite is the answer?\", url: \"\(url)\", model: smollm2}", "--workers=1")] {
            let config = "\(dir.path)/\(name).yaml"
            try "model: {feedback: \(Self.root.path)/\(f32)}\nreward:\n  judge: \(judge)\n".write(toFile: config, atomically: true, encoding: .utf8)
            let r = try charter("stage", "score", "--config", config, "--items", items, "--out", "\(dir.path)/\(name)-score", placement)
            XCTAssertEqual(r.status, 0, r.err)
            ratings.append(try jsonLines("\(dir.path)/\(name)-score/score.jsonl").map { try XCTUnwrap($0["judge_rating"] as? Double) })
        }
        XCTAssertEqual(ratings[0].count, 20)
        let worst = zip(ratings[0], ratings[1]).map { abs($0 - $1) }.max()!
        print("rating through llama.cpp's server: largest difference from the local judge \(worst)")
        XCTAssertLessThan(worst, 1e-3, "largest |rating difference| over 20 answers")
        XCTAssertEqual(try jsonLines("\(dir.path)/remote-score/judge-cache.jsonl").count, 40, "two questions per answer, each cached")
        // A worker asks the same server and gets the same ratings; its cache goes with it.
        XCTAssertEqual(ratings[2].count, 20)
        XCTAssertLessThan(zip(ratings[2], ratings[0]).map { abs($0 - $1) }.max() ?? 1, 1e-4)
        XCTAssertEqual(workerCaches(), cachesBefore, "the worker's judge cache is removed when it ends")
    }

    func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) == 0 && getsockname(fd, $0, &size) == 0 }
        }
        guard bound else { throw CocoaError(.fileWriteUnknown) }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
