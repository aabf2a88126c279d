import Foundation
import Wire
import XCTest
import ZeroMQ

/// The `charter` binary as a user runs it, from the package folder (so the default model resolves).
final class CLITests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("charter")

    struct Run { let status: Int32; let out: String; let err: String }

    func charter(_ args: String...) throws -> Run { try charter(args) }

    /// A fresh folder (removed after the test) holding a 1-layer model with SmolLM2's tokenizer, made by `charter model tiny`.
    func tinyModelFolder(_ label: String) throws -> (dir: URL, tiny: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("charter-cli-\(label)-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let tiny = dir.appendingPathComponent("tiny").path
        let made = try charter("model", "tiny", "--out", tiny, "--layers", "1", "--width", "32")
        XCTAssertEqual(made.status, 0, made.err)
        return (dir, tiny)
    }

    /// Writes DIR/NAME.yaml, a PPO run of `model` rewarded when the response contains `keyword`,
    /// and returns its path and text. The rollout section is line 7.
    func runConfig(_ dir: URL, name: String = "c", run: String = "run", model: String, iterations: Int, seed: Int, prompts: Int,
                   samples: Int = 2, tokens: Int = 4, ppo: String = "epochs: 1, minibatch_size: 8, critic: head",
                   keyword: String = "a") throws -> (path: String, text: String) {
        let text = """
            run: {dir: \(dir.path)/\(run), iterations: \(iterations), seed: \(seed)}
            model: {policy: \(model)}
            data: {prompts: \(Self.root.path)/examples/prompts.jsonl, prompts_per_iteration: \(prompts)}
            reward:
              rules: [{type: keyword, value: "\(keyword)"}]
            algorithm: {name: ppo, ppo: {\(ppo)}}
            rollout: {samples_per_prompt: \(samples), max_new_tokens: \(tokens)}
            """
        let path = dir.appendingPathComponent("\(name).yaml").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return (path, text)
    }

    /// The exit status of `p` once it ends. Still running at `deadline`, it fails the test and is
    /// killed with all it started.
    func exitStatus(_ p: Child, by deadline: Date, file: StaticString = #filePath, line: UInt = #line) -> Int32 {
        if !p.waitUntilExit(seconds: deadline.timeIntervalSinceNow) {
            XCTFail("\(p.arguments.first ?? "process") still running at the deadline", file: file, line: line)
        }
        return p.terminationStatus
    }

    /// Starts `charter args` (or `executable args`) in the background with stdout and stderr going to the file `log`;
    /// it is killed (with all it started) when the test ends.
    func start(_ args: [String], log: String, in folder: URL = CLITests.root, environment: [String: String] = [:],
               executable: String = CLITests.binary.path) throws -> Child {
        FileManager.default.createFile(atPath: log, contents: nil)
        let p = try Child(executable, args, in: folder.path, environment: environment, stdout: log, stderr: log)
        addTeardownBlock { if p.isRunning { p.killTree() } }
        return p
    }

    /// Starts a coordinator on a free loopback port (its log in `log`) and returns it with the control
    /// endpoint it printed. Chosen ports could collide with another process; port 0 cannot.
    /// `command`: the subcommand that coordinates (`coordinator`, or `stage KIND`).
    func startCoordinator(_ args: [String], log: String, bind: String = "tcp://127.0.0.1:*",
                          command: [String] = ["coordinator"]) throws -> (process: Child, endpoint: String) {
        let p = try start(command + ["--bind", bind] + args, log: log)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && p.isRunning {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let endpoint = Self.controlEndpoint(inLog: text) { return (p, endpoint) }
            usleep(20_000)
        }
        XCTFail("the coordinator did not say where it listens: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        throw CocoaError(.fileReadUnknown)
    }

    /// Where the coordinator whose log this is listens: its line `TIME info coordinator run=ID: control ENDPOINT, chunks ...`.
    static func controlEndpoint(inLog text: String) -> String? {
        guard let line = text.split(separator: "\n").first(where: { $0.contains(" coordinator run=") && $0.contains(": control ") }),
              let start = line.range(of: ": control ")?.upperBound else { return nil }
        return line[start...].split(separator: ",").first.map(String.init)
    }

    /// The state letter of process `pid` from /proc (R, S, T stopped, Z zombie...); nil once it is gone.
    static func state(_ pid: Int32) -> Substring? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return nil }
        return stat.split(separator: ")").last?.split(separator: " ").first
    }

    /// True once process `pid` has ended (gone, or a zombie nobody reaped yet).
    static func hasEnded(_ pid: Int32) -> Bool { [nil, "Z"].contains(state(pid)) }

    func charter(_ args: [String], in folder: URL = CLITests.root, environment: [String: String] = [:]) throws -> Run {
        guard FileManager.default.isExecutableFile(atPath: Self.binary.path) else {
            XCTFail("no charter binary at \(Self.binary.path)")
            throw CocoaError(.fileNoSuchFile)
        }
        return try tool(Self.binary.path, args, in: folder, environment: environment)
    }

    /// Runs `executable args` to its end with stdout and stderr captured (`together`: both in `out`; in files: a pipe would
    /// keep the reader waiting for as long as anything the program started holds it). No test may
    /// hang CI: a program still going after `seconds` is killed with all it started, and fails the test.
    func tool(_ executable: String, _ args: [String], in folder: URL = CLITests.root, environment: [String: String] = [:],
              seconds: Double = 300, together: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws -> Run {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("charter-run-\(UUID())").path
        defer { for s in [".out", ".err"] { try? FileManager.default.removeItem(atPath: base + s) } }
        let p = try Child(executable, args, in: folder.path, environment: environment, stdout: base + ".out", stderr: base + (together ? ".out" : ".err"))
        let ended = p.waitUntilExit(seconds: seconds)
        let out = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? "", err = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
        if !ended { XCTFail("\(([executable] + args).joined(separator: " ")) was still running after \(Int(seconds)) s and was killed; its stderr: \(err.suffix(2000))", file: file, line: line) }
        return Run(status: p.terminationStatus, out: out, err: err)
    }

    func testTokenizePrintsTheReferenceIds() throws {
        let r = try charter("tokenize", "--text", "<|im_start|>user\nWhat is the capital of France?<|im_end|>")
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out, "1 4093 198 1780 314 260 3575 282 4649 47 2\n")
        // --chat renders the template around the text; --pieces shows what each token stands for.
        let chat = try charter("tokenize", "--chat", "--pieces", "--text", "What is the capital of France?")
        XCTAssertEqual(chat.status, 0, chat.err)
        let lines = chat.out.split(separator: "\n")
        XCTAssertEqual(lines.first, "1\t\"<|im_start|>\"")
        XCTAssertTrue(lines.contains("4093\t\"user\""), chat.out)
        XCTAssertTrue(lines.contains("198\t\"\\n\""), "a newline is shown escaped: \(chat.out)")
        XCTAssertTrue(lines.contains("3575\t\" capital\""), chat.out)
        let json = try charter("tokenize", "--chat", "--json", "--text", "Hi")
        let object = try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as! [String: Any]
        let rendered = try XCTUnwrap(object["text"] as? String)
        XCTAssertTrue(rendered.hasPrefix("<|im_start|>system\n") && rendered.hasSuffix("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"), rendered)
        XCTAssertEqual((object["pieces"] as? [String])?.joined(), rendered, "the pieces spell the text")
    }

    func testGreedyChatGenerationAsJSON() throws {
        let r = try charter("generate", "--chat", "--prompt", "What is the capital of France?", "--temperature", "0", "--json")
        XCTAssertEqual(r.status, 0, r.err)
        let object = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(object["ids"] as? [Int], [504, 3575, 282, 4649, 314, 7042, 30, 2]) // llama.cpp's greedy continuation
        let half = try charter("generate", "--chat", "--prompt", "What is the capital of France?", "--temperature", "0", "--json", "--weights", "bf16")
        XCTAssertEqual(half.status, 0, half.err)
        let halfObject = try JSONSerialization.jsonObject(with: Data(half.out.utf8)) as! [String: Any]
        XCTAssertEqual(halfObject["ids"] as? [Int], [504, 3575, 282, 4649, 314, 7042, 30, 2], "bf16 weights, same greedy answer")
        XCTAssertEqual(object["text"] as? String, "The capital of France is Paris.")
        XCTAssertEqual(object["finish_reason"] as? String, "stop")
        XCTAssertEqual((object["logprobs"] as? [Double])?.allSatisfy { $0 == 0 }, true)
        let raw = object["raw_logprobs"] as! [Double]
        XCTAssertEqual(raw.count, 8)
        XCTAssertTrue(raw.allSatisfy { $0 < 0 && $0 > -5 })
    }

    func testSeveralSamplesGetTheirOwnSeeds() throws {
        let r = try charter("generate", "--prompt", "Once upon a time", "--n", "3", "--max-tokens", "6", "--seed", "5", "--json")
        XCTAssertEqual(r.status, 0, r.err)
        let lines = r.out.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(lines.count, 3)
        XCTAssertEqual(Set(lines.map { $0["seed"] as! UInt64 }).count, 3)
        XCTAssertTrue(lines.allSatisfy { ($0["ids"] as! [Int]).count == 6 && ($0["logprobs"] as! [Double]).count == 6 })
    }

    func testVersionNamesTheKernels() throws {
        let r = try charter("--version")
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("OpenBLAS kernel"), r.out)
        XCTAssertTrue(r.out.contains("projection kernel avx2 (default)"), r.out)
        let forced = try charter(["--version"], environment: ["CHARTER_KERNEL": "avx2"])
        XCTAssertTrue(forced.out.contains("projection kernel avx2 (CHARTER_KERNEL)"), forced.out)
        let bad = try charter(["--version"], environment: ["CHARTER_KERNEL": "sse9"])
        XCTAssertEqual(bad.status, 2)
        XCTAssertEqual(bad.err, "charter: CHARTER_KERNEL=sse9: expected one of avx2, avx512, avx512bf16\n")
    }

    func testBadInputGivesOneClearLineAndNonZeroExit() throws {
        let garbage = FileManager.default.temporaryDirectory.appendingPathComponent("charter-garbage-\(UUID()).gguf")
        try Data("not a model at all".utf8).write(to: garbage)
        defer { try? FileManager.default.removeItem(at: garbage) }
        let cases: [([String], String)] = [
            (["generate", "--prompt", "x", "--model", "/nonexistent.gguf"], "model file /nonexistent.gguf not found"),
            (["generate", "--prompt", "x", "--top-p", "0"], "top-p must be in (0, 1]"),
            (["generate", "--prompt", "x", "--n", "0"], "--n must be at least 1"),
            (["generate", "--prompt", "x", "--system", "s"], "--system needs --chat"),
            (["generate", "--prompt", "x", "--weights", "f16"], "The value 'f16' is invalid for '--weights <weights>'"),
            (["tokenize", "--text", "x", "--model", garbage.path], "GGUF magic at byte 0"),
            (["tokenize", "--text", "bell\u{04}"], "byte 0x04"),
            (["worker", "--connect", "127.0.0.1:5555"], "give a ZeroMQ address such as tcp://127.0.0.1:5555"),
            (["worker", "--connect", "tcp://127.0.0.1:1", "--give-up-after", "1"], "no coordinator answered at tcp://127.0.0.1:1 for 1 s; giving up"),
            (["worker", "--connect", "tcp://127.0.0.1:1", "--curve-server-key", "s.pub", "--curve-secret-key", "w.pub"], "is a public key file (.pub)"),
            (["worker", "--connect", "tcp://127.0.0.1:1", "--curve-server-key", "s.pub"], "--curve-server-key and --curve-secret-key go together"),
            (["coordinator", "--config", "c.yaml", "--curve-secret-key", "c.key"], "--curve-secret-key and --allow-keys go together"),
            (["generate", "--prompt", "x", "--temperature", "-1"], "temperature must be >= 0, found -1"),
        ]
        for (args, message) in cases {
            let r = try charter(args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            let first = r.err.split(separator: "\n").first ?? ""
            XCTAssertTrue(first.hasPrefix("Error: ") && first.contains(message), "\(args): \(r.err)")
        }
    }

    /// A final export: bfloat16 weights, no optimizer state; it loads and generates, and says why it
    /// cannot be resumed.
    func testSFTExportsHalfPrecisionWithoutOptimizerState() throws {
        let (dir, tiny) = try tinyModelFolder("sft-export")
        let out = dir.appendingPathComponent("out").path
        let args = ["sft", "--model", tiny, "--data", "examples/sft-sample.jsonl", "--out", out, "--batch-size", "4", "--save-dtype", "bf16", "--no-optimizer-state"]
        let r = try charter(args)
        XCTAssertEqual(r.status, 0, r.err)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as! [String: Any]
        XCTAssertEqual(config["torch_dtype"] as? String, "bfloat16")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/optimizer.safetensors"))
        XCTAssertEqual(try charter("generate", "--model", out, "--prompt", "Hi", "--max-tokens", "2").status, 0)
        let resumed = try charter(args + ["--resume"])
        XCTAssertNotEqual(resumed.status, 0)
        XCTAssertTrue(resumed.err.contains("was saved without its optimizer state (--no-optimizer-state), so it cannot be resumed"), resumed.err)
        // Three epochs keeping two checkpoints: the newest in --out, the one before beside it.
        let kept = try charter(args + ["--overwrite", "--epochs", "3", "--keep", "2"])
        XCTAssertEqual(kept.status, 0, kept.err)
        let siblings = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("out") }.sorted()
        XCTAssertEqual(siblings, ["out", "out-epoch-2"])
        func lastStep(_ folder: String) throws -> Int {
            try String(contentsOfFile: folder + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
                .compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }.compactMap { $0["step"] as? Int }.max() ?? 0
        }
        XCTAssertEqual(try lastStep(out + "-epoch-2") * 3, try lastStep(out) * 2, "the kept folder is epoch 2's checkpoint")
        let bad = try charter(["sft", "--data", "examples/sft-sample.jsonl", "--out", out + "2", "--save-dtype", "fp8"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("--save-dtype"), bad.err)
    }

    /// A 1-layer model with SmolLM2's tokenizer, made by `charter` itself from the real file.
    func testSFTTrainsAndWritesALoadableFolder() throws {
        let (dir, tiny) = try tinyModelFolder("sft")
        let out = dir.appendingPathComponent("out").path
        let r = try charter("sft", "--model", tiny, "--data", "examples/sft-sample.jsonl", "--out", out, "--epochs", "2",
                            "--batch-size", "4", "--micro-batch-size", "2", "--lr", "3e-3", "--eval-fraction", "0.2")
        XCTAssertEqual(r.status, 0, r.err)
        let metrics = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let losses = metrics.compactMap { $0["loss"] as? Double }, evals = metrics.compactMap { $0["eval_loss"] as? Double }
        XCTAssertEqual(losses.count, 10)
        XCTAssertEqual(evals.count, 2)
        XCTAssertLessThan(losses.last!, losses.first! - 0.5, "training loss should fall: \(losses)")
        let g = try charter("generate", "--model", out, "--prompt", "Hi", "--max-tokens", "3", "--json")
        XCTAssertEqual(g.status, 0, g.err)
        // A second run asked to resume a finished run has nothing left to do and keeps the folder;
        // one without --resume or --overwrite is refused.
        let again = try charter("sft", "--model", tiny, "--data", "examples/sft-sample.jsonl", "--out", out, "--epochs", "2",
                                "--batch-size", "4", "--micro-batch-size", "2", "--lr", "3e-3", "--eval-fraction", "0.2", "--resume")
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertTrue(again.err.contains("is complete (10 steps); nothing to do"), again.err)
        let plain = try charter("sft", "--model", tiny, "--data", "examples/sft-sample.jsonl", "--out", out)
        XCTAssertNotEqual(plain.status, 0)
        XCTAssertTrue(plain.err.contains("already holds a run"), plain.err)
        let differs = try charter("sft", "--data", "examples/sft-sample.jsonl", "--out", out, "--epochs", "3", "--resume")
        XCTAssertNotEqual(differs.status, 0)
        XCTAssertTrue(differs.err.contains("the options differ"), differs.err)
    }

    func testLoRASFTWritesMergedWeightsAndAdapters() throws {
        let (dir, tiny) = try tinyModelFolder("lora")
        let out = dir.appendingPathComponent("out").path
        let r = try charter("sft", "--model", tiny, "--data", "examples/sft-sample.jsonl", "--out", out, "--batch-size", "8",
                            "--lora-rank", "4", "--lora-targets", "q,v,down", "--lr", "1e-2")
        XCTAssertEqual(r.status, 0, r.err)
        for file in ["adapter/adapter_model.safetensors", "adapter/adapter_config.json"] { XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + file), file) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/adapter_config.json"), "beside the merged weights transformers would apply it twice")
        let g = try charter("generate", "--model", out, "--prompt", "Hi", "--max-tokens", "2", "--json")
        XCTAssertEqual(g.status, 0, g.err)
    }

    /// `rm train` killed after an epoch and resumed ends with the uninterrupted run's files, bit for
    /// bit; pairs in TRL's conversational layouts train like Charter's own.
    func testRewardModelTrainingResumesAfterAnEpoch() throws {
        let (dir, tiny) = try tinyModelFolder("rm-resume")
        let pairs = dir.appendingPathComponent("pairs.jsonl").path
        let lines = (0..<12).map { n in
            n % 2 == 0 ? #"{"prompt": "Say hi \#(n)", "chosen": "Hello there!", "rejected": "No."}"#
                : #"{"chosen": [{"role": "user", "content": "Say hi \#(n)"}, {"role": "assistant", "content": "Hello there!"}], "rejected": [{"role": "user", "content": "Say hi \#(n)"}, {"role": "assistant", "content": "No."}]}"#
        }
        try Data(lines.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: pairs))
        let common = ["rm", "train", "--model", tiny, "--pairs", pairs, "--lr", "1e-3", "--batch-size", "4", "--micro-batch-size", "2", "--epochs", "3"]
        func withoutTimes(_ run: String) throws -> [String] {
            try String(contentsOfFile: "\(dir.path)/\(run)/metrics.jsonl", encoding: .utf8).split(separator: "\n").map {
                $0.replacingOccurrences(of: #""time":"[^"]*""#, with: "", options: .regularExpression)
            }
        }
        for lora in [[], ["--lora-rank", "2"]] {
            let args = common + lora, run = lora.isEmpty ? "full" : "lora"
            let straight = try charter(args + ["--out", dir.path + "/straight-\(run)"])
            XCTAssertEqual(straight.status, 0, straight.err)
            let cut = try charter(args + ["--out", dir.path + "/cut-\(run)", "--stop-after-epochs", "1"])
            XCTAssertEqual(cut.status, 3, cut.err)
            let changed = try charter(args.map { $0 == "1e-3" ? "2e-3" : $0 } + ["--out", dir.path + "/cut-\(run)", "--resume"])
            XCTAssertNotEqual(changed.status, 0)
            XCTAssertTrue(changed.err.contains("--resume: the options differ from the run in"), changed.err)
            let resumed = try charter(args + ["--out", dir.path + "/cut-\(run)", "--resume"])
            XCTAssertEqual(resumed.status, 0, resumed.err)
            XCTAssertTrue(resumed.err.contains("resuming after epoch 1 of 3"), resumed.err)
            let files = ["model.safetensors", "score_head.safetensors", "optimizer.safetensors", "head_optimizer.safetensors"]
                + (lora.isEmpty ? [] : ["adapter/adapter_model.safetensors"])
            for file in files {
                XCTAssertEqual(FileManager.default.contents(atPath: "\(dir.path)/straight-\(run)/\(file)"),
                               FileManager.default.contents(atPath: "\(dir.path)/cut-\(run)/\(file)"), "\(run): \(file)")
            }
            XCTAssertEqual(try withoutTimes("cut-\(run)"), try withoutTimes("straight-\(run)"))
            let done = try charter(args + ["--out", dir.path + "/cut-\(run)", "--resume"])
            XCTAssertEqual(done.status, 0, done.err)
            XCTAssertTrue(done.err.contains("is complete (3 epochs)"), done.err)
        }
        // LoRA trains a different model than the full fine-tune, and the folder scores as a reward model.
        XCTAssertNotEqual(FileManager.default.contents(atPath: dir.path + "/straight-lora/model.safetensors"),
                          FileManager.default.contents(atPath: dir.path + "/straight-full/model.safetensors"))
        try Data(#"{"prompt": "Say hi", "response": "Hello there!"}"#.utf8).write(to: dir.appendingPathComponent("one.jsonl"))
        XCTAssertEqual(try charter("rm", "score", "--rm", dir.path + "/straight-lora", "--data", dir.path + "/one.jsonl").status, 0)
        let micro = try charter(common.map { $0 == "2" ? "5" : $0 } + ["--out", dir.path + "/bad"])
        XCTAssertNotEqual(micro.status, 0)
        XCTAssertTrue(micro.err.contains("--micro-batch-size must be in 1...--batch-size, found 5"), micro.err)
    }

    func testSFTNamesTheBadLine() throws {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("charter-bad-\(UUID()).jsonl")
        try Data("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n{oops\n".utf8).write(to: data)
        defer { try? FileManager.default.removeItem(at: data) }
        let r = try charter("sft", "--data", data.path, "--out", "/tmp/never-written")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("line 2: not valid JSON"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/never-written"))
    }

    func testRewardModelTrainAndScore() throws {
        let (dir, tiny) = try tinyModelFolder("rm")
        let out = dir.appendingPathComponent("rm").path
        let pairs = (0..<12).map { #"{"prompt": "Say hi \#($0)", "chosen": "Hello there!", "rejected": "No.", "p_chosen": 0.9}"# }
        try Data(pairs.joined(separator: "\n").utf8).write(to: dir.appendingPathComponent("pairs.jsonl"))
        let r = try charter("rm", "train", "--model", tiny, "--pairs", dir.appendingPathComponent("pairs.jsonl").path, "--out", out,
                            "--lr", "1e-3", "--batch-size", "4", "--epochs", "3", "--eval-fraction", "0.25")
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("epoch 3: held-out accuracy"), r.err)
        // 9 training pairs in steps of 4: 3 steps and one evaluation per epoch, each line stamped.
        let metrics = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(metrics.count, 12)
        XCTAssertEqual(metrics.filter { $0["eval_accuracy"] != nil }.map { $0["epoch"] as? Int }, [1, 2, 3])
        XCTAssertTrue(metrics.allSatisfy { $0["time"] is String && ($0["loss"] != nil) == ($0["learning_rate"] != nil) })
        try Data([#"{"prompt": "Say hi", "response": "Hello there!"}"#, #"{"prompt": "Say hi", "response": "No."}"#,
                  #"{"prompt": [{"role": "user", "content": "Say hi"}], "response": [{"role": "assistant", "content": "Hello there!"}]}"#].joined(separator: "\n").utf8)
            .write(to: dir.appendingPathComponent("score.jsonl"))
        let s = try charter("rm", "score", "--rm", out, "--data", dir.appendingPathComponent("score.jsonl").path)
        XCTAssertEqual(s.status, 0, s.err)
        let scored = s.out.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let scores = scored.compactMap { $0["score"] as? Double }
        XCTAssertEqual(scores.count, 3)
        XCTAssertEqual(scored.prefix(2).map { $0["response"] as? String }, ["Hello there!", "No."], "the input fields come back beside the score")
        if scores.count == 3 { XCTAssertEqual(scores[2], scores[0], "chat messages score as the same conversation in strings") }
        if scores.count == 2 { XCTAssertGreaterThan(scores[0], scores[1], "the trained preference should show") }
        let toFile = try charter("rm", "score", "--rm", out, "--data", dir.appendingPathComponent("score.jsonl").path, "--out", dir.path + "/scored.jsonl")
        XCTAssertEqual(toFile.status, 0, toFile.err)
        XCTAssertEqual(try String(contentsOfFile: dir.path + "/scored.jsonl", encoding: .utf8), s.out)
        let again = try charter("rm", "train", "--model", tiny, "--pairs", dir.appendingPathComponent("pairs.jsonl").path, "--out", out)
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.err.contains("already holds a run: pass --resume to continue it, or --overwrite"), again.err)
        let notRM = try charter("rm", "score", "--rm", tiny, "--data", dir.appendingPathComponent("score.jsonl").path)
        XCTAssertNotEqual(notRM.status, 0)
        XCTAssertTrue(notRM.err.contains("\(tiny) is not a reward model (no score_head.safetensors)"), notRM.err)
    }

    func testRLRunsFromAConfigAndRefusesABadOne() throws {
        let (dir, tiny) = try tinyModelFolder("rl")
        let (path, config) = try runConfig(dir, model: tiny, iterations: 3, seed: 1, prompts: 4, tokens: 6, ppo: "epochs: 1, minibatch_size: 8, critic: head, learning_rate: 0.001", keyword: "e")
        let r = try charter("rl", "--config", path)
        XCTAssertEqual(r.status, 0, r.err)
        let lines = try String(contentsOfFile: dir.path + "/run/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 3)
        let last = try JSONSerialization.jsonObject(with: Data(lines[2].utf8)) as! [String: Any]
        XCTAssertEqual(last["policy_version"] as? Int, 2)
        XCTAssertEqual(last["samples"] as? Int, 8)
        XCTAssertNotNil(last["generation_seconds"]); XCTAssertNotNil(last["update_seconds"]); XCTAssertNotNil(last["kl"])
        XCTAssertTrue((0...1).contains(last["truncated_fraction"] as? Double ?? -1), "share of responses cut off at the limit")
        XCTAssertEqual(last["skipped_steps"] as? Int, 0)
        XCTAssertNotNil(last["time"]); XCTAssertEqual(last["learning_rate"] as? Double ?? 0, 0.001, accuracy: 1e-9)
        let samples = try String(contentsOfFile: dir.path + "/run/samples.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(samples.map { $0["iteration"] as? Int }, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], "four readable samples an iteration")
        XCTAssertTrue(samples.allSatisfy { !($0["prompt"] as? String ?? "").isEmpty && $0["response"] is String })
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.path + "/run/policy/model.safetensors"))

        for (from, to, message) in [
            ("max_new_tokens: 6", "max_new_tokns: 6", "c.yaml line 7: unknown key \"rollout.max_new_tokns\""),
            ("max_new_tokens: 6", "max_new_tokens: 100000", "plus rollout.max_new_tokens (100000) exceed the model's context of"),
            ("prompts_per_iteration: 4", "prompts_per_iteration: 40", "prompts_per_iteration (40) is more than the 32 prompts"),
        ] {
            let text = config.replacingOccurrences(of: from, with: to).replacingOccurrences(of: "\(dir.path)/run,", with: "\(dir.path)/bad,")
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            let bad = try charter("rl", "--config", path)
            XCTAssertNotEqual(bad.status, 0)
            XCTAssertTrue(bad.err.contains(message), bad.err)
        }
    }

    /// Coordinator and worker processes over loopback ZeroMQ: several PPO iterations with a reward
    /// model (whitened) and a sampling temperature. The same seeded run in one process (`rl`), with
    /// 1 worker and with 3 workers given one prompt per task yields the same weights, bit for bit:
    /// rewards are combined over the whole iteration, never per task, and every pass that depends on
    /// a batch's make-up runs on the batch-invariant inference engine.
    func testLocalRunsWithOneAndThreeWorkersGiveTheSameWeights() throws {
        let (dir, tiny) = try tinyModelFolder("local")
        let pairs = (0..<8).map { #"{"prompt": "Say hi \#($0)", "chosen": "Hello there!", "rejected": "No.", "p_chosen": 0.9}"# }
        try Data(pairs.joined(separator: "\n").utf8).write(to: dir.appendingPathComponent("pairs.jsonl"))
        let rm = try charter("rm", "train", "--model", tiny, "--pairs", dir.appendingPathComponent("pairs.jsonl").path,
                             "--out", dir.path + "/rm", "--lr", "1e-3", "--batch-size", "4", "--eval-fraction", "0.25")
        XCTAssertEqual(rm.status, 0, rm.err)
        var metrics: [[[String: Any]]] = [], weights: [Data] = []
        for (label, command) in [("rl", ["rl"]), ("one", ["local", "--workers", "1"]), ("three", ["local", "--workers", "3", "--prompts-per-task", "1"])] {
            let (path, text) = try runConfig(dir, name: label, run: label, model: tiny, iterations: 3, seed: 1, prompts: 6, tokens: 6,
                                             ppo: "epochs: 1, minibatch_size: 8, critic: head, learning_rate: 0.001")
            let withModel = text.replacingOccurrences(of: "reward:\n", with: "reward:\n  helpfulness_model: \(dir.path)/rm\n")
                .replacingOccurrences(of: "max_new_tokens: 6}", with: "max_new_tokens: 6, temperature: 0.7}")
            try Data(withModel.utf8).write(to: URL(fileURLWithPath: path))
            let r = try charter(command + ["--config", path])
            XCTAssertEqual(r.status, 0, r.err)
            metrics.append(try String(contentsOfFile: "\(dir.path)/\(label)/metrics.jsonl", encoding: .utf8).split(separator: "\n")
                .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] })
            weights.append(try Data(contentsOf: dir.appendingPathComponent("\(label)/policy/model.safetensors")))
        }
        XCTAssertEqual(metrics[2].count, 3)
        XCTAssertEqual(metrics[2].map { $0["workers_alive"] as? Int }, [3, 3, 3])
        for key in ["reward_mean", "helpfulness_score_mean", "kl", "policy_loss"] {
            XCTAssertEqual(metrics[1].map { $0[key] as? Double }, metrics[0].map { $0[key] as? Double }, key)
            XCTAssertEqual(metrics[2].map { $0[key] as? Double }, metrics[0].map { $0[key] as? Double }, key)
        }
        XCTAssertTrue(metrics[0].allSatisfy { ($0["helpfulness_score_mean"] as? Double) != nil }, "the raw score is in the metrics")
        // The value head on the policy trunk scores the rows that sample, in this process and on the
        // workers alike (version 0's head is the reward model's): no iteration needs a value pass.
        XCTAssertEqual(metrics.flatMap { $0.map { $0["value_pass"] as? Bool } }, Array(repeating: false, count: 9))
        let bytesOut = metrics[1...].map { $0.last?["bytes_broadcast"] as? Int ?? 0 }
        XCTAssertGreaterThan(bytesOut[0], 0, "versions after the first travel to the workers")
        // Each worker fetches a chunk from the coordinator at most once (relays cut that to about one
        // copy in all; how often they win depends on the machine's load, so bench broadcast measures it).
        XCTAssertLessThanOrEqual(bytesOut[1], 3 * bytesOut[0])
        XCTAssertEqual(weights[1], weights[0], "1 worker must reach the in-process run's weights")
        XCTAssertEqual(weights[2], weights[0], "3 workers must reach the in-process run's weights")
    }

    /// A worker that cannot load what the configuration names (here a model folder removed after
    /// the coordinator loaded it) tells the coordinator why and exits non-zero.
    func testAWorkerThatCannotLoadTheRunSaysWhy() throws {
        let (dir, tiny) = try tinyModelFolder("noload")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 1, seed: 1, prompts: 2)
        let (_, endpoint) = try startCoordinator(["--config", path], log: dir.path + "/c.log")
        try FileManager.default.moveItem(atPath: tiny, toPath: dir.path + "/moved")
        let worker = try start(["worker", "--connect", endpoint, "--id", "elsewhere"], log: dir.path + "/w.log", in: dir)
        defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(60)
        func log(_ name: String) -> String { (try? String(contentsOfFile: "\(dir.path)/\(name).log", encoding: .utf8)) ?? "" }
        while (worker.isRunning || !log("c").contains("reports:")) && Date() < deadline { usleep(50_000) }
        XCTAssertNotEqual(exitStatus(worker, by: deadline), 0)
        XCTAssertTrue(log("c").contains("worker elsewhere reports: \"cannot load the run's configuration"), log("c"))
        XCTAssertTrue(log("c").contains("model \(tiny) not found"), "the reason names what was missing: \(log("c"))")
    }

    /// Every log line is in the file as it happens and names its time, level, role and run; --log-level
    /// filters them.
    func testLogLinesCarryTimeRoleAndRunAndHonourTheLevel() throws {
        let (dir, tiny) = try tinyModelFolder("logs")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 1, seed: 1, prompts: 2)
        let (coordinator, endpoint) = try startCoordinator(["--config", path], log: dir.path + "/c.log")
        let worker = try start(["worker", "--connect", endpoint, "--id", "w7"], log: dir.path + "/w.log")
        defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        coordinator.waitUntilExit()
        worker.waitUntilExit()
        XCTAssertEqual(coordinator.terminationStatus, 0)
        let time = #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "#
        func lines(_ name: String, matching pattern: String) throws -> [Substring] {
            let text = try String(contentsOfFile: "\(dir.path)/\(name).log", encoding: .utf8)
            let regex = try NSRegularExpression(pattern: time + pattern)
            return text.split(separator: "\n").filter { regex.firstMatch(in: String($0), range: NSRange($0.startIndex..., in: $0)) != nil }
        }
        XCTAssertEqual(try lines("c", matching: #"info coordinator run=run-1-\d+-\d+: control tcp://127\.0\.0\.1:\d+, chunks "#).count, 1)
        XCTAssertEqual(try lines("c", matching: #"info coordinator run=run-1-\d+-\d+: worker w7 registered"#).count, 1)
        XCTAssertEqual(try lines("w", matching: #"info worker w7 run=run-1-\d+-\d+: loaded "#).count, 1)
        XCTAssertEqual(try lines("c", matching: ".").count, try String(contentsOfFile: dir.path + "/c.log", encoding: .utf8).split(separator: "\n").count,
                       "every line of the coordinator's log is a log line")
        try FileManager.default.removeItem(atPath: dir.path + "/run")
        let quiet = try charter("rl", "--config", path, "--log-level", "warning")
        XCTAssertEqual(quiet.status, 0, quiet.err)
        XCTAssertFalse(quiet.err.contains(" info "), quiet.err)
        let bad = try charter("rl", "--config", path, "--log-level", "loud")
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("--log-level"), bad.err)
    }

    /// A worker with nobody at its address says so instead of waiting in silence.
    func testAWorkerWithoutACoordinatorSaysSo() throws {
        let (dir, _) = try tinyModelFolder("lonely")
        let log = dir.path + "/w.log"
        let worker = try start(["worker", "--connect", "tcp://127.0.0.1:1", "--id", "lonely"], log: log)
        defer { kill(worker.processIdentifier, SIGKILL) }
        let deadline = Date().addingTimeInterval(30)
        func text() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        while !text().contains("no coordinator answers at tcp://127.0.0.1:1 yet; retrying") && Date() < deadline { usleep(50_000) }
        XCTAssertTrue(text().contains("no coordinator answers at tcp://127.0.0.1:1 yet; retrying"), text())
        XCTAssertTrue(worker.isRunning, "it keeps trying")
    }

    /// SIGTERM to `charter local` stops its workers; after kill -9 (no handler runs) they notice their
    /// parent is gone and exit by themselves.
    func testStoppingLocalStopsItsWorkers() throws {
        let (dir, tiny) = try tinyModelFolder("stop")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 1000, seed: 1, prompts: 4)
        for signal in [SIGTERM, SIGKILL] {
            let log = "\(dir.path)/local-\(signal).log"
            let local = try start(["local", "--config", path, "--workers", "2", "--overwrite"], log: log)
            addTeardownBlock { if local.isRunning { kill(local.processIdentifier, SIGKILL) } }
            var pids: [Int32] = []
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                pids = text.split(separator: "\n").filter { $0.contains(" local: worker ") }.compactMap { $0.split(separator: " ").last.flatMap { Int32($0) } }
                // After the first checkpoint, which writes the policy folder too.
                if pids.count == 2 && text.contains("now at policy version 1") && FileManager.default.fileExists(atPath: dir.path + "/run/policy/model.safetensors") { break }
                usleep(20_000)
            }
            XCTAssertEqual(pids.count, 2, "the workers' process ids should be in the log")
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.path + "/run/policy/model.safetensors"), "the policy is saved with every checkpoint")
            addTeardownBlock { for pid in pids { kill(pid, SIGKILL) } }
            kill(local.processIdentifier, signal)
            local.waitUntilExit()
            let gone = Date().addingTimeInterval(15)
            while !pids.allSatisfy(Self.hasEnded) && Date() < gone { usleep(20_000) }
            XCTAssertTrue(pids.allSatisfy(Self.hasEnded), "after signal \(signal) the workers should be gone: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            if signal == SIGTERM {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                XCTAssertTrue(text.contains("interrupted; continue from the last checkpoint (\(dir.path)/run/checkpoint) with: charter local --config \(path) --workers 2 --resume"), text)
            }
        }
    }

    /// kill -9 of a worker holding a task: its task goes back to the queue after the heartbeat
    /// timeout, the iteration completes with every prompt answered once, and the metrics count it.
    func testKilledWorkersTaskIsRedispatched() throws {
        let (dir, tiny) = try tinyModelFolder("kill")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 2, seed: 3, prompts: 8)
        // The victim works alone until it holds its second task, then the survivor joins and the victim dies.
        let (coordinator, endpoint) = try startCoordinator(["--config", path, "--prompts-per-task", "1"], log: dir.path + "/c.log")
        let victim = try start(["worker", "--connect", endpoint, "--id", "victim", "--stall-after-tasks", "1"], log: dir.path + "/v.log")
        defer { for p in [coordinator, victim] where p.isRunning { p.terminate() } }
        let deadline = Date().addingTimeInterval(120)
        while !((try? String(contentsOfFile: dir.path + "/v.log", encoding: .utf8))?.contains("stalling") ?? false) && Date() < deadline { usleep(50_000) }
        let survivor = try start(["worker", "--connect", endpoint, "--id", "survivor"], log: dir.path + "/s.log")
        defer { if survivor.isRunning { survivor.terminate() } }
        kill(victim.processIdentifier, SIGKILL)
        XCTAssertEqual(exitStatus(coordinator, by: deadline), 0, (try? String(contentsOfFile: dir.path + "/c.log", encoding: .utf8)) ?? "")
        let lines = try String(contentsOfFile: dir.path + "/run/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(lines.count, 2)
        XCTAssertEqual(lines.map { $0["samples"] as? Int }, [16, 16], "every prompt answered exactly once")
        XCTAssertGreaterThanOrEqual(lines.last?["redispatched"] as? Int ?? 0, 1)
    }

    /// A worker stopped with SIGTERM while it holds a task says Goodbye before it exits: the
    /// coordinator logs why it left and hands the task to another worker without waiting for
    /// heartbeats to time out; every prompt is answered once.
    func testAWorkerStoppedBySIGTERMSaysGoodbyeAndItsTaskGoesOn() throws {
        let (dir, tiny) = try tinyModelFolder("sigterm")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 1, seed: 3, prompts: 8)
        let (coordinator, endpoint) = try startCoordinator(["--config", path, "--prompts-per-task", "1"], log: dir.path + "/c.log")
        let victim = try start(["worker", "--connect", endpoint, "--id", "victim", "--pause-after-tasks", "2"], log: dir.path + "/v.log")
        let deadline = Date().addingTimeInterval(120)
        while !Self.isStopped(victim.processIdentifier) && victim.isRunning && Date() < deadline { usleep(10_000) }
        // Stopped holding its third task: the signal waits for it, and takes effect as it goes on.
        kill(victim.processIdentifier, SIGTERM)
        kill(victim.processIdentifier, SIGCONT)
        XCTAssertEqual(exitStatus(victim, by: deadline), 128 + SIGTERM, log("v"))
        XCTAssertTrue(log("v").contains("stopped by signal 15; told the coordinator"), log("v"))
        let survivor = try start(["worker", "--connect", endpoint, "--id", "survivor"], log: dir.path + "/s.log")
        defer { if survivor.isRunning { survivor.terminate() } }
        XCTAssertEqual(exitStatus(coordinator, by: deadline), 0, log("c"))
        XCTAssertTrue(log("c").contains(#"worker victim left: "stopped by signal 15""#), log("c"))
        let lines = try jsonLines(dir.path + "/run/metrics.jsonl")
        XCTAssertEqual(lines.map { $0["samples"] as? Int }, [16], "every prompt answered exactly once")
        XCTAssertGreaterThanOrEqual(lines.last?["redispatched"] as? Int ?? 0, 1)
        func log(_ name: String) -> String { (try? String(contentsOfFile: "\(dir.path)/\(name).log", encoding: .utf8)) ?? "" }
    }

    /// Garbage frames, a wrong protocol version and an unknown message get error replies and are
    /// counted; the run goes on and finishes with a real worker.
    func testBadMessagesAreRefusedAndCountedWhileTheRunGoesOn() throws {
        let (dir, tiny) = try tinyModelFolder("bad")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 1, seed: 3, prompts: 2, samples: 1, tokens: 3)
        let (coordinator, endpoint) = try startCoordinator(["--config", path], log: dir.path + "/c.log")

        let context = ZMQContext()
        let intruder = try ZMQSocket(context, .dealer)
        try intruder.connect(endpoint)
        func reply(to frames: [Frame]) throws -> Charter_V1_Error? {
            try intruder.send(frames)
            guard try ZMQPoll.readable([intruder], timeoutMilliseconds: 20_000) == [true], let got = try intruder.receive() else { return nil }
            if case .error(let e)? = try? Wire.decode(got).message { return e }
            return nil
        }
        // A flood: each message answered and counted, but only the first 5 logged.
        for _ in 0..<41 { XCTAssertEqual(try reply(to: [.data(Data([0xFF, 0x00, 0x13, 0x37]))])?.code, .malformed) }
        var future = Envelope()
        future.protocolVersion = Wire.protocolVersion + 1
        future.heartbeat = Charter_V1_Heartbeat()
        XCTAssertEqual(try reply(to: [.data(try future.serializedData())])?.code, .versionMismatch)
        var bodiless = Envelope()
        bodiless.protocolVersion = Wire.protocolVersion
        XCTAssertEqual(try reply(to: [.data(try bodiless.serializedData())])?.code, .unknownMessage)
        XCTAssertEqual(try reply(to: [.data(Wire.header(.heartbeat(Charter_V1_Heartbeat())))])?.code, .notRegistered)
        intruder.close()

        let worker = try charter("worker", "--connect", endpoint, "--id", "honest")
        XCTAssertEqual(worker.status, 0, worker.err)
        let deadline = Date().addingTimeInterval(60)
        XCTAssertEqual(exitStatus(coordinator, by: deadline), 0)
        let line = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("run/metrics.jsonl"))) as! [String: Any]
        XCTAssertEqual(line["version_mismatches"] as? Int, 1)
        XCTAssertEqual(line["malformed_dropped"] as? Int, 42) // the garbage frames and the envelope without a body
        XCTAssertEqual(line["not_registered"] as? Int, 1)
        XCTAssertEqual(line["log_lines_held_back"] as? Int, 43 - 5, "41 garbage frames, a future version, an envelope without a body")
        XCTAssertEqual(line["samples"] as? Int, 2)
        let log = try String(contentsOfFile: dir.path + "/c.log", encoding: .utf8)
        XCTAssertEqual(log.split(separator: "\n").filter { $0.contains(" warning ") && $0.contains(": from ") }.count, 5, log)
    }

    /// A peer that registers, takes a task and answers it with a token id outside the vocabulary.
    final class Forger {
        let context = ZMQContext(), socket: ZMQSocket
        var task: Charter_V1_Task?

        init(_ endpoint: String) throws {
            socket = try ZMQSocket(context, .dealer)
            try socket.set(.routingId("forger"))
            try socket.connect(endpoint)
            var register = Charter_V1_Register()
            register.workerID = "forger"
            guard case .welcome? = try ask(.register(register)) else { throw CocoaError(.featureUnsupported) }
            let deadline = Date().addingTimeInterval(60)
            while task == nil && Date() < deadline {
                if case .task(let t)? = try ask(.taskRequest(Charter_V1_TaskRequest())) { task = t } else { usleep(50_000) }
            }
        }

        func ask(_ body: Message) throws -> Message? {
            try socket.send([.data(Wire.header(body))])
            guard try ZMQPoll.readable([socket], timeoutMilliseconds: 20_000) == [true], let got = try socket.receive() else { return nil }
            return try Wire.decode(got).message
        }

        func answerForged() throws {
            guard let t = task else { return }
            var result = Charter_V1_TaskResult()
            result.taskID = t.taskID; result.iteration = t.iteration; result.policyVersion = t.policyVersion
            result.samples = t.prompts.map { p in
                var r = Charter_V1_SampleRecord()
                r.promptID = p.promptID; r.index = 0; r.truncated = true
                r.response = [1_000_000]; r.logprobs = [-1]; r.referenceLogprobs = [-1]; r.ruleReward = 1
                return r
            }
            try socket.send([.data(Wire.header(.taskResult(result)))])
        }
    }

    /// A forged result is refused and counted, its worker gets no more tasks (numbers too large for
    /// Int change nothing), and an honest worker
    /// finishes the run with every sample once. A forger alone stops the coordinator with one line
    /// rather than leaving it waiting for ever.
    func testAForgedResultIsRefusedAndItsWorkerQuarantined() throws {
        let (dir, tiny) = try tinyModelFolder("forged")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 1, seed: 3, prompts: 2, samples: 1, tokens: 3)
        let (coordinator, endpoint) = try startCoordinator(["--config", path], log: dir.path + "/c.log")
        let forger = try Forger(endpoint)
        let task = try XCTUnwrap(forger.task, "the forger got no task")
        let honest = try start(["worker", "--connect", endpoint, "--id", "honest"], log: dir.path + "/w.log")
        addTeardownBlock { if honest.isRunning { kill(honest.processIdentifier, SIGKILL) } }
        let registered = Date().addingTimeInterval(60)
        while !(try file(dir.path + "/c.log")).contains("worker honest registered") && Date() < registered { usleep(20_000) }
        // Wire numbers beyond Int's range are unknown or stale values to the coordinator, never a trap.
        var huge = Charter_V1_TaskResult(); huge.taskID = "no-such-task"; huge.policyVersion = .max
        var ready = Charter_V1_ModelReady(); ready.model = "reward.helpful"; ready.version = .max
        try forger.socket.send([.data(Wire.header(.taskResult(huge)))])
        try forger.socket.send([.data(Wire.header(.modelReady(ready)))])
        try forger.answerForged()
        // Quarantined: no task for it, though its task still waits to be done.
        guard case .noTask? = try forger.ask(.taskRequest(Charter_V1_TaskRequest())) else { return XCTFail("a quarantined worker got work") }
        let done = Date().addingTimeInterval(60)
        XCTAssertEqual(exitStatus(coordinator, by: done), 0)
        _ = exitStatus(honest, by: done)
        let line = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("run/metrics.jsonl"))) as! [String: Any]
        XCTAssertEqual(line["invalid_results"] as? Int, 1)
        XCTAssertEqual(line["workers_quarantined"] as? Int, 1)
        XCTAssertEqual(line["samples"] as? Int, 2)
        XCTAssertTrue(try file(dir.path + "/c.log").contains("from forger refused, sample \(task.prompts[0].promptID)/0: token id 1000000 outside the vocabulary"))

        let (alonePath, _) = try runConfig(dir, name: "alone", run: "alone", model: tiny, iterations: 1, seed: 3, prompts: 2, samples: 1, tokens: 3)
        let (alone, aloneEndpoint) = try startCoordinator(["--config", alonePath], log: dir.path + "/alone.log")
        let lone = try Forger(aloneEndpoint)
        try lone.answerForged()
        let stopped = Date().addingTimeInterval(60)
        XCTAssertNotEqual(exitStatus(alone, by: stopped), 0)
        // A coordinator that stops on an error still says goodbye, so workers leave.
        var goodbye: Charter_V1_Goodbye?
        while goodbye == nil, try ZMQPoll.readable([lone.socket], timeoutMilliseconds: 5_000) == [true], let got = try lone.socket.receive() {
            if case .goodbye(let g)? = try? Wire.decode(got).message { goodbye = g }
        }
        XCTAssertEqual(goodbye?.reason, "the coordinator stopped before the run ended; see its log")
        let aloneLog = try file(dir.path + "/alone.log")
        XCTAssertTrue(aloneLog.contains("every live worker sent results no honest worker sends (the last: sample "), aloneLog)
    }

    /// A peer that takes a task and heartbeats but never answers cannot stall the run: after the
    /// straggler limit an idle honest worker gets a copy of the task, and every sample comes once.
    func testAHoardedTaskIsCopiedAndTheRunCompletes() throws {
        let (dir, tiny) = try tinyModelFolder("hoard")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 1, seed: 3, prompts: 2, samples: 1, tokens: 3)
        let (coordinator, endpoint) = try startCoordinator(["--config", path], log: dir.path + "/c.log")
        let hoarder = try Forger(endpoint)
        XCTAssertNotNil(hoarder.task, "the hoarder got no task")
        let honest = try start(["worker", "--connect", endpoint, "--id", "honest"], log: dir.path + "/w.log")
        addTeardownBlock { if honest.isRunning { kill(honest.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(90)
        while coordinator.isRunning && Date() < deadline {
            try hoarder.socket.send([.data(Wire.header(.heartbeat(Charter_V1_Heartbeat())))])
            while try hoarder.socket.receive(wait: false) != nil {}
            usleep(300_000)
        }
        let log = try file(dir.path + "/c.log")
        XCTAssertEqual(exitStatus(coordinator, by: deadline), 0, log)
        _ = exitStatus(honest, by: deadline)
        let line = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("run/metrics.jsonl"))) as! [String: Any]
        XCTAssertEqual(line["speculative_copies"] as? Int, 1)
        XCTAssertEqual(line["samples"] as? Int, 2)
    }

    /// Workers of one run compute with the coordinator's projection kernel, or their results would
    /// differ in the last bits: another kernel is refused with one line, unless run.mixed_kernels.
    func testAWorkerOnAnotherKernelIsRefusedUnlessTheRunMixesKernels() throws {
        let (dir, tiny) = try tinyModelFolder("kernels")
        func registerReply(mixed: Bool) throws -> Message? {
            let (path, text) = try runConfig(dir, name: "mixed-\(mixed)", run: "run-\(mixed)", model: tiny, iterations: 1, seed: 3, prompts: 2, samples: 1, tokens: 3)
            if mixed { try Data((text + "\n").replacingOccurrences(of: "seed: 3}", with: "seed: 3, mixed_kernels: true}").utf8).write(to: URL(fileURLWithPath: path)) }
            let (coordinator, endpoint) = try startCoordinator(["--config", path], log: dir.path + "/c-\(mixed).log")
            defer { coordinator.terminate(); coordinator.waitUntilExit() }
            let context = ZMQContext(), socket = try ZMQSocket(context, .dealer)
            try socket.set(.routingId("odd"))
            try socket.connect(endpoint)
            var register = Charter_V1_Register()
            register.workerID = "odd"
            register.kernel = "avx9"
            try socket.send([.data(Wire.header(.register(register)))])
            guard try ZMQPoll.readable([socket], timeoutMilliseconds: 20_000) == [true], let got = try socket.receive() else { return nil }
            return try Wire.decode(got).message
        }
        guard case .error(let refused)? = try registerReply(mixed: false) else { return XCTFail("a worker on another kernel was admitted") }
        XCTAssertEqual(refused.code, .kernelMismatch)
        XCTAssertTrue(refused.message.hasPrefix("worker odd runs the avx9 projection kernel and this run "), refused.message)
        XCTAssertTrue(refused.message.hasSuffix("or set run.mixed_kernels: true"), refused.message)
        guard case .welcome? = try registerReply(mixed: true) else { return XCTFail("run.mixed_kernels: true should admit any kernel") }

        // A real worker on the AVX-512 kernel, where the coordinator runs the default one.
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        try XCTSkipUnless(flags.contains(" avx512f"), "no AVX-512F here: every worker runs the avx2 kernel")
        let (path, _) = try runConfig(dir, name: "real", run: "real", model: tiny, iterations: 1, seed: 3, prompts: 2, samples: 1, tokens: 3)
        let (coordinator, endpoint) = try startCoordinator(["--config", path], log: dir.path + "/real.log")
        defer { coordinator.terminate(); coordinator.waitUntilExit() }
        let worker = try charter(["worker", "--connect", endpoint, "--id", "wide"], environment: ["CHARTER_KERNEL": "avx512"])
        XCTAssertNotEqual(worker.status, 0)
        XCTAssertTrue(worker.err.contains("coordinator refused us: worker wide runs the avx512 projection kernel and this run avx2"), worker.err)
    }

    /// A worker that joins after the first update receives the current weights first, then takes
    /// work: here the first worker does iteration 0 alone and then stalls, so the late one must finish.
    func testALateJoinerGetsTheCurrentWeightsAndThenWorks() throws {
        let (dir, tiny) = try tinyModelFolder("late")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 2, seed: 5, prompts: 4)
        func log(_ name: String) -> String { (try? String(contentsOfFile: "\(dir.path)/\(name).log", encoding: .utf8)) ?? "" }
        let (coordinator, endpoint) = try startCoordinator(["--config", path, "--prompts-per-task", "1"], log: dir.path + "/c.log")
        let first = try start(["worker", "--connect", endpoint, "--id", "first", "--stall-after-tasks", "4"], log: dir.path + "/first.log")
        defer { for p in [coordinator, first] where p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(120)
        while !log("first").contains("stalling") && Date() < deadline { usleep(50_000) }
        let late = try start(["worker", "--connect", endpoint, "--id", "late"], log: dir.path + "/late.log")
        defer { if late.isRunning { late.terminate() } }
        XCTAssertEqual(exitStatus(coordinator, by: deadline), 0, log("c"))
        XCTAssertTrue(log("late").contains("now at policy version 1"), log("late"))
        XCTAssertTrue(log("late").contains("tasks done"), log("late"))
        XCTAssertFalse(log("late").contains("; 0 tasks done"), "the late joiner should have worked: \(log("late"))")
        let lines = try String(contentsOfFile: dir.path + "/run/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
    }
}

