import Alignment
import Engine
import Foundation
import Tokenizer

/// Direct RLAIF with the judge behind `/v1/completions` (`reward.judge.url`): two questions per
/// response, each one greedy token with its top log-probs: the prompt ending `Rating: ` for the
/// digits 1 to 9, and the same prompt and `1` for the `0` of 10. It reads ratings as a judge whose
/// tokenizer writes each digit as a token (SmolLM2 does); a digit missing from the top list gets
/// the floor, as a label's option does, and is counted.
public final class EndpointRater: ResponseRater {
    public let judge: EndpointJudge
    public let principle: String

    static let responsesPerGroup = 4

    public init(_ judge: EndpointJudge, principle: String) { self.judge = judge; self.principle = principle }

    public func expectedRatings(_ items: [(conversation: [ChatMessage], response: String)], between: () -> Void) throws -> [Float] {
        var questions: [StageItem] = []
        for (i, item) in items.enumerated() {
            let prompt = try DirectJudge.promptText(item.conversation, response: item.response, principle: principle)
            var digits = StageItem(id: "\(i)/digits")
            digits.prompt = prompt
            digits.options = (1...9).map(String.init)
            var zero = StageItem(id: "\(i)/ten")
            zero.prompt = prompt + "1"
            zero.options = ["0"]
            questions += [digits, zero]
        }
        // A few responses at a time, with `between` after each group: a worker waiting on a slow
        // server still heartbeats.
        var answers: [StageItemResult] = []
        for start in stride(from: 0, to: questions.count, by: 2 * Self.responsesPerGroup) {
            answers += try judge.options(Array(questions[start ..< min(start + 2 * Self.responsesPerGroup, questions.count)]))
            try judge.sync()
            between()
        }
        return (0..<items.count).map { i in
            Float(DirectJudge.expected(digits: answers[2 * i].optionLogprobs.map(Double.init),
                                       zeroAfterOne: Double(answers[2 * i + 1].optionLogprobs[0])))
        }
    }
}

extension RLConfig {
    /// The run's reward (makeScorer), its judge behind the configured endpoint when
    /// `reward.judge.url` names one; its answers are cached in `cachePath`.
    public func makeScorer(tokenizer: BPETokenizer, base: ModelWeights, rates: Bool = true, judgeCache cachePath: String) throws -> RewardScorer {
        var scorer = try makeScorer(tokenizer: tokenizer, base: base, rates: rates)
        if let judgePrinciple, let judgeURL, let judgeModelName, rates {
            scorer.judge = EndpointRater(try EndpointJudge(EndpointJudge.Settings(url: judgeURL, model: judgeModelName), cachePath: cachePath),
                                         principle: judgePrinciple)
        }
        return scorer
    }
}
