import Engine
import Foundation
import Tokenizer

/// The AI labeler (RLAIF, docs/labeler.md): a feedback model reads a conversation, two answers and
/// a comparison principle, posed as a multiple-choice question, and the normalised probabilities of
/// the option letters are a soft label. Every pair may be asked in both orders, so a judge that
/// prefers a position cannot decide the label, and under several principles (an ensemble).
public struct LabelSettings: Equatable, Sendable {
    public enum Orders: String, Sendable, CaseIterable { case both, one }
    public var orders = Orders.both
    /// Principles drawn per pair (distinct), each asked in every order.
    public var principles = 1
    /// Draw only among the comparisons with this tag (`helpful`, `harmless`): nil, all of them.
    public var tag: String?
    /// The final probability is clamped into this range (the CAI paper clamps CoT labels to 0.4-0.6).
    public var clamp: ClosedRange<Double>?
    /// Worked comparisons of the constitution shown first, as earlier turns.
    public var fewShot = 0
    /// Chain of thought in two steps (RLAIF): the judge first writes a rationale (greedy, at most
    /// `cotTokens`), then the letters are read after it.
    public var cot = false
    public var cotTokens = 128

    public init() {}
}

/// One pair to label: a conversation that waits for the assistant, and two answers to it.
public struct LabelPair {
    public var id: String
    public var conversation: [ChatMessage]
    public var a: String
    public var b: String
    /// For `--eval`: 0 when a is known to be better, 1 when b is.
    public var better: Int?
    /// The input line, copied to the output.
    public var object: [String: Any]

    public init(id: String, conversation: [ChatMessage], a: String, b: String, better: Int? = nil, object: [String: Any]) {
        self.id = id; self.conversation = conversation; self.a = a; self.b = b; self.better = better; self.object = object
    }

    /// `{"prompt", "a", "b"}` per line: the prompt a string, chat messages or an HH dialogue (as
    /// PromptSet reads prompts); `id` optional; `better` ("a" or "b") optional; other fields kept.
    public static func load(_ path: String, system: String?) throws -> [LabelPair] {
        var pairs: [LabelPair] = [], seen: [String: Int] = [:]
        for (n, o) in try JSONLines.read(path) {
            func fail(_ s: String) -> DataError { JSONLines.error(path, n, s) }
            let id = try StageInput.id(o, line: n, seen: &seen, fail)
            guard o["prompt"] != nil else { throw fail("needs \"prompt\" (a string or a list of messages), \"a\" and \"b\"") }
            var conversation = try PromptSet.conversation(o, fail)
            if let system, conversation.first?.role != "system" { conversation.insert(ChatMessage(role: "system", content: system), at: 0) }
            func answer(_ key: String) throws -> String {
                guard let s = o[key] as? String, !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                    throw fail("\"\(key)\" must be a non-empty string (an answer to the prompt)")
                }
                return s
            }
            var pair = LabelPair(id: id, conversation: conversation, a: try answer("a"), b: try answer("b"), object: o)
            switch o["better"] {
            case nil: break
            case let s as String where s == "a" || s == "b": pair.better = s == "a" ? 0 : 1
            default: throw fail("\"better\" must be \"a\" or \"b\"")
            }
            pairs.append(pair)
        }
        if pairs.isEmpty { throw DataError("\(path): no pairs") }
        return pairs
    }
}

/// Which answer the judge sees first: a (as option A) or b.
public enum LabelOrder: String, Sendable, CaseIterable {
    case aFirst = "ab", bFirst = "ba"
}

/// The judge's questions for every pair: one `options` stage item per (pair, principle, order).
public struct LabelPlan {
    public struct Question {
        public var pair: Int
        public var principle: Int
        public var order: LabelOrder
        /// `prompt`: the judge's prompt as raw text, what a local judge and `/v1/completions` read.
        public var item: StageItem
        /// The same question as chat turns, for a judge behind `/v1/chat/completions`.
        public var turns: [ChatMessage]
    }

    public static let optionLetters = ["A", "B"]
    /// The assistant's turn is begun for the judge, so its next token is the letter.
    public static let answerPrefix = "The answer is: ("
    /// Ends the question when the judge is to reason first.
    public static let reasonFirst = "Think it through step by step, then say which answer is better."

    public let constitution: Constitution
    public let settings: LabelSettings
    public let pairs: [LabelPair]
    /// Per pair, the principles (0-based comparison indices) it is asked under.
    public private(set) var principles: [[Int]] = []
    public private(set) var questions: [Question] = []
    /// Per pair, where its questions are in `questions` (principle by principle, aFirst first).
    public private(set) var questionsOfPair: [Range<Int>] = []