extension CLITests {
    /// kill -9 of the coordinator in the middle of an iteration; restarted with --resume, it continues
    /// from its checkpoint with the same (still running) worker and reaches the same weights as an
    /// uninterrupted run.
    func testKilledCoordinatorResumesToTheSameWeights() throws {
        let (dir, tiny) = try tinyModelFolder("resume")
        func config(_ run: String) throws -> String {
            try runConfig(dir, name: run, run: run, model: tiny, iterations: 8, seed: 2, prompts: 8, tokens: 6,
                          ppo: "epochs: 1, minibatch_size: 8, critic: separate, learning_rate: 0.001").path
        }
        let whole = try charter("local", "--config", try config("whole"), "--workers", "1")
        XCTAssertEqual(whole.status, 0, whole.err)
        let wholeWeights = try Data(contentsOf: dir.appendingPathComponent("whole/policy/model.safetensors"))

        /// Runs `run` with one worker that stops itself (SIGSTOP) on its sixth task: 2 tasks an iteration,
        /// so the coordinator has checkpointed iteration 2 and waits inside it. Then kill -9 of the
        /// coordinator and SIGCONT of the worker; returns the coordinator's endpoint.
        func cut(_ run: String) throws -> String {
            let (coordinator, endpoint) = try startCoordinator(["--config", try config(run), "--prompts-per-task", "4"], log: "\(dir.path)/\(run)-c.log")
            let worker = try start(["worker", "--connect", endpoint, "--id", "w-\(run)", "--pause-after-tasks", "5"], log: "\(dir.path)/\(run)-w.log")
            addTeardownBlock { if worker.isRunning { kill(worker.processIdentifier, SIGCONT); kill(worker.processIdentifier, SIGKILL) } }
            let deadline = Date().addingTimeInterval(120)
            while !Self.isStopped(worker.processIdentifier) && worker.isRunning && Date() < deadline { usleep(10_000) }
            XCTAssertTrue(Self.isStopped(worker.processIdentifier), "the worker should have paused itself")
            kill(coordinator.processIdentifier, SIGKILL)
            coordinator.waitUntilExit()
            kill(worker.processIdentifier, SIGCONT)
            XCTAssertEqual(savedIteration(run), 2)
            return endpoint
        }
        func savedIteration(_ run: String) -> Int {
            let state = dir.appendingPathComponent("\(run)/checkpoint/state.json")
            guard let data = try? Data(contentsOf: state), let s = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return 0 }
            return s["iteration"] as? Int ?? 0
        }

