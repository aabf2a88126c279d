import Engine
import Foundation
import Tokenizer

/// What rates responses for direct RLAIF: a local judge (DirectJudge) or one behind an endpoint.
public protocol ResponseRater {
    /// The expected rating (1 to 10) of each response to its conversation; `between` runs between
    /// passes (a worker heartbeats there).
    func expectedRatings(_ items: [(conversation: [ChatMessage], response: String)], between: () -> Void) throws -> [Float]
}

/// Direct RLAIF (Lee et al., docs/labeler.md): the feedback model rates a response from 1 to 10
/// under a principle, and the reward is the expected rating, sum of i * P(i), with P renormalised
/// over the ten ratings. No reward model is trained in between.
public struct DirectJudge: ResponseRater {
    /// The assistant's turn is begun for the judge, so its next tokens are the rating.
    public static let answerPrefix = "Rating: "

    public let model: Transformer
    public let tokenizer: BPETokenizer
    public let principle: String
    /// The tokens of "1" ... "9" after `answerPrefix`, one each.
    let digits: [Int32]
    /// The tokens of "10": one token, or the token of "1" and then one more.
    let ten: [Int32]

    public init(model: Transformer, tokenizer: BPETokenizer, principle: String) throws {
        self.model = model; self.tokenizer = tokenizer; self.principle = principle
        // What follows the prefix when a rating is written after it, as the tokenizer splits the whole.
        let prefix = try tokenizer.encode(Self.answerPrefix, parseSpecial: false)
        func after(_ rating: Int) throws -> [Int32] {
            let whole = try tokenizer.encode(Self.answerPrefix + "\(rating)", parseSpecial: false)
            guard whole.starts(with: prefix), whole.count > prefix.count else {
                throw DataError("the judge's tokenizer merges \"\(Self.answerPrefix)\" with the rating \(rating); direct RLAIF reads ratings as tokens after it")
            }
            return Array(whole[prefix.count...])
        }
        let digits = try (1...9).map(after)
        guard digits.allSatisfy({ $0.count == 1 }) else { throw DataError("the judge's tokenizer writes a rating from 1 to 9 in more than one token") }
        self.digits = digits.map { $0[0] }
        ten = try after(10)
        guard ten.count == 1 || (ten.count == 2 && ten[0] == self.digits[0]) else {
            throw DataError("the judge's tokenizer writes the rating 10 as \(ten.count) tokens not starting with the rating 1")
        }
    }

    /// The user turn that asks for the rating (docs/labeler.md shows one whole).
    public static func question(_ conversation: [ChatMessage], response: String, principle: String) -> String {
        LabelPlan.transcript(conversation) + "\n\nAssistant: \(response)\n\n\(principle)\nRate the assistant's last answer from 1 (worst) to 10 (best)."
    }

    /// The judge's prompt as text: the question as a user turn, then the begun assistant turn.
    public static func promptText(_ conversation: [ChatMessage], response: String, principle: String) throws -> String {
        try ChatTemplate.render([ChatMessage(role: "user", content: question(conversation, response: response, principle: principle))]) + answerPrefix
    }

    public func prompt(_ conversation: [ChatMessage], response: String) throws -> [Int32] {
        try tokenizer.encode(try Self.promptText(conversation, response: response, principle: principle))
    }

    /// The expected rating (1 to 10) of each response to its conversation. One prompt per pass, as
    /// a generation's prefill, with `between` after each (a worker heartbeats there).
    public func expectedRatings(_ items: [(conversation: [ChatMessage], response: String)], between: () -> Void) throws -> [Float] {
        try items.map { item in
            let prompt = try prompt(item.conversation, response: item.response)
            if prompt.count + ten.count > model.config.contextLength {
                throw DataError("the judge's prompt takes \(prompt.count) tokens, more than its context of \(model.config.contextLength)")
            }
            let cache = model.makeCache(capacity: prompt.count + ten.count)
            let first = Self.logSoftmax(try model.forward([(cache, prompt)], outputs: .lastPerSequence))
            let digits = self.digits.map { Double(first[Int($0)]) }
            let rating: Double
            if ten.count == 1 {
                rating = Self.expected((digits + [Double(first[Int(ten[0])])]).map(exp))
            } else {
                let second = Self.logSoftmax(try model.forward([(cache, [ten[0]])], outputs: .lastPerSequence))
                rating = Self.expected(digits: digits, zeroAfterOne: Double(second[Int(ten[1])]))
            }
            between()
            return Float(rating)
        }
    }

    /// The expected rating when "10" is written "1" then "0": `digits` the log-probs of "1" ... "9"
    /// after the prompt, `zeroAfterOne` that of "0" after "1". P(10) = P("1") P("0" | "1"), and the
    /// rest of P("1") is the rating 1.
    public static func expected(digits: [Double], zeroAfterOne: Double) -> Double {
        var p = digits.map(exp)
        let pTen = p[0] * exp(zeroAfterOne)
        p[0] -= pTen
        return expected(p + [pTen])
    }

    /// sum of i * P(i) over ratings 1...10, P renormalised over them.
    public static func expected(_ p: [Double]) -> Double {
        precondition(p.count == 10, "ten ratings")
        let total = p.reduce(0, +)
        guard total > 0 else { return 5.5 }
        return p.enumerated().reduce(0) { $0 + Double($1.offset + 1) * $1.element } / total
    }

    /// The expected rating mapped linearly onto [-1, 1] (1 -> -1, 10 -> 1).
    public static func reward(_ rating: Float) -> Float { (rating - 5.5) / 4.5 }

    static func logSoftmax(_ logits: [Float]) -> [Float] {
        logits.withUnsafeBufferPointer { l in
            let norm = VectorMath.logSumExp(l.baseAddress!, l.count)
            return l.map { $0 - norm }
        }
    }
}