    public init(constitution: Constitution, settings: LabelSettings, pairs: [LabelPair], runSeed: UInt64) throws {
        self.constitution = constitution
        self.settings = settings
        self.pairs = pairs
        let candidates = constitution.comparisons.indices.filter { settings.tag == nil || constitution.comparisons[$0].tags.contains(settings.tag!) }
        if candidates.isEmpty {
            throw DataError("constitution \(constitution.name) has no comparisons\(settings.tag.map { " tagged \"\($0)\"" } ?? ""): the labeler asks its comparison questions")
        }
        if settings.principles < 1 || settings.principles > candidates.count {
            throw DataError("--principles \(settings.principles): the constitution has \(candidates.count) comparison\(candidates.count == 1 ? "" : "s")\(settings.tag.map { " tagged \"\($0)\"" } ?? "") to draw from")
        }
        if settings.fewShot > constitution.comparisonExamples.count {
            throw DataError("--few-shot \(settings.fewShot): the constitution has \(constitution.comparisonExamples.count) worked comparison\(constitution.comparisonExamples.count == 1 ? "" : "s")")
        }
        let orders: [LabelOrder] = settings.orders == .both ? [.aFirst, .bFirst] : [.aFirst]
        for (p, pair) in pairs.enumerated() {
            let drawn = Self.draw(settings.principles, of: candidates, seed: SplitMix64.derive(runSeed, StageInput.fnv1a(pair.id.utf8)))
            principles.append(drawn)
            let start = questions.count
            defer { questionsOfPair.append(start ..< questions.count) }
            for k in drawn {
                for order in orders {
                    var item = StageItem(id: "\(pair.id)/\(k + 1)/\(order.rawValue)")
                    let (first, second) = order == .aFirst ? (pair.a, pair.b) : (pair.b, pair.a)
                    let turns = judgeTurns(pair.conversation, first: first, second: second, question: constitution.comparisons[k].question)
                    item.prompt = try ChatTemplate.render(turns) + (settings.cot ? "" : Self.answerPrefix)
                    item.options = Self.optionLetters
                    questions.append(Question(pair: p, principle: k, order: order, item: item, turns: turns))
                }
            }
        }
    }

    /// `count` distinct entries of `candidates`, a seeded partial shuffle: the same for a pair
    /// wherever and however often it is labelled.
    public static func draw(_ count: Int, of candidates: [Int], seed: UInt64) -> [Int] {
        var pool = candidates
        for j in 0..<count {
            let r = j + Int(SplitMix64.derive(seed, 0x6A75_6467_6500 &+ UInt64(j)) % UInt64(pool.count - j))
            pool.swapAt(j, r)
        }
        return Array(pool.prefix(count))
    }

    /// The user turn that asks the question (docs/labeler.md shows one whole).
    public static func question(_ conversation: [ChatMessage], first: String, second: String, question: String) -> String {
        transcript(conversation) + "\n\n\(question)\nOptions:\n(A) \(first)\n(B) \(second)"
    }

    /// How a judge is shown a conversation (its system turn left out): the opening line, then
    /// `Human: ` and `Assistant: ` turns. The labeler's and the direct judge's questions start so.
    public static func transcript(_ conversation: [ChatMessage]) -> String {
        let turns = conversation.filter { $0.role != "system" }.map { ($0.role == "user" ? "Human: " : "Assistant: ") + $0.content }
        return "Consider the following conversation between a human and an assistant:\n\n" + turns.joined(separator: "\n\n")
    }

    /// The judge's turns: the system turn (if any), the worked comparisons and the question. Its
    /// prompt is their chat template, ready for the assistant's turn (`answerPrefix` or, with chain
    /// of thought, the rationale comes next).
    public func judgeTurns(_ conversation: [ChatMessage], first: String, second: String, question: String) -> [ChatMessage] {
        let system = conversation.prefix { $0.role == "system" }
        let examples = constitution.comparisonExamples.prefix(settings.fewShot).flatMap { e in
            [ChatMessage(role: "user", content: Self.question([ChatMessage(role: "user", content: e.prompt)], first: e.options[0], second: e.options[1], question: e.question)),
             ChatMessage(role: "assistant", content: "\(Self.answerPrefix)\(Self.optionLetters[e.choice]))")]
        }
        let asked = Self.question(conversation, first: first, second: second, question: question) + (settings.cot ? "\n\n\(Self.reasonFirst)" : "")
        return Array(system) + examples + [ChatMessage(role: "user", content: asked)]
    }

    /// With chain of thought: the questions whose prompts end with the judge's own rationale, then
    /// `answerPrefix` on a line of its own. `rationales`: by question id.
    public func afterRationales(_ rationales: [String: String]) throws -> [Question] {
        try questions.map { q in
            guard let r = rationales[q.item.id] else { throw DataError("no rationale for \"\(q.item.id)\"") }
            var q = q
            q.item.prompt += r.trimmingCharacters(in: .whitespacesAndNewlines) + "\n" + Self.answerPrefix
            return q
        }
    }
}