        // Resumed with the worker that outlived the coordinator, on the same port: the uninterrupted run's weights.
        let endpoint = try cut("resumed")
        let resumed = try charter("coordinator", "--config", try config("resumed"), "--bind", endpoint, "--prompts-per-task", "4", "--resume")
        XCTAssertEqual(resumed.status, 0, resumed.err)
        XCTAssertTrue(resumed.err.contains("resuming at iteration 2"), resumed.err)
        let lines = try String(contentsOfFile: dir.path + "/resumed/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(lines.map { $0["iteration"] as? Int }, Array(0..<8))
        let samples = try String(contentsOfFile: dir.path + "/resumed/samples.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(samples.compactMap { $0["iteration"] as? Int }, (0..<8).flatMap { [$0, $0, $0, $0] }, "no iteration's samples twice after the resume")
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("resumed/policy/model.safetensors")), wholeWeights,
                       "the resumed run must reach the uninterrupted run's weights")

        // Started afresh instead: the surviving worker must drop the later version it holds and begin
        // again from the base model, so the run again ends with the uninterrupted run's weights.
        let again = try cut("fresh")
        let fresh = try charter("coordinator", "--config", try config("fresh"), "--bind", again, "--prompts-per-task", "4", "--overwrite")
        XCTAssertEqual(fresh.status, 0, fresh.err)
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("fresh/policy/model.safetensors")), wholeWeights,
                       "a fresh run after a crash must not start from the worker's old weights")
    }

    /// True while process `pid` is stopped (SIGSTOP).
    static func isStopped(_ pid: Int32) -> Bool { state(pid) == "T" }

    func testResumeRefusesAChangedConfiguration() throws {
        let (dir, tiny) = try tinyModelFolder("resume-changed")
        let (path, text) = try runConfig(dir, model: tiny, iterations: 1, seed: 2, prompts: 2, samples: 1, tokens: 3)
        XCTAssertEqual(try charter("rl", "--config", path).status, 0)
        // A finished run is neither wiped by a plain start nor run again by --resume.
        let plain = try charter("rl", "--config", path)
        XCTAssertNotEqual(plain.status, 0)
        XCTAssertTrue(plain.err.contains("already holds a run: pass --resume to continue it, or --overwrite to start it again"), plain.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.path + "/run/policy/model.safetensors"), "the refused start must leave the run alone")
        let complete = try charter("rl", "--config", path, "--resume")
        XCTAssertEqual(complete.status, 0, complete.err)
        XCTAssertTrue(complete.err.contains("is complete (1 iterations); nothing to do"), complete.err)
        XCTAssertEqual(try charter("rl", "--config", path, "--overwrite").status, 0)
        try Data(text.replacingOccurrences(of: "max_new_tokens: 3", with: "max_new_tokens: 4").utf8).write(to: URL(fileURLWithPath: path))
        let r = try charter("rl", "--config", path, "--resume")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("the checkpoint was made with a different configuration"), r.err)
    }

    /// A damaged checkpoint is refused with one line instead of finishing at once or dying later
    /// (here by its manifest; RunDriverTests reach the range checks behind it),
    /// and `--resume` without a checkpoint does not rewrite a run's history (unless the run stopped
    /// before its first checkpoint).
    func testResumeRefusesADamagedOrMissingCheckpoint() throws {
        let (dir, tiny) = try tinyModelFolder("resume-damaged")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 2, seed: 2, prompts: 2, samples: 1, tokens: 3)
        XCTAssertEqual(try charter("rl", "--config", path).status, 0)
        let state = dir.path + "/run/checkpoint/state.json"
        let good = try String(contentsOfFile: state, encoding: .utf8)
        let damaged = good.replacingOccurrences(of: #""iteration"\s*:\s*[0-9]+"#, with: "\"iteration\": 999", options: .regularExpression)
        XCTAssertNotEqual(damaged, good)
        try damaged.write(toFile: state, atomically: true, encoding: .utf8)
        let r = try charter("rl", "--config", path, "--resume")
        XCTAssertNotEqual(r.status, 0, "a run resumed at iteration 999 of 2")
        XCTAssertTrue(r.err.contains("state.json: ") && r.err.contains("the manifest says") && r.err.contains("the checkpoint is damaged"), r.err)
        let metrics = try String(contentsOfFile: dir.path + "/run/metrics.jsonl", encoding: .utf8)
        try FileManager.default.removeItem(atPath: dir.path + "/run/checkpoint")
        let missing = try charter("rl", "--config", path, "--resume")
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.err.contains("has metrics of an earlier run but no checkpoint"), missing.err)
        XCTAssertEqual(try String(contentsOfFile: dir.path + "/run/metrics.jsonl", encoding: .utf8), metrics, "the history is left as it was")

        // Killed after the first iteration's metrics line but before its checkpoint: nothing is
        // lost by starting over, so --resume does, and reaches the same policy.
        let policy = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/run/policy/model.safetensors"))
        try (String(metrics.split(separator: "\n")[0]) + "\n").write(toFile: dir.path + "/run/metrics.jsonl", atomically: true, encoding: .utf8)
        let restarted = try charter("rl", "--config", path, "--resume")
        XCTAssertEqual(restarted.status, 0, restarted.err)
        XCTAssertTrue(restarted.err.contains("starting from the beginning"), restarted.err)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/run/policy/model.safetensors")), policy)
        XCTAssertEqual(try String(contentsOfFile: dir.path + "/run/metrics.jsonl", encoding: .utf8).split(separator: "\n").count, 2)
    }

    /// With LoRA on, only the adapters travel: a few KB per version instead of the whole model.
    func testLoRARunBroadcastsOnlyTheAdapters() throws {
        let (dir, tiny) = try tinyModelFolder("lora")
        let (path, _) = try runConfig(dir, model: tiny + ", lora: {rank: 2, alpha: 4}", iterations: 3, seed: 1, prompts: 4, ppo: "epochs: 1, minibatch_size: 8, critic: head, learning_rate: 0.01")
        let r = try charter("local", "--config", path, "--workers", "2")
        XCTAssertEqual(r.status, 0, r.err)
        let last = try JSONSerialization.jsonObject(with: Data(String(contentsOfFile: dir.path + "/run/metrics.jsonl", encoding: .utf8)
            .split(separator: "\n").last!.utf8)) as! [String: Any]
        let perVersion = (last["bytes_broadcast"] as? Int ?? 0) / 2 // versions 1 and 2 travelled
        let modelBytes = try FileManager.default.attributesOfItem(atPath: tiny + "/model.safetensors")[.size] as! Int
        XCTAssertGreaterThan(perVersion, 0)
        XCTAssertLessThan(perVersion, modelBytes / 50, "only the adapters should travel")
    }

    /// With CURVE on, a worker whose key is not on the allow-list is refused and counted, a plain
    /// worker gets nowhere, and an allowed worker runs the whole run.
    func testCurveAdmitsOnlyAllowedWorkers() throws {
        let (dir, tiny) = try tinyModelFolder("curve")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 2, seed: 3, prompts: 4)
        for name in ["coordinator", "good", "rogue"] {
            XCTAssertEqual(try charter("keys", "--out", dir.path + "/" + name).status, 0)
        }
        // A label before the key is allowed (and the key is still checked).
        try Data(("good-worker " + String(contentsOfFile: dir.path + "/good.pub", encoding: .utf8)).utf8).write(to: URL(fileURLWithPath: dir.path + "/allowed"))
        let bad = try charter("coordinator", "--config", path, "--curve-secret-key", dir.path + "/coordinator.key", "--allow-keys", path)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("allow-list \(path) line 1: not a 40-character Z85 CURVE key"), bad.err)

        func log(_ name: String) -> String { (try? String(contentsOfFile: "\(dir.path)/\(name).log", encoding: .utf8)) ?? "" }
        let (coordinator, endpoint) = try startCoordinator(["--config", path, "--curve-secret-key", dir.path + "/coordinator.key",
                                                            "--allow-keys", dir.path + "/allowed"], log: dir.path + "/c.log")
        let curve = ["--curve-server-key", dir.path + "/coordinator.pub", "--curve-secret-key"]
        let rogue = try start(["worker", "--connect", endpoint, "--id", "rogue"] + curve + [dir.path + "/rogue.key"], log: dir.path + "/rogue.log")
        let plain = try start(["worker", "--connect", endpoint, "--id", "plain"], log: dir.path + "/plain.log")
        defer { for p in [coordinator, rogue, plain] where p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(120)
        while !log("c").contains("is not allowed") && Date() < deadline { usleep(50_000) }
        let good = try charter(["worker", "--connect", endpoint, "--id", "good"] + curve + [dir.path + "/good.key"])
        XCTAssertEqual(good.status, 0, good.err)
        XCTAssertEqual(exitStatus(coordinator, by: deadline), 0, log("c"))
        let lines = try String(contentsOfFile: dir.path + "/run/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(lines.map { $0["samples"] as? Int }, [8, 8])
        XCTAssertEqual(lines.map { $0["workers_alive"] as? Int }, [1, 1], "only the allowed worker is in")
        XCTAssertGreaterThanOrEqual(lines.last?["curve_refused"] as? Int ?? 0, 1)
        XCTAssertFalse(log("rogue").contains("loaded"), "the refused worker must never get the configuration")
        XCTAssertFalse(log("plain").contains("loaded"), "a plain worker must never get the configuration")
        XCTAssertTrue(log("rogue").contains("the coordinator refused this worker's CURVE key"), log("rogue"))
        XCTAssertTrue(log("plain").contains("the handshake with the coordinator failed"), log("plain"))
    }

    /// examples/tiny.yaml (a tiny model made on the fly by every process) runs with `charter local`
    /// from another working folder: its paths are read against its own folder, and the tokenizer
    /// of the tiny spec (the default model) is found where `charter model fetch` put it.
    func testTinyExampleRunsLocallyFromAnotherFolder() throws {
        let (dir, _) = try tinyModelFolder("example")
        let examples = dir.appendingPathComponent("examples"), elsewhere = dir.appendingPathComponent("elsewhere")
        for folder in [examples, elsewhere] { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) }
        for name in ["tiny.yaml", "prompts.jsonl"] {
            try FileManager.default.copyItem(at: Self.root.appendingPathComponent("examples/\(name)"), to: examples.appendingPathComponent(name))
        }
        let r = try charter(["local", "--config", "../examples/tiny.yaml", "--workers", "2"], in: elsewhere)
        XCTAssertEqual(r.status, 0, r.err)
        let lines = try String(contentsOfFile: dir.path + "/runs/tiny/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 8)
        let bad = try charter("generate", "--model", "tiny:layers=2,depth=3", "--prompt", "hi")
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("\"depth=3\" is not one of layers="), bad.err)
    }
}

