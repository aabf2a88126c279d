import Foundation
import XCTest

/// The `charter` binary as a user runs it, from the package folder (so the default model resolves).
final class CLITests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("charter")

    struct Run { let status: Int32; let out: String; let err: String }

    func charter(_ args: String...) throws -> Run { try charter(args) }

    func charter(_ args: [String]) throws -> Run {
        guard FileManager.default.isExecutableFile(atPath: Self.binary.path) else {
            XCTFail("no charter binary at \(Self.binary.path)")
            throw CocoaError(.fileNoSuchFile)
        }
        let p = Process()
        p.executableURL = Self.binary
        p.arguments = args
        p.currentDirectoryURL = Self.root
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // stderr is small; read stdout to the end first so a full pipe cannot block the child.
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, out: String(decoding: o, as: UTF8.self), err: String(decoding: e, as: UTF8.self))
    }

    func testTokenizePrintsTheReferenceIds() throws {
        let r = try charter("tokenize", "--text", "<|im_start|>user\nWhat is the capital of France?<|im_end|>")
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out, "1 4093 198 1780 314 260 3575 282 4649 47 2\n")
    }

    func testGreedyChatGenerationAsJSON() throws {
        let r = try charter("generate", "--chat", "--prompt", "What is the capital of France?", "--temperature", "0", "--json")
        XCTAssertEqual(r.status, 0, r.err)
        let object = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(object["ids"] as? [Int], [504, 3575, 282, 4649, 314, 7042, 30, 2]) // llama.cpp's greedy continuation
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

    func testVersionNamesTheBLASKernel() throws {
        let r = try charter("--version")
        XCTAssertTrue(r.out.contains("OpenBLAS kernel"), r.out)
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
            (["tokenize", "--text", "x", "--model", garbage.path], "GGUF magic at byte 0"),
            (["tokenize", "--text", "bell\u{04}"], "byte 0x04"),
        ]
        for (args, message) in cases {
            let r = try charter(args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            let first = r.err.split(separator: "\n").first ?? ""
            XCTAssertTrue(first.hasPrefix("Error: ") && first.contains(message), "\(args): \(r.err)")
        }
    }

    /// A 1-layer model with SmolLM2's tokenizer, made by `charter` itself from the real file.
    func testSFTTrainsAndWritesALoadableFolder() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("charter-cli-sft-\(UUID())")
        defer { try? FileManager.default.removeItem(at: dir) }
        let tiny = dir.appendingPathComponent("tiny").path, out = dir.appendingPathComponent("out").path
        XCTAssertEqual(try charter("model", "tiny", "--out", tiny, "--layers", "1", "--width", "32").status, 0)
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
        // A second run asked to resume a finished run has nothing left to do and keeps the folder.
        let again = try charter("sft", "--model", tiny, "--data", "examples/sft-sample.jsonl", "--out", out, "--epochs", "2",
                                "--batch-size", "4", "--micro-batch-size", "2", "--lr", "3e-3", "--eval-fraction", "0.2", "--resume")
        XCTAssertEqual(again.status, 0, again.err)
        let differs = try charter("sft", "--data", "examples/sft-sample.jsonl", "--out", out, "--epochs", "3", "--resume")
        XCTAssertNotEqual(differs.status, 0)
        XCTAssertTrue(differs.err.contains("the options differ"), differs.err)
    }

    func testLoRASFTWritesMergedWeightsAndAdapters() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("charter-cli-lora-\(UUID())")
        defer { try? FileManager.default.removeItem(at: dir) }
        let tiny = dir.appendingPathComponent("tiny").path, out = dir.appendingPathComponent("out").path
        XCTAssertEqual(try charter("model", "tiny", "--out", tiny, "--layers", "1", "--width", "32").status, 0)
        let r = try charter("sft", "--model", tiny, "--data", "examples/sft-sample.jsonl", "--out", out, "--batch-size", "8",
                            "--lora-rank", "4", "--lora-targets", "q,v,down", "--lr", "1e-2")
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/adapters.safetensors"))
        let g = try charter("generate", "--model", out, "--prompt", "Hi", "--max-tokens", "2", "--json")
        XCTAssertEqual(g.status, 0, g.err)
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
}
