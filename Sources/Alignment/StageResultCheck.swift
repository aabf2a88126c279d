extension StageItemResult {
    /// Why this cannot be an honest worker's result for `item` of a `kind` stage that samples at
    /// most `maxNewTokens` a turn; nil if it can. The coordinator refuses such a result before
    /// anything of it reaches the stage output. (An `error` result is taken: a worker may be unable
    /// to do an item, and another would fail it the same way.)
    public func problem(for item: StageItem, kind: StageKind, maxNewTokens: Int) -> String? {
        if error != nil { return nil }
        func logprob(_ x: Float) -> Bool { x.isFinite && x <= 1e-3 } // at most 0, with room for rounding
        switch kind {
        case .generate, .revise:
            let turns = kind == .generate ? 1 : item.steps.count + 1
            if texts.count != turns || truncated.count != turns {
                return "\(texts.count) answers and \(truncated.count) truncated flags for \(turns) turns"
            }
            // A worker without the model's tokenizer (the Python worker's synthetic answers) sends
            // text only: no token counts, ids or log-probs. Anything it does send must add up.
            if textTokens.isEmpty && tokens.isEmpty && logprobs.isEmpty { return nil }
            if textTokens.count != turns { return "\(textTokens.count) token counts for \(turns) turns" }
            if let n = textTokens.first(where: { !(1...maxNewTokens).contains($0) }) { return "an answer of \(n) tokens (1 to max_new_tokens \(maxNewTokens))" }
            if kind == .generate {
                if tokens.count != textTokens[0] || logprobs.count != tokens.count {
                    return "\(tokens.count) tokens and \(logprobs.count) log-probs for an answer of \(textTokens[0]) tokens"
                }
                if tokens.contains(where: { $0 < 0 }) { return "a negative token id" }
                if !logprobs.allSatisfy(logprob) { return "log-probs must be finite and at most 0" }
            }
        case .options:
            if optionLogprobs.count != item.options.count || optionTokens.count != item.options.count {
                return "\(optionLogprobs.count) log-probs and \(optionTokens.count) token counts for \(item.options.count) options"
            }
            if !optionLogprobs.allSatisfy(logprob) { return "option log-probs must be finite and at most 0" }
            if optionTokens.contains(where: { $0 < 1 }) { return "an option of no tokens" }
        case .score:
            let s = scores ?? RawScores() // none on the wire: no model and a rule reward of 0
            for (name, value) in [("helpfulness", s.helpfulness), ("safety", s.safety)] {
                if let v = value, !(abs(v) <= RawScores.limit) { return "\(name) score \(v) is not within +-\(RawScores.limit)" }
            }
            if let j = s.judgeRating, !(j >= 1 - 1e-3 && j <= 10 + 1e-3) { return "judge rating \(j) is not within 1 to 10" }
            if !s.rules.isFinite { return "rule reward \(s.rules) is not finite" }
        }
        return nil
    }
}

extension RawScores {
    /// A reward model's raw head output beyond this is no model's honest output (they stay within tens).
    public static let limit: Float = 1e4
}