extension CLITests {
    /// `charter dpo` on soft-labelled pairs: the held-out margin grows, the folder loads, a finished
    /// run resumed has nothing to do, and bad labels and settings are refused before anything is written.
    func testDPOTrainsOnSoftLabelsAndRefusesBadInput() throws {
        let (dir, tiny) = try tinyModelFolder("dpo")
        let out = dir.appendingPathComponent("out").path
        let args = ["dpo", "--model", tiny, "--pairs", "examples/polite-dpo.jsonl", "--out", out, "--epochs", "2", "--batch-size", "4",
                    "--micro-batch-size", "2", "--lr", "3e-3", "--beta", "0.5", "--eval-fraction", "0.25"]
        let r = try charter(args)
        XCTAssertEqual(r.status, 0, r.err)
        let metrics = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let steps = metrics.filter { $0["loss"] != nil }, evals = metrics.filter { $0["eval_loss"] != nil }
        XCTAssertEqual(steps.count, 10) // 18 training pairs in batches of 4, twice
        XCTAssertEqual(evals.count, 2)
        XCTAssertEqual(steps[0]["loss"] as! Double, log(2), accuracy: 1e-6, "the policy starts as its reference")
        let margins = evals.map { $0["eval_margin"] as! Double }
        XCTAssertGreaterThan(margins[1], margins[0], "the held-out margin grows: \(margins)")
        XCTAssertEqual(try charter("generate", "--model", out, "--prompt", "Hi", "--max-tokens", "2").status, 0)
        let again = try charter(args + ["--resume"])
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertTrue(again.err.contains("is complete (10 steps); nothing to do"), again.err)
        // Stopped after epoch 1 and resumed: the same weights as the run left alone (the reference
        // is --model again, not the checkpoint it resumes from).
        let stopped = dir.appendingPathComponent("stopped").path
        var resumed = args.map { $0 == out ? stopped : $0 }
        XCTAssertEqual(try charter(resumed + ["--stop-after-epochs", "1"]).status, 0)
        resumed.append("--resume")
        let second = try charter(resumed)
        XCTAssertEqual(second.status, 0, second.err)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: stopped + "/model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: out + "/model.safetensors")))

        let bad = dir.appendingPathComponent("bad.jsonl")
        try Data("{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\", \"p_chosen\": 2}\n".utf8).write(to: bad)
        let never = dir.appendingPathComponent("never").path
        let badLine = try charter("dpo", "--model", tiny, "--pairs", bad.path, "--out", never)
        XCTAssertNotEqual(badLine.status, 0)
        XCTAssertTrue(badLine.err.contains("line 2: \"p_chosen\" must be a number in [0, 1]"), badLine.err)
        let badBeta = try charter("dpo", "--model", tiny, "--pairs", bad.path, "--out", never, "--beta", "0")
        XCTAssertNotEqual(badBeta.status, 0)
        XCTAssertTrue(badBeta.err.contains("beta must be a positive number"), badBeta.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: never))
    }
}
