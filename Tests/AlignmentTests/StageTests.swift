import Alignment
import Engine
import Formats
import Foundation
import Tokenizer
import XCTest

final class StageInputTests: XCTestCase {
    func write(_ lines: [String]) throws -> String {
        let path = NSTemporaryDirectory() + "stage-items-\(UUID().uuidString).jsonl"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testItemsTakeIdsSeedsAndConversations() throws {
        let path = try write([#"{"prompt": "Hi", "extra": 7}"#, #"{"id": "b", "seed": 5, "messages": [{"role": "user", "content": "Yo"}]}"#,
                              #"{"id": "c", "seed": 18446744073709551615, "prompt": "Hey"}"#])
        let lines = try StageInput.load(path, kind: .generate, runSeed: 1, chat: true, system: "Be kind")
        XCTAssertEqual(lines.map(\.item.id), ["1", "b", "c"])
        XCTAssertEqual(lines[0].item.messages, [ChatMessage(role: "system", content: "Be kind"), ChatMessage(role: "user", content: "Hi")])
        XCTAssertEqual(lines[0].item.seed, SplitMix64.derive(1, StageInput.fnv1a("1".utf8)))
        XCTAssertEqual(lines[0].object["extra"] as? Int, 7)
        XCTAssertEqual(lines[1].item.seed, 5)
        XCTAssertEqual(lines[2].item.seed, .max, "a derived seed, as revise writes it, is taken whole")
        // Without chat a prompt is raw text.
        XCTAssertEqual(try StageInput.load(path, kind: .generate, runSeed: 1, chat: false, system: nil)[0].item.prompt, "Hi")
    }

    func testEveryBadLineIsNamedWithItsProblem() throws {
        let cases: [(StageKind, String, String)] = [
            (.generate, #"{"text": "x"}"#, "line 1: needs a non-empty string \"prompt\" or a list \"messages\""),
            (.generate, #"{"prompt": "x", "messages": []}"#, "one of the two"),
            (.generate, #"{"messages": [{"role": "bot", "content": "x"}]}"#, "message 1: \"role\" must be system, user or assistant"),
            (.generate, #"{"prompt": "x", "id": 1.5}"#, "\"id\" must be a non-empty string or an integer"),
            (.generate, #"{"prompt": "x", "seed": -1}"#, "\"seed\" must be a whole number"),
            (.generate, #"{"prompt": "x", "seed": 18446744073709551616}"#, "\"seed\" must be a whole number"),
            (.generate, #"{"prompt": "x", "seed": 2.5}"#, "\"seed\" must be a whole number"),
            (.revise, #"{"prompt": "x"}"#, "revise needs \"steps\""),
            (.options, #"{"prompt": "x", "options": ["A", ""]}"#, "options needs \"options\""),
            (.score, #"{"prompt": "x"}"#, "score needs a string \"response\""),
        ]
        for (kind, line, message) in cases {
            let path = try write([line])
            XCTAssertThrowsError(try StageInput.load(path, kind: kind, runSeed: 0, chat: true, system: nil)) {
                XCTAssertTrue("\($0)".contains(message), "\(line): \($0)")
            }
        }
        let twice = try write([#"{"id": "a", "prompt": "x"}"#, #"{"id": "a", "prompt": "y"}"#])
        XCTAssertThrowsError(try StageInput.load(twice, kind: .generate, runSeed: 0, chat: true, system: nil)) {
            XCTAssertTrue("\($0)".contains("line 2: id \"a\" is also on line 1"), "\($0)")
        }
        let raw = try write([#"{"prompt": "x", "steps": ["again"]}"#])
        XCTAssertThrowsError(try StageInput.load(raw, kind: .revise, runSeed: 0, chat: false, system: nil)) {
            XCTAssertTrue("\($0)".contains("revise needs a conversation"), "\($0)")
        }
        XCTAssertThrowsError(try StageInput.load(try write([""]), kind: .generate, runSeed: 0, chat: true, system: nil)) {
            XCTAssertTrue("\($0)".contains("no items"), "\($0)")
        }
    }
}

final class JSONLineTests: XCTestCase {
    /// What JSONSerialization reads comes back out the same, 0/1 stay numbers and true/false stay
    /// booleans, and the text is escaped so that the line parses again.
    func testLinesReadBackAsTheValuesWritten() throws {
        let input = #"{"one": 1, "yes": true, "zero": 0, "no": false, "half": 0.5, "big": 12345678901234, "none": null, "list": [1, "a\"b", [true]], "nested": {"z": -2.25, "a": "é\n\u0001"}}"#
        let parsed = try JSONSerialization.jsonObject(with: Data(input.utf8)) as! [String: Any]
        var object = parsed
        object["floats"] = [Float(-0.1), Float.nan, Float(3)]
        object["flag"] = true
        object["count"] = 7
        object["ids"] = [1, 0]
        let line = String(decoding: JSONLine.encode(object), as: UTF8.self)
        XCTAssertTrue(line.hasPrefix(#"{"big":12345678901234,"count":7,"flag":true,"floats":[-0.1,null,3.0],"half":0.5,"ids":[1,0],"list":[1,"a\"b",[true]]"#), line)
        XCTAssertTrue(line.contains(#""no":false,"none":null,"one":1,"yes":true,"zero":0"#), line)
        let back = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        XCTAssertEqual((back["nested"] as? [String: Any])?["a"] as? String, "é\n\u{1}")
        XCTAssertEqual(NSDictionary(dictionary: back.filter { $0.key != "floats" }), NSDictionary(dictionary: object.filter { $0.key != "floats" }))
        XCTAssertEqual(back["ids"] as? [Int], [1, 0])
    }
}

final class StageOutputTests: XCTestCase {
    func testResumeKeepsFinishedLinesDropsACutOneAndNeverWritesAnIdTwice() throws {
        let path = NSTemporaryDirectory() + "stage-out-\(UUID().uuidString).jsonl"
        do {
            let out = try StageOutput(path: path, resume: false, syncEvery: 2)
            XCTAssertEqual(try out.append([["id": "a", "v": 1], ["id": "b", "v": 2]]), 2)
            XCTAssertEqual(try out.append([["id": "a", "v": 9]]), 0, "an id already in the file is skipped")
        }
        // A process killed mid-write leaves half a line.
        let handle = FileHandle(forWritingAtPath: path)!
        handle.seekToEndOfFile()
        handle.write(Data(#"{"id": "c", "v"#.utf8))
        try handle.close()
        let resumed = try StageOutput(path: path, resume: true)
        XCTAssertEqual(resumed.done, ["a", "b"])
        XCTAssertEqual(try resumed.append([["id": "c", "v": 3]]), 1)
        try resumed.sync()
        let lines = try JSONLines.read(path)
        XCTAssertEqual(lines.map { $0.object["id"] as? String }, ["a", "b", "c"])
        XCTAssertEqual(lines.map { $0.object["v"] as? Int }, [1, 2, 3])
        // A fresh start empties the file.
        XCTAssertEqual(try StageOutput(path: path, resume: false).done, [])
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "")
    }

    func testAFileWithAnIdTwiceIsRefusedOnResume() throws {
        let path = NSTemporaryDirectory() + "stage-out-\(UUID().uuidString).jsonl"
        try "{\"id\": \"a\"}\n{\"id\": \"a\"}\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try StageOutput(path: path, resume: true)) { XCTAssertTrue("\($0)".contains("line 2: id \"a\" is in the file twice"), "\($0)") }
    }
}

/// The stage computations on a tiny model with SmolLM2's tokenizer (the model file from scripts/fetch-model.sh).
final class StageWorkTests: XCTestCase {
    func makeWork() throws -> (StageWork, LoadedModel) {
        let model = try TinyModel.make(spec: "tiny:layers=1,width=32,seed=3")
        var sampling = RolloutSettings()
        sampling.maxNewTokens = 6
        sampling.stopTokens = [model.tokenizer.eos].compactMap { $0 }
        let scorer = RewardScorer(models: nil, rules: [(.keyword("cat", caseSensitive: false), 2)], decode: { (try? model.tokenizer.decode($0)) ?? "" })
        return (StageWork(policy: try Transformer(weights: model.weights), tokenizer: model.tokenizer, sampling: sampling, scorer: scorer), model)
    }

    func items() -> [StageItem] {
        (0..<5).map { i in
            var item = StageItem(id: "i\(i)")
            item.messages = [ChatMessage(role: "user", content: "Tell me about item \(i)")]
            item.seed = UInt64(100 + i)
            item.steps = ["Critique that.", "Now rewrite it."]
            item.options = [" (A)", " (B)", " yes"]
            item.response = i % 2 == 0 ? "The cat sat." : "A dog ran."
            return item
        }
    }

    /// How items are grouped into tasks changes nothing: each alone equals each in a batch of all.
    func testEachKindGivesAnItemTheSameResultAloneAndInABatch() throws {
        let (work, _) = try makeWork()
        for kind in StageKind.allCases {
            let together = try work.run(kind, items())
            let alone = try items().flatMap { try work.run(kind, [$0]) }
            XCTAssertEqual(together, alone, "\(kind)")
            XCTAssertEqual(together.map(\.id), items().map(\.id))
            XCTAssertTrue(together.allSatisfy { $0.error == nil }, "\(kind): \(together.compactMap(\.error))")
        }
        let revised = try work.run(.revise, items())
        XCTAssertTrue(revised.allSatisfy { $0.texts.count == 3 && $0.truncated.count == 3 }, "an answer, then one per step")
        let generated = try work.run(.generate, items())
        XCTAssertTrue(generated.allSatisfy { $0.texts.count == 1 && $0.tokens.count == $0.logprobs.count && !$0.tokens.isEmpty })
        XCTAssertEqual(generated.map { $0.texts[0] }, revised.map { $0.texts[0] }, "revise's first answer is generate's, same seed")
    }

    /// Option log-probs equal the sum of log-softmax entries of the training forward, computed here
    /// by hand (a different code path: Backprop's logits), within 1e-3 nats: for options of several
    /// tokens and for one-token options (read from the prompt's last logits alone).
    func testOptionLogprobsAreTheOptionTokensSummedLogSoftmax() throws {
        let (work, model) = try makeWork()
        for options in [[" (A)", " (B)", " yes"], ["A", "B"]] {
            var item = items()[0]
            item.options = options
            let result = try work.run(.options, [item])[0]
            let prompt = try model.tokenizer.encode(try ChatTemplate.render(item.messages))
            XCTAssertEqual(result.optionLogprobs.count, options.count)
            if options.count == 2 { XCTAssertEqual(result.optionTokens, [1, 1], "the one-token path is the one tested") }
            for (k, option) in item.options.enumerated() {
                let tokens = try model.tokenizer.encode(option, parseSpecial: false)
                XCTAssertEqual(result.optionTokens[k], tokens.count)
                let sequence = prompt + tokens
                let logits = try Backprop(weights: model.weights).logits([TrainingSequence(tokens: sequence, lossMask: [0] + [Float](repeating: 1, count: sequence.count - 1))])
                let V = model.config.vocab
                var expected = 0.0
                for (t, token) in tokens.enumerated() {
                    let row = Array(logits[(prompt.count - 1 + t) * V ..< (prompt.count + t) * V]).map(Double.init)
                    let m = row.max()!
                    expected += row[Int(token)] - (m + log(row.reduce(0) { $0 + exp($1 - m) }))
                }
                XCTAssertEqual(Double(result.optionLogprobs[k]), expected, accuracy: 1e-3, "option \(k) of \(options)")
            }
        }
    }

    /// A revise step continues the item's KV cache instead of prefilling the whole conversation:
    /// with SmolLM2, greedy, the answer to step 2 equals that of a fresh generation over the whole
    /// rendered conversation (its earlier answers re-tokenize to the ids generated, checked first).
    func testAReviseStepThatReusesTheCacheAnswersAsAFreshPrefillWould() throws {
        let model = try GGUFModel.load(repoRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
        var sampling = RolloutSettings()
        sampling.temperature = 0
        sampling.maxNewTokens = 24
        sampling.stopTokens = [model.tokenizer.eos].compactMap { $0 }
        let work = StageWork(policy: try Transformer(weights: model.weights), tokenizer: model.tokenizer, sampling: sampling)
        var item = StageItem(id: "r")
        item.messages = [ChatMessage(role: "user", content: "Name a fruit.")]
        item.steps = ["Why that one?", "Now say it in French."]
        let revised = try work.run(.revise, [item])[0]
        XCTAssertNil(revised.error)
        XCTAssertEqual(revised.texts.count, 3)
        for k in 0..<2 {
            let stop = revised.truncated[k] ? 0 : 1
            XCTAssertEqual(try model.tokenizer.encode(revised.texts[k], parseSpecial: false).count + stop, revised.textTokens[k], "answer \(k) re-tokenizes to as many ids")
        }
        var fresh = StageItem(id: "f")
        fresh.messages = StageWork.conversation(item, answers: revised.texts, step: 2)
        let generated = try work.run(.generate, [fresh])[0]
        XCTAssertEqual(generated.texts, [revised.texts[2]], "step 2 through the kept cache vs the whole conversation prefilled")
    }

    func testScoreGivesTheRuleRewardAndAPromptTooLongIsAnItemError() throws {
        let (work, _) = try makeWork()
        var long = StageItem(id: "long")
        long.prompt = String(repeating: "word ", count: 2000)
        long.response = "cat"
        let results = try work.run(.score, items() + [long])
        XCTAssertEqual(results.prefix(5).map { $0.scores?.rules }, [2, 0, 2, 0, 2], "the keyword rule weighs 2")
        XCTAssertNil(results[0].scores?.helpfulness, "no reward model: no score, not a 0")
        XCTAssertNotNil(results[5].error)
        XCTAssertTrue(results[5].error!.contains("does not fit the context of 1024"), results[5].error!)
        let generated = try work.run(.generate, [long, items()[1]])
        XCTAssertNotNil(generated[0].error)
        XCTAssertNil(generated[1].error, "the other items go on")
    }
}

/// The shape a worker's stage result must have: honest ones pass, each forgery is named.
final class StageResultCheckTests: XCTestCase {
    func testHonestResultsPassAndForgeriesAreNamed() {
        var item = StageItem(id: "i")
        item.steps = ["critique", "revise"]
        item.options = [" A", " B"]
        var generated = StageItemResult(id: "i")
        generated.texts = ["hi"]; generated.truncated = [false]; generated.textTokens = [2]; generated.tokens = [5, 2]; generated.logprobs = [-0.1, 0]
        var revised = StageItemResult(id: "i")
        revised.texts = ["a", "b", "c"]; revised.truncated = [false, true, false]; revised.textTokens = [3, 4, 1]
        var judged = StageItemResult(id: "i")
        judged.optionLogprobs = [-0.2, -3]; judged.optionTokens = [1, 1]
        var scored = StageItemResult(id: "i")
        scored.scores = RawScores(safety: -2, judgeRating: 7, rules: 1)
        var failed = StageItemResult(id: "i")
        failed.error = "the prompt does not fit the context"
        var unscored = scored
        unscored.scores = nil // what the wire gives with no reward model and a rule reward of 0
        var textOnly = StageItemResult(id: "i")
        textOnly.texts = ["hi"]; textOnly.truncated = [false] // a worker without the tokenizer
        for (result, kind) in [(generated, StageKind.generate), (textOnly, .generate), (revised, .revise), (judged, .options), (scored, .score), (unscored, .score), (failed, .generate)] {
            XCTAssertNil(result.problem(for: item, kind: kind, maxNewTokens: 4), "\(kind)")
        }
        let cases: [(StageItemResult, StageKind, (inout StageItemResult) -> Void, String)] = [
            (generated, .generate, { $0.texts = [] }, "0 answers and 1 truncated flags for 1 turns"),
            (generated, .generate, { $0.textTokens = [] }, "0 token counts for 1 turns"),
            (generated, .generate, { $0.textTokens = []; $0.tokens = [] }, "0 token counts for 1 turns"), // log-probs alone
            (generated, .generate, { $0.textTokens = [5]; $0.tokens = [1, 1, 1, 1, 1]; $0.logprobs = [0, 0, 0, 0, 0] }, "an answer of 5 tokens (1 to max_new_tokens 4)"),
            (generated, .generate, { $0.logprobs = [0] }, "2 tokens and 1 log-probs for an answer of 2 tokens"),
            (generated, .generate, { $0.tokens[0] = -3 }, "a negative token id"),
            (generated, .generate, { $0.logprobs[0] = .infinity }, "log-probs must be finite and at most 0"),
            (revised, .revise, { $0.texts.removeLast() }, "2 answers and 3 truncated flags for 3 turns"),
            (revised, .revise, { $0.textTokens.removeLast() }, "2 token counts for 3 turns"),
            (revised, .revise, { $0.textTokens[1] = 0 }, "an answer of 0 tokens"),
            (judged, .options, { $0.optionLogprobs = [-1] }, "1 log-probs and 2 token counts for 2 options"),
            (judged, .options, { $0.optionLogprobs[1] = 2 }, "option log-probs must be finite and at most 0"),
            (judged, .options, { $0.optionTokens[0] = 0 }, "an option of no tokens"),
            (scored, .score, { $0.scores?.safety = -1e30 }, "safety score -1e+30 is not within +-10000"),
            (scored, .score, { $0.scores?.judgeRating = 0 }, "judge rating 0.0 is not within 1 to 10"),
            (scored, .score, { $0.scores?.rules = .nan }, "rule reward nan is not finite"),
        ]
        for (honest, kind, forge, message) in cases {
            var r = honest
            forge(&r)
            let problem = r.problem(for: item, kind: kind, maxNewTokens: 4)
            XCTAssertTrue(problem?.contains(message) == true, "\(message): \(problem ?? "passed")")
        }
    }
}
