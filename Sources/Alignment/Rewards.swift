import Engine
import Foundation
import Tokenizer

/// A verifiable reward computed from the response alone (for tasks with a checkable answer, and
/// for tests). Each gives a value in [0, 1].
public enum RewardRule: Sendable {
    /// 1 if the response contains the token id.
    case containsToken(Int32)
    /// 1 if the response text contains the word.
    case keyword(String, caseSensitive: Bool)
    /// 1 if the response text matches the regular expression.
    case regex(NSRegularExpression)
    /// max(0, 1 - |tokens - target| / target): 1 at the target length.
    case length(target: Int)

    public static func regex(_ pattern: String) throws -> RewardRule {
        do { return .regex(try NSRegularExpression(pattern: pattern)) } catch {
            throw DataError("reward regex \"\(pattern)\" does not compile: \(error.localizedDescription)")
        }
    }

    func value(response: [Int32], text: () -> String) -> Float {
        switch self {
        case .containsToken(let id): return response.contains(id) ? 1 : 0
        case .keyword(let word, let caseSensitive):
            return text().range(of: word, options: caseSensitive ? [] : [.caseInsensitive]) != nil ? 1 : 0
        case .regex(let re):
            let t = text()
            return re.firstMatch(in: t, range: NSRange(t.startIndex..., in: t)) != nil ? 1 : 0
        case .length(let target): return max(0, 1 - abs(Float(response.count - target)) / Float(max(target, 1)))
        }
    }
}

/// Llama 2's combination of a helpfulness and a safety reward model: the safety score decides when
/// the prompt is tagged unsafe or the safety score is below the threshold, the helpfulness score
/// otherwise. Scores are squashed with a sigmoid first (so the threshold is a probability), then
/// optionally logit-transformed back and whitened across the batch.
public struct ModelRewards {
    public var helpfulness: RewardModel?
    public var safety: RewardModel?
    public var safetyThreshold: Float = 0.15
    public var logit = true
    public var whiten = true
    public var weight: Float = 1

    public init(helpfulness: RewardModel?, safety: RewardModel?) { self.helpfulness = helpfulness; self.safety = safety }

    /// Each model's raw score of prompt + response; a sample's score does not depend on the others
    /// (the reward models run on the batch-invariant inference engine). `between` runs after each
    /// `group` of samples: a worker heartbeats there, as a whole task's pass can outlast its timeout.
    public func raw(_ samples: [Sample], group: Int = 4, between: () -> Void = {}) throws -> (helpfulness: [Float]?, safety: [Float]?) {
        var h: [Float] = [], v: [Float] = []
        for start in stride(from: 0, to: samples.count, by: group) {
            let sequences = samples[start ..< min(start + group, samples.count)].map { $0.prompt + $0.response }
            if let helpfulness { h += try helpfulness.scores(sequences); between() }
            if let safety { v += try safety.scores(sequences); between() }
        }
        return (helpfulness == nil ? nil : h, safety == nil ? nil : v)
    }

    /// The combined reward of every sample of an iteration from their raw scores. Whitening makes
    /// each reward depend on the whole set, so this runs once over the iteration, never per task.
    public func combine(_ samples: [Sample], prompts: [Int: Prompt]) -> [Float] {
        func sigmoid(_ x: Float) -> Float { 1 / (1 + VectorMath.exp(-x)) }
        var combined = samples.map { sample -> Float in
            let h = sample.scores?.helpfulness.map(sigmoid), s = sample.scores?.safety.map(sigmoid)
            guard let s else { return h ?? 0 }
            guard let h else { return s }
            let unsafe = prompts[sample.promptId]?.unsafe ?? false
            return unsafe || s < safetyThreshold ? s : h
        }
        if logit { combined = combined.map { p in let q = min(max(p, 1e-6), 1 - 1e-6); return logf(q / (1 - q)) } }
        if whiten && combined.count > 1 { combined = PPOMath.whiten(combined) }
        return combined.map { $0 * weight }
    }
}

/// The reward of each sample: model rewards (if any), the judge's rating (direct RLAIF) and
/// weighted rules, minus a penalty for a response cut off before its stop token. Scoring is split
/// in two: `raw` per sample (wherever the sample was generated), `combine` over the whole iteration.
public struct RewardScorer {
    public var models: ModelRewards?
    /// Direct RLAIF: the feedback model's expected rating, mapped onto [-1, 1], times `judgeWeight`.
    public var judge: (any ResponseRater)?
    public var judgeWeight: Float = 1
    public var rules: [(rule: RewardRule, weight: Float)]
    public var decode: ([Int32]) -> String
    /// Subtracted from the reward of a response that ended at the length limit (TRL's missing_eos_penalty).
    public var missingEOSPenalty: Float = 0

    public init(models: ModelRewards?, rules: [(rule: RewardRule, weight: Float)], decode: @escaping ([Int32]) -> String) {
        self.models = models; self.rules = rules; self.decode = decode
    }

    /// Each sample's raw scores: reward-model outputs, the judge's rating and the rules' weighted
    /// sum. `conversations`: by prompt id, what the judge reads before the response.
    public func raw(_ samples: [Sample], conversations: [Int: [ChatMessage]] = [:], between: () -> Void = {}) throws -> [RawScores] {
        let model = try models?.raw(samples, between: between)
        let ratings = try judge.map { judge in
            try judge.expectedRatings(try samples.map { s in
                guard let conversation = conversations[s.promptId] else { throw DataError("the judge has no conversation for prompt \(s.promptId)") }
                return (conversation, decode(s.finishReason == .stop ? Array(s.response.dropLast()) : s.response))
            }, between: between)
        }
        return samples.enumerated().map { i, s in
            var cached: String?
            let text = { () -> String in
                if let cached { return cached }
                cached = decode(s.response)
                return cached!
            }
            let rules = self.rules.reduce(Float(0)) { $0 + $1.weight * $1.rule.value(response: s.response, text: text) }
            return RawScores(helpfulness: model?.helpfulness?[i], safety: model?.safety?[i], judgeRating: ratings?[i], rules: rules)
        }
    }

    /// The rewards of an iteration's samples, which all carry their raw scores.
    public func combine(_ samples: [Sample], prompts: [Int: Prompt]) -> [Float] {
        let model = models?.combine(samples, prompts: prompts) ?? [Float](repeating: 0, count: samples.count)
        return zip(model, samples).map { m, s in
            let judged = (s.scores?.judgeRating).map { judgeWeight * DirectJudge.reward($0) } ?? 0
            return m + judged + (s.scores?.rules ?? 0) - (s.finishReason == .length ? missingEOSPenalty : 0)
        }
    }

    /// raw, then combine: the rewards of samples scored here.
    public func score(_ samples: [Sample], prompts: [Int: Prompt]) throws -> [Float] {
        var scored = samples
        for (i, r) in try raw(samples, conversations: prompts.mapValues(\.conversation)).enumerated() { scored[i].scores = r }
        return combine(scored, prompts: prompts)
    }
}

extension Prompt {
    /// What a judge reads before the response: the prompt as the user's turn.
    public var conversation: [ChatMessage] { [ChatMessage(role: "user", content: text)] }
}
