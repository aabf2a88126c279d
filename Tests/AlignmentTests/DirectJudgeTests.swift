import Alignment
import Engine
import Formats
import Foundation
import Tokenizer
import XCTest

/// Direct RLAIF: the judge's expected rating, its reward and where it enters the run's reward.
final class DirectJudgeTests: XCTestCase {
    func testExpectedRatingAndRewardByHand() {
        var p = [Double](repeating: 0, count: 10)
        p[6] = 1
        XCTAssertEqual(DirectJudge.expected(p), 7, "all mass on 7")
        XCTAssertEqual(DirectJudge.expected([Double](repeating: 0.01, count: 10)), 5.5, accuracy: 1e-12, "uniform")
        // Unnormalised: 0.2 on 2 and 0.6 on 10 -> (0.4 + 6) / 0.8 = 8.
        p = [Double](repeating: 0, count: 10)
        p[1] = 0.2; p[9] = 0.6
        XCTAssertEqual(DirectJudge.expected(p), 8, accuracy: 1e-12)
        XCTAssertEqual(DirectJudge.reward(1), -1)
        XCTAssertEqual(DirectJudge.reward(10), 1)
        XCTAssertEqual(DirectJudge.reward(5.5), 0)
        XCTAssertEqual(DirectJudge.reward(7.75), 0.5)
    }

    /// The judge's rating is added to the reward models' and the rules' rewards, mapped onto
    /// [-1, 1] and weighted, never whitened.
    func testTheRatingEntersTheRewardWeighted() {
        var scorer = RewardScorer(models: nil, rules: [], decode: { _ in "" })
        scorer.judgeWeight = 2
        var samples = (0..<3).map { Sample(promptId: $0, index: 0, prompt: [1], response: [2], logprobs: [0], policyVersion: 0, seed: 0) }
        samples[0].scores = RawScores(judgeRating: 10, rules: 0.5)
        samples[1].scores = RawScores(judgeRating: 1)
        samples[2].scores = RawScores(judgeRating: 6.625)
        XCTAssertEqual(scorer.combine(samples, prompts: [:]), [2.5, -2, 0.5])
    }

    /// With SmolLM2's tokenizer "10" is "1" then "0": the rating reads P("1") and P("0" | "1") from
    /// the kept cache. Checked against the same sequence run whole with every token's logits, and the
    /// arithmetic written out here.
    func testTenSplitIntoOneAndZeroMatchesAWholeSequencePass() throws {
        let loaded = try TinyModel.make(spec: "tiny:layers=1,width=32,seed=5")
        let model = try Transformer(weights: loaded.weights)
        let tok = loaded.tokenizer
        let judge = try DirectJudge(model: model, tokenizer: tok, principle: "Which answer is kinder?")
        let one = try tok.encode("1", parseSpecial: false), zero = try tok.encode("0", parseSpecial: false)
        XCTAssertEqual(try tok.encode(DirectJudge.answerPrefix + "10", parseSpecial: false).suffix(2), [one[0], zero[0]][...])
        let conversation = [ChatMessage(role: "user", content: "Say something nice.")]
        for response in ["You look great today!", "Go away."] {
            let prompt = try judge.prompt(conversation, response: response)
            let logits = try model.forward([(model.makeCache(capacity: prompt.count + 1), prompt + one)], outputs: .everyToken)
            let V = model.config.vocab
            func probabilities(_ row: Int) -> [Double] {
                let r = logits[(row * V)..<((row + 1) * V)].map(Double.init)
                let m = r.max()!, z = r.reduce(0) { $0 + exp($1 - m) }
                return r.map { exp($0 - m) / z }
            }
            let first = probabilities(prompt.count - 1), afterOne = probabilities(prompt.count)
            var p = try (1...9).map { first[Int(try tok.encode("\($0)", parseSpecial: false)[0])] }
            let pTen = p[0] * afterOne[Int(zero[0])]
            p[0] -= pTen
            p.append(pTen)
            let expected = (1...10).reduce(0.0) { $0 + Double($1) * p[$1 - 1] } / p.reduce(0, +)
            let rating = try judge.expectedRatings([(conversation, response)], between: {})[0]
            XCTAssertEqual(Double(rating), expected, accuracy: 1e-4, response)
            XCTAssertTrue((1...10).contains(rating))
        }
    }

    /// docs/labeler.md shows the direct judge's prompt; the judge renders exactly that with SmolLM2's
    /// chat template.
    func testTheRatingPromptIsWhatTheDocsShow() throws {
        let doc = try String(contentsOf: repoRoot.appendingPathComponent("docs/labeler.md"), encoding: .utf8)
        let start = try XCTUnwrap(doc.range(of: "<!-- what the direct judge sees -->\n```text\n")).upperBound
        let shown = String(doc[start ..< (try XCTUnwrap(doc.range(of: "\n```", range: start ..< doc.endIndex))).lowerBound])
        let loaded = try TinyModel.make(spec: "tiny:layers=1,width=32,seed=5")
        let judge = try DirectJudge(model: try Transformer(weights: loaded.weights), tokenizer: loaded.tokenizer,
                                    principle: "How polite is the answer, with no insults or rude words?")
        let prompt = try loaded.tokenizer.decode(try judge.prompt([ChatMessage(role: "user", content: "Fix my typo: teh")], response: "It's \"the\"."))
        XCTAssertEqual(prompt, shown, "docs/labeler.md is out of date; the prompt is:\n\(prompt)")
    }

    func testTheJudgeSectionIsReadAndItsErrorsNamed() throws {
        let base = """
            data: {prompts: p.jsonl}
            reward:
              judge: {principle: "Which answer is more polite?", weight: 0.5}
            """
        let c = try RLConfig.parse(base, name: "j.yaml")
        XCTAssertEqual(c.judgePrinciple, "Which answer is more polite?")
        XCTAssertEqual(c.judgeWeight, 0.5)
        XCTAssertTrue(c.rules.isEmpty, "a judge alone is a reward")
        func error(_ text: String) -> String {
            do { _ = try RLConfig.parse(text, name: "j.yaml"); return "" } catch { return "\(error)" }
        }
        XCTAssertEqual(error("data: {prompts: p.jsonl}\nreward:\n  judge: {weight: 1}"),
                       "j.yaml line 3: \"reward.judge.principle\" is required (the question the feedback model rates each response under)")
        XCTAssertEqual(error("data: {prompts: p.jsonl}\nreward:\n  judge: {principle: x, scale: 10}"),
                       "j.yaml line 3: unknown key \"reward.judge.scale\" (known: principle, weight, url, model)")
        XCTAssertEqual(error("data: {prompts: p.jsonl}\nreward:\n  judge: {principle: x, url: \"http://127.0.0.1:8000\"}"),
                       "j.yaml line 3: \"reward.judge.url\" needs \"model\" too (the server's address and its name for the judge)")
        XCTAssertEqual(error("data: {prompts: p.jsonl}\nreward:\n  judge: {principle: x, url: \"127.0.0.1:8000\", model: m}"),
                       "j.yaml line 3: \"reward.judge.url\" must be a server's address, such as http://127.0.0.1:8000, found \"127.0.0.1:8000\"")
        XCTAssertEqual(error("data: {prompts: p.jsonl}\nreward:\n  judge: {principle: x, weight: high}"),
                       "j.yaml line 3: \"reward.judge.weight\" must be a number, found \"high\"")
    }
}
