import Alignment
import Engine
import Foundation
import Tokenizer
import XCTest

final class LabelerTests: XCTestCase {
    func constitution(_ comparisons: Int = 4, tags: (Int) -> [String] = { _ in [] }) -> Constitution {
        Constitution(name: "t", version: 1, critiques: [.init(critique: "c", revision: "r")],
                     comparisons: (0..<comparisons).map { .init(question: "Which answer is better by rule \($0)?", tags: tags($0)) })
    }

    func pairs(_ n: Int) -> [LabelPair] {
        (0..<n).map { LabelPair(id: "p\($0)", conversation: [ChatMessage(role: "user", content: "q\($0)")], a: "A\($0)", b: "B\($0)", object: ["id": "p\($0)"]) }
    }

    /// Stage output lines for a plan, from a function of the question giving (log P(A), log P(B)).
    func results(_ plan: LabelPlan, _ logprobs: (LabelPlan.Question) -> [Double]) -> [String: [String: Any]] {
        Dictionary(uniqueKeysWithValues: plan.questions.map { q in (q.item.id, ["id": q.item.id, "option_logprobs": logprobs(q).map { NSNumber(value: $0) }]) })
    }

    func testHandMadeLogitsGiveTheExpectedSoftLabel() throws {
        XCTAssertEqual(PairwiseLabel.pFirst(log(0.6), log(0.2)), 0.75, accuracy: 1e-12, "renormalised over the two options")
        XCTAssertEqual(PairwiseLabel.pFirst(log(0.2), log(0.6)), 0.25, accuracy: 1e-12)
        XCTAssertEqual(PairwiseLabel.pA([log(0.2), log(0.6)], order: .bFirst), 0.75, accuracy: 1e-12, "b shown first: a is option B")
        var settings = LabelSettings()
        settings.principles = 2
        let plan = try LabelPlan(constitution: constitution(), settings: settings, pairs: pairs(1), runSeed: 1)
        XCTAssertEqual(plan.questions.map(\.order), [.aFirst, .bFirst, .aFirst, .bFirst], "per principle, both orders")
        // Principle 1 (first drawn): P(A) = 0.9 in order ab, 0.3 in order ba; principle 2: 0.6 and 0.5.
        let first = plan.principles[0][0]
        let outcome = try LabelOutcome(plan: plan, results: results(plan) { q in
            let pA = q.principle == first ? (q.order == .aFirst ? 0.9 : 0.3) : (q.order == .aFirst ? 0.6 : 0.5)
            return [log(pA), log(1 - pA)]
        })
        // P(a): 0.9 and 0.7 under principle 1, 0.6 and 0.5 under principle 2.
        let line = outcome.lines[0]
        XCTAssertEqual(line["p_a"] as! Double, (0.8 + 0.55) / 2, accuracy: 1e-12)
        let orders = line["p_a_orders"] as! [Double]
        XCTAssertEqual(orders[0], 0.75, accuracy: 1e-12)
        XCTAssertEqual(orders[1], 0.6, accuracy: 1e-12)
        XCTAssertEqual(line["chosen"] as? String, "A0")
        XCTAssertEqual(line["rejected"] as? String, "B0")
        XCTAssertEqual(line["p_chosen"] as! Double, 0.675, accuracy: 1e-12)
        XCTAssertEqual(line["principles"] as? [Int], plan.principles[0].map { $0 + 1 })
        XCTAssertEqual(line["id"] as? String, "p0", "the input's fields are kept")
        XCTAssertEqual(outcome.meanPFirstShown, (0.9 + 0.3 + 0.6 + 0.5) / 4, accuracy: 1e-12)
        // b wins: chosen and rejected swap, p_chosen is P(b).
        let flipped = try LabelOutcome(plan: plan, results: results(plan) { q in q.order == .aFirst ? [log(0.2), log(0.8)] : [log(0.8), log(0.2)] })
        XCTAssertEqual(flipped.lines[0]["chosen"] as? String, "B0")
        XCTAssertEqual(flipped.lines[0]["p_chosen"] as! Double, 0.8, accuracy: 1e-12)
    }

