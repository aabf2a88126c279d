import Alignment
import Wire

/// What an honest worker's rollout sample holds under the run's configuration. The coordinator
/// drops a result with any sample outside it (and counts it), so a broken or forged worker cannot
/// end the run or move its rewards: token ids within the vocabulary, at most max_new_tokens of
/// them, a log-prob per token for the policy and the reference (and a value per token, if any), and exactly the scores the run's
/// reward has, each finite and within what its source can give.
public struct SampleCheck: Sendable {
    public var helpfulness = false, safety = false, judge = false
    /// The weighted rules' sum lies within +-ruleBound: each rule scores in [0, 1].
    public var ruleBound: Float = 0

    public init(_ c: RLConfig) {
        helpfulness = c.helpfulnessModel != nil
        safety = c.safetyModel != nil
        judge = c.judgePrinciple != nil
        ruleBound = c.rules.reduce(0) { $0 + abs($1.weight) }
    }

    /// Why `s` cannot be an honest sample of a run with this vocabulary and these rollout settings; nil if it can.
    public func problem(_ s: Charter_V1_SampleRecord, vocab: Int, rollout: RolloutSettings) -> String? {
        let n = s.response.count
        if n == 0 || n > rollout.maxNewTokens { return "\(n) response tokens (1 to max_new_tokens \(rollout.maxNewTokens))" }
        if let bad = s.response.first(where: { $0 < 0 || Int($0) >= vocab }) { return "token id \(bad) outside the vocabulary of \(vocab)" }
        if s.response.dropLast().contains(where: rollout.stopTokens.contains) { return "a stop token before its last token" }
        if !s.truncated, !rollout.stopTokens.isEmpty, !rollout.stopTokens.contains(s.response[n - 1]) {
            return "not truncated, yet it does not end with a stop token"
        }
        for (name, values) in [("log-probs", s.logprobs), ("reference log-probs", s.referenceLogprobs)] {
            if values.count != n { return "\(values.count) \(name) for \(n) tokens" }
            // A log-probability is at most 0; the slack covers rounding in log-softmax.
            if values.contains(where: { !($0.isFinite && $0 <= 1e-3) }) { return "\(name) must be finite and at most 0" }
        }
        if !s.values.isEmpty && s.values.count != n { return "\(s.values.count) values for \(n) tokens" }
        if let bad = s.values.first(where: { !(abs($0) <= RawScores.limit) }) { return "value \(bad) is not within +-\(RawScores.limit)" }
        for (name, expected, present, value) in [("helpfulness", helpfulness, s.hasHelpfulnessScore, s.helpfulnessScore),
                                                 ("safety", safety, s.hasSafetyScore, s.safetyScore)] {
            if expected != present { return expected ? "no \(name) score" : "a \(name) score the run has no model for" }
            if present && !(abs(value) <= RawScores.limit) { return "\(name) score \(value) is not within +-\(RawScores.limit)" }
        }
        if judge != s.hasJudgeRating { return judge ? "no judge rating" : "a judge rating the run has no judge for" }
        if s.hasJudgeRating && !(s.judgeRating >= 1 - 1e-3 && s.judgeRating <= 10 + 1e-3) { return "judge rating \(s.judgeRating) is not within 1 to 10" }
        if !(abs(s.ruleReward) <= ruleBound * (1 + 1e-5) + 1e-6) { return "rule reward \(s.ruleReward) is beyond the rules' weights (+-\(ruleBound))" }
        return nil
    }
}
