import Foundation
import XCTest

/// The fuzz targets' corpora (fuzz/corpus: seeds, and inputs that once crashed a parser) replayed
/// through the same code the fuzzer drives (Sources/CharterFuzz), without libFuzzer: every input
/// must end in a result or an error, never a crash.
extension CLITests {
    func testEveryFuzzCorpusInputIsReadWithoutACrash() throws {
        let corpus = Self.root.appendingPathComponent("fuzz/corpus")
        let targets = try FileManager.default.contentsOfDirectory(atPath: corpus.path).sorted()
        XCTAssertEqual(targets, ["config", "gguf", "hf-config", "jsonl", "safetensors", "tokenizer-json", "wire"])
        for target in targets {
            let files = try FileManager.default.contentsOfDirectory(atPath: corpus.appendingPathComponent(target).path).sorted()
                .map { corpus.appendingPathComponent(target).appendingPathComponent($0).path }
            let r = try tool(Self.binary.deletingLastPathComponent().appendingPathComponent("charter-fuzz").path, [target] + files)
            XCTAssertEqual(r.status, 0, "\(target): \(r.out) \(r.err)")
            XCTAssertEqual(r.out, "\(target): \(files.count) inputs, no crash\n")
        }
    }
}