    /// A judge that only prefers a position, whatever the answers say, gives exactly 0.5 once both
    /// orders are averaged, for any strength of the preference and any number of principles.
    func testBothOrdersCancelAPurePositionPreferenceExactly() throws {
        var settings = LabelSettings()
        settings.principles = 3
        let plan = try LabelPlan(constitution: constitution(), settings: settings, pairs: pairs(50), runSeed: 4)
        var g = SplitMix64(seed: 11)
        let preference = (0..<50).map { _ in (g.nextUniform() * 30 - 15, g.nextUniform() * 30 - 15) }
        let outcome = try LabelOutcome(plan: plan, results: results(plan) { q in
            let (first, second) = preference[q.pair]
            return [first - 20, second - 20]
        })
        for (p, line) in outcome.lines.enumerated() {
            XCTAssertEqual(line["p_a"] as? Double, 0.5, "pair \(p): the position preference leaks into the label")
            let orders = line["p_a_orders"] as! [Double]
            XCTAssertNotEqual(orders[0], orders[1], "each order alone follows the position")
            XCTAssertEqual(line["p_a_principles"] as? [Double], [0.5, 0.5, 0.5], "each principle's orders cancel too")
        }
        XCTAssertNotEqual(outcome.meanPFirstShown, 0.5)
        // One order only: the label is the position preference.
        settings.orders = .one
        let one = try LabelPlan(constitution: constitution(), settings: settings, pairs: pairs(1), runSeed: 4)
        let label = try LabelOutcome(plan: one, results: results(one) { _ in [log(0.8), log(0.2)] })
        XCTAssertEqual(label.lines[0]["p_a"] as! Double, 0.8, accuracy: 1e-12)
        XCTAssertEqual((label.lines[0]["p_a_orders"] as! [Double]).count, 1)
    }

    func testClampKeepsTheLabelInItsRange() throws {
        var settings = LabelSettings()
        settings.clamp = 0.4...0.6
        let plan = try LabelPlan(constitution: constitution(), settings: settings, pairs: pairs(2), runSeed: 1)
        let outcome = try LabelOutcome(plan: plan, results: results(plan) { q in
            let pA = q.pair == 0 ? 0.99 : 0.52 // P(a) is 0.99 or 0.52 in both orders
            return q.order == .aFirst ? [log(pA), log(1 - pA)] : [log(1 - pA), log(pA)]
        })
        XCTAssertEqual(outcome.lines[0]["p_a"] as? Double, 0.6)
        XCTAssertEqual(outcome.lines[1]["p_a"] as! Double, 0.52, accuracy: 1e-12, "inside the range: unchanged")
    }

    /// Principles: distinct per pair, among the tagged ones, the same for the same seed and pair id
    /// (so on any worker and in any order of pairs), and every one of them drawn over many pairs.
    func testPrinciplesAreSeededDistinctAndTagged() throws {
        var settings = LabelSettings()
        settings.principles = 3
        settings.tag = "harmless"
        let c = constitution(8) { $0 % 2 == 0 ? ["harmless"] : ["helpful"] }
        let plan = try LabelPlan(constitution: c, settings: settings, pairs: pairs(200), runSeed: 5)
        XCTAssertTrue(plan.principles.allSatisfy { Set($0).count == 3 && $0.allSatisfy { $0 % 2 == 0 } })
        XCTAssertEqual(Set(plan.principles.joined()), [0, 2, 4, 6])
        let reversed = try LabelPlan(constitution: c, settings: settings, pairs: pairs(200).reversed(), runSeed: 5)
        XCTAssertEqual(reversed.principles.reversed(), plan.principles, "a pair's draw depends on its id, not its place")
        let other = try LabelPlan(constitution: c, settings: settings, pairs: pairs(200), runSeed: 6)
        XCTAssertNotEqual(other.principles, plan.principles)
        XCTAssertEqual(plan.questions.count, 200 * 3 * 2)
        XCTAssertEqual(Set(plan.questions.map(\.item.id)).count, plan.questions.count, "question ids are unique")
        XCTAssertEqual(plan.questions[0].item.id, "p0/\(plan.principles[0][0] + 1)/ab")
        XCTAssertEqual(plan.questions[0].item.options, ["A", "B"])
    }