/// The arithmetic of a soft label, apart so it can be checked by hand.
public enum PairwiseLabel {
    /// P(the first option) from the two options' log-probs, renormalised over the two. The smaller
    /// probability is computed and the larger is 1 minus it, so swapping the arguments gives exactly
    /// 1 minus the result, and a judge that only prefers a position averages out to exactly 0.5.
    public static func pFirst(_ first: Double, _ second: Double) -> Double {
        if first >= second {
            let e = exp(second - first)
            return 1 - e / (1 + e)
        }
        let e = exp(first - second)
        return e / (1 + e)
    }

    /// P(a is better) from one question's option log-probs (A's, then B's), given the order asked.
    public static func pA(_ logprobs: [Double], order: LabelOrder) -> Double {
        order == .aFirst ? pFirst(logprobs[0], logprobs[1]) : pFirst(logprobs[1], logprobs[0])
    }

    public static func mean(_ xs: [Double]) -> Double { xs.reduce(0, +) / Double(xs.count) }
}

/// The stage's results turned into labelled pairs (docs/labeler.md), in the input's order.
public struct LabelOutcome {
    /// Per pair and drawn principle, P(a) in each order asked (aFirst first); nil for a pair with an error.
    public private(set) var perPrinciple: [[[Double]]?] = []
    public private(set) var lines: [[String: Any]] = []
    /// P(the option shown first), over every question answered: the judge's position preference.
    public private(set) var meanPFirstShown = 0.0
    public private(set) var errors = 0

    /// `results`: the options stage's output lines by item id (`option_logprobs`, or `error`).
    public init(plan: LabelPlan, results: [String: [String: Any]]) throws {
        var firstShown: [Double] = []
        for (p, pair) in plan.pairs.enumerated() {
            var line = pair.object
            // Per drawn principle, P(a) in each order asked.
            var perOrder: [[Double]] = plan.principles[p].map { _ in [] }, problem: String?
            for q in plan.questions[plan.questionsOfPair[p]] {
                guard let r = results[q.item.id] else { throw DataError("the options stage has no result for \"\(q.item.id)\"") }
                if let e = r["error"] as? String { problem = problem ?? e; continue }
                guard let lp = (r["option_logprobs"] as? [NSNumber])?.map(\.doubleValue), lp.count == 2, lp.allSatisfy(\.isFinite) else {
                    throw DataError("the options stage's result for \"\(q.item.id)\" has no two finite option_logprobs")
                }
                let pa = PairwiseLabel.pA(lp, order: q.order)
                firstShown.append(q.order == .aFirst ? pa : 1 - pa)
                perOrder[plan.principles[p].firstIndex(of: q.principle)!].append(pa)
            }
            line["principles"] = plan.principles[p].map { $0 + 1 }
            if let problem {
                line["error"] = problem
                errors += 1
                perPrinciple.append(nil)
                lines.append(line)
                continue
            }
            perPrinciple.append(perOrder)
            // Orders first, then principles: a pure position preference cancels exactly per principle.
            var pa = PairwiseLabel.mean(perOrder.map(PairwiseLabel.mean))
            if let c = plan.settings.clamp { pa = min(max(pa, c.lowerBound), c.upperBound) }
            let orders = perOrder[0].count
            line["p_a"] = pa
            line["p_a_orders"] = (0..<orders).map { o in PairwiseLabel.mean(perOrder.map { $0[o] }) }
            line["p_a_principles"] = perOrder.map(PairwiseLabel.mean)
            let aWins = pa >= 0.5
            line["chosen"] = aWins ? pair.a : pair.b
            line["rejected"] = aWins ? pair.b : pair.a
            line["p_chosen"] = aWins ? pa : 1 - pa
            lines.append(line)
        }
        meanPFirstShown = firstShown.isEmpty ? .nan : PairwiseLabel.mean(firstShown)
    }
}
