import Alignment
import Engine
import Formats
import Foundation
import Tokenizer
import XCTest

final class SFTDataTests: XCTestCase {
    static let modelURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    nonisolated(unsafe) static var cached: BPETokenizer?

    func tokenizer() throws -> BPETokenizer {
        if let t = Self.cached { return t }
        let t = try GGUFModel.tokenizer(of: GGUFFile(url: Self.modelURL))
        Self.cached = t
        return t
    }

    func write(_ text: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("charter-sft-\(UUID()).jsonl")
        try Data(text.utf8).write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func testMaskCoversExactlyTheAssistantRepliesAndTheirEnd() throws {
        let tok = try tokenizer()
        let messages = [ChatMessage(role: "user", content: "Hi there"), ChatMessage(role: "assistant", content: " Hello!\n\nHow can I help?"),
                        ChatMessage(role: "user", content: "Thanks"), ChatMessage(role: "assistant", content: "You're welcome.")]
        let seq = try ChatData.encode(messages, tokenizer: tok)
        XCTAssertEqual(try tok.decode(seq.tokens), try ChatTemplate.render(messages, addGenerationPrompt: false))
        // Masked runs, decoded, are the replies and their <|im_end|>.
        var runs: [[Int32]] = [], current: [Int32] = []
        for (t, m) in zip(seq.tokens, seq.lossMask) {
            if m != 0 { current.append(t) } else if !current.isEmpty { runs.append(current); current = [] }
        }
        if !current.isEmpty { runs.append(current) }
        XCTAssertEqual(try runs.map { try tok.decode($0) }, [" Hello!\n\nHow can I help?<|im_end|>", "You're welcome.<|im_end|>"])
    }

    /// sft.jsonl of `charter revise`: a dialogue prompt's earlier answer has weight 0, so the loss
    /// covers only the revision (and its <|im_end|>).
    func testTheLossOfARevisionExampleCoversOnlyTheRevision() throws {
        let tok = try tokenizer()
        let c = Constitution(name: "c", version: 1, critiques: [.init(critique: "Critique it.", revision: "Rewrite it.")])
        let dialogue = [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello there"), ChatMessage(role: "user", content: "Insult me")]
        let plan = try RevisionPlan(constitution: c, settings: RevisionSettings(), prompts: [.init(id: "a", messages: dialogue, fields: [:])], helpful: [], runSeed: 1)
        let outcome = try RevisionOutcome(plan: plan, results: ["a": ["answers": ["You are dull.", "That was rude.", "I would rather say something kind."],
                                                                      "truncated": [false, false, false]]])
        let line = String(decoding: JSONLine.encode(try XCTUnwrap(outcome.sft.first)), as: UTF8.self)
        let examples = try ChatData.load(try write(line + "\n"), tokenizer: tok, maxLength: 256).examples
        let seq = try XCTUnwrap(examples.first?.sequence)
        XCTAssertEqual(try tok.decode(zip(seq.tokens, seq.lossMask).filter { $0.1 != 0 }.map(\.0)), "I would rather say something kind.<|im_end|>")
    }

    func testBadLinesNameTheirLineNumber() throws {
        let tok = try tokenizer()
        let good = #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#
        let cases: [(String, String)] = [
            ("{not json", "line 2: not valid JSON"),
            ("[1, 2]", "line 2: expected a JSON object"),
            (#"{"msgs": []}"#, "line 2: \"messages\" is missing"),
            (#"{"messages": [{"role": "user"}]}"#, "line 2: message 0 has no string \"content\""),
            (#"{"messages": [{"role": "bot", "content": "x"}]}"#, "line 2: message 0 has role \"bot\""),
            (#"{"messages": [{"role": "user", "content": "x"}]}"#, "line 2: no assistant message"),
            (#"{"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}, {"role": "assistant", "content": "z"}]}"#, "line 2: message 1: a system message may only come first"),
            (#"{"messages": [{"role": "user", "content": "bell\u0004"}, {"role": "assistant", "content": "z"}]}"#, "line 2: the text contains byte 0x04"),
            (#"{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "z", "weight": 0.5}]}"#, "line 2: message 1: \"weight\" must be 0 or 1"),
            (#"{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "z", "weight": 0}]}"#, "line 2: no assistant message"),
        ]
        for (bad, message) in cases {
            let url = try write(good + "\n" + bad + "\n")
            XCTAssertThrowsError(try ChatData.load(url, tokenizer: tok, maxLength: 64)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
        XCTAssertThrowsError(try ChatData.load(URL(fileURLWithPath: "/nonexistent.jsonl"), tokenizer: tok, maxLength: 64))
    }

    func testTruncationKeepsTheStartAndDropsConversationsWithoutTargets() throws {
        let tok = try tokenizer()
        let long = #"{"messages": [{"role": "user", "content": "\#(String(repeating: "word ", count: 80))"}, {"role": "assistant", "content": "ok"}]}"#
        let short = #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b c d e"}]}"#
        let report = try ChatData.load(try write(long + "\n\n" + short + "\n"), tokenizer: tok, maxLength: 40)
        XCTAssertEqual(report.truncatedAway, [1])
        XCTAssertEqual(report.examples.map(\.line), [3])
        XCTAssertLessThanOrEqual(report.examples[0].sequence.tokens.count, 40)
    }

    func testSplitIsSeededAndDisjoint() {
        let items = Array(0..<20)
        let a = SFTRun.split(items, heldOutFraction: 0.1, seed: 3), b = SFTRun.split(items, heldOutFraction: 0.1, seed: 3)
        XCTAssertEqual(a.heldOut, b.heldOut)
        XCTAssertEqual(a.heldOut.count, 2)
        XCTAssertEqual(Set(a.train).union(a.heldOut), Set(items))
        XCTAssertTrue(Set(a.train).isDisjoint(with: a.heldOut))
        XCTAssertEqual(SFTRun.split([7], heldOutFraction: 0.5, seed: 1).heldOut, [])
    }
}

final class SFTRunTests: XCTestCase {
    /// A batch whose gradient is not finite is passed over: the run ends after its batches, every
    /// step skipped, the weights (poisoned on purpose) not stepped with NaN.
    func testNonFiniteGradientsAreSkippedAndTheRunStillEnds() throws {
        let config = ModelConfig(layers: 1, width: 16, heads: 2, kvHeads: 1, ffnWidth: 16, vocab: 16, contextLength: 16)
        let weights = ModelWeights.random(config: config, seed: 1)
        weights.storage[weights.layout.embedOffset] = .nan
        let train = (0..<6).map { k in TrainingSequence(tokens: [0, Int32(k + 1), 3], lossMask: [0, 1, 1]) }
        var settings = SFTSettings()
        settings.batchSize = 2
        let run = try SFTRun(weights: weights, train: train, heldOut: [], settings: settings)
        var reports: [StepReport] = []
        while run.batchesDone < run.totalSteps { reports.append(try run.step()) }
        XCTAssertEqual(reports.count, run.totalSteps)
        XCTAssertTrue(reports.allSatisfy(\.skipped))
        XCTAssertEqual(run.trainer.optimizer.step, 0)
        XCTAssertEqual(run.trainer.optimizer.skippedSteps, run.totalSteps)
    }
}