    func testPlanRefusesWhatTheConstitutionCannotGive() throws {
        var settings = LabelSettings()
        settings.principles = 5
        XCTAssertThrowsError(try LabelPlan(constitution: constitution(4), settings: settings, pairs: pairs(1), runSeed: 1)) {
            XCTAssertEqual("\($0)", "--principles 5: the constitution has 4 comparisons to draw from")
        }
        settings.principles = 1
        settings.tag = "helpful"
        XCTAssertThrowsError(try LabelPlan(constitution: constitution(4), settings: settings, pairs: pairs(1), runSeed: 1)) {
            XCTAssertEqual("\($0)", "constitution t has no comparisons tagged \"helpful\": the labeler asks its comparison questions")
        }
        settings.tag = nil
        settings.fewShot = 1
        XCTAssertThrowsError(try LabelPlan(constitution: constitution(4), settings: settings, pairs: pairs(1), runSeed: 1)) {
            XCTAssertEqual("\($0)", "--few-shot 1: the constitution has 0 worked comparisons")
        }
    }

    func testPairFilesReadAndEveryBadLineIsNamed() throws {
        func load(_ text: String) throws -> [LabelPair] {
            let path = NSTemporaryDirectory() + "pairs-\(UUID().uuidString).jsonl"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: path) }
            return try LabelPair.load(path, system: "Be kind.")
        }
        let good = try load("""
            {"prompt": "Hi", "a": "Hello", "b": "Go away", "better": "a", "source": "x"}
            {"id": "m", "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes?"}, {"role": "user", "content": "Help"}], "a": "Sure", "b": "No"}

            """)
        XCTAssertEqual(good.map(\.id), ["1", "m"])
        XCTAssertEqual(good[0].better, 0)
        XCTAssertEqual(good[0].conversation.map(\.role), ["system", "user"])
        XCTAssertEqual(good[1].conversation.map(\.content), ["Be kind.", "Hi", "Yes?", "Help"])
        XCTAssertEqual(good[0].object["source"] as? String, "x")
        let bad: [(String, String)] = [
            (#"{"a": "x", "b": "y"}"#, "line 1: needs \"prompt\" (a string or a list of messages), \"a\" and \"b\""),
            (#"{"prompt": "p", "a": "x"}"#, "line 1: \"b\" must be a non-empty string (an answer to the prompt)"),
            (#"{"prompt": "p", "a": " ", "b": "y"}"#, "line 1: \"a\" must be a non-empty string (an answer to the prompt)"),
            (#"{"prompt": "p", "a": "x", "b": "y", "better": "c"}"#, "line 1: \"better\" must be \"a\" or \"b\""),
            (#"{"prompt": 3, "a": "x", "b": "y"}"#, "line 1: \"prompt\" must be a string or a list of messages"),
            ("{\"id\": 1, \"prompt\": \"p\", \"a\": \"x\", \"b\": \"y\"}\n{\"id\": 1, \"prompt\": \"p\", \"a\": \"x\", \"b\": \"y\"}", "line 2: id \"1\" is also on line 1"),
            ("", "no pairs"),
        ]
        for (text, message) in bad {
            XCTAssertThrowsError(try load(text + "\n"), text) { XCTAssertTrue("\($0)".hasSuffix(message), "\($0)") }
        }
    }

    /// docs/labeler.md shows the judge's prompt for one question; the plan renders exactly that
    /// with SmolLM2's chat template.
    func testTheJudgePromptIsWhatTheDocsShow() throws {
        let doc = try String(contentsOf: repoRoot.appendingPathComponent("docs/labeler.md"), encoding: .utf8)
        let start = try XCTUnwrap(doc.range(of: "<!-- what the judge sees -->\n```text\n")).upperBound
        let shown = String(doc[start ..< (try XCTUnwrap(doc.range(of: "\n```", range: start ..< doc.endIndex))).lowerBound])
        var c = Constitution(name: "doc", version: 1, critiques: [.init(critique: "c", revision: "r")],
                             comparisons: [.init(question: "Which answer is more polite?")])
        c.comparisonExamples = try Constitution.parse("""
            name: doc
            version: 1
            critiques: [{critique: c, revision: r}]
            comparisons: [{question: Which answer is more polite?}]
            few_shot:
              comparisons:
                - {prompt: "Is it raining?", options: ["Look outside, genius.", "Yes, take an umbrella."], principle: 1, choice: 2}
            """, file: "doc.yaml").comparisonExamples
        var settings = LabelSettings()
        settings.fewShot = 1
        let pair = LabelPair(id: "x", conversation: [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello!"),
                                                      ChatMessage(role: "user", content: "Fix my typo: teh")],
                             a: "It's \"the\".", b: "Learn to spell.", object: [:])
        let plan = try LabelPlan(constitution: c, settings: settings, pairs: [pair], runSeed: 1)
        XCTAssertEqual(plan.questions[1].order, LabelOrder.bFirst)
        XCTAssertEqual(plan.questions[1].item.prompt, shown, "docs/labeler.md is out of date; the prompt is:\n\(plan.questions[1].item.prompt)")
    }

    /// With chain of thought the judge is asked to reason first, and the letters are read after
    /// its own rationale and the answer prefix on a new line.
    func testChainOfThoughtPromptsEndWithTheRationale() throws {
        var settings = LabelSettings()
        settings.cot = true
        let plan = try LabelPlan(constitution: constitution(), settings: settings, pairs: pairs(2), runSeed: 1)
        let q = plan.questions[0].item.prompt
        XCTAssertTrue(q.hasSuffix("(B) B0\n\n\(LabelPlan.reasonFirst)<|im_end|>\n<|im_start|>assistant\n"), q)
        let rationales = Dictionary(uniqueKeysWithValues: plan.questions.map { ($0.item.id, "  A is kinder.\n") })
        let after = try plan.afterRationales(rationales)
        XCTAssertEqual(after[0].item.prompt, q + "A is kinder.\nThe answer is: (")
        XCTAssertEqual(after.map(\.item.id), plan.questions.map(\.item.id))
        XCTAssertThrowsError(try plan.afterRationales([:])) { XCTAssertEqual("\($0)", "no rationale for \"p0/\(plan.principles[0][0] + 1)/ab\"") }
    }

    func testEvalCountsAgreementAndCalibrationByHand() throws {
        var settings = LabelSettings()
        settings.principles = 2
        var ps = pairs(4)
        for i in 0..<4 { ps[i].better = i < 3 ? 0 : 1 }
        let plan = try LabelPlan(constitution: constitution(), settings: settings, pairs: ps, runSeed: 2)
        // P(a) per (pair, principle drawn first?, order): pair 0 right in every way; pair 1 right only
        // in order ab; pair 2 wrong under the first principle, right under the ensemble; pair 3 (b better) right.
        let outcome = try LabelOutcome(plan: plan, results: results(plan) { q in
            let firstPrinciple = q.principle == plan.principles[q.pair][0]
            let pa: Double
            switch q.pair {
            case 0: pa = 0.9
            case 1: pa = q.order == .aFirst ? 0.8 : 0.1
            case 2: pa = firstPrinciple ? 0.4 : 0.9
            default: pa = 0.2
            }
            let pA = q.order == .aFirst ? pa : 1 - pa
            return [log(pA), log(1 - pA)]
        })
        let eval = LabelEval(plan: plan, outcome: outcome)
        XCTAssertEqual(eval.pairs, 4)
        XCTAssertEqual(eval.rows.map(\.agreed), [3, 2, 2, 3], "a first; b first; both orders; both orders with 2 principles")
        // p_a: 0.9, 0.45, 0.65, 0.2 -> bins 9 (a better: 1), 4 (1), 6 (1), 2 (0).
        let gaps: [Double] = [0.9 - 1, 0.45 - 1, 0.65 - 1, 0.2 - 0]
        let expected = gaps.map(abs).reduce(0, +) / 4
        XCTAssertEqual(eval.calibrationError, expected, accuracy: 1e-12)
        XCTAssertTrue(eval.report[1].hasPrefix("  agreement, a shown first, one principle: 3/4 (75.0%)"), eval.report[1])
    }
}
