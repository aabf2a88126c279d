import Engine
import Foundation

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

    public func scores(_ samples: [Sample], prompts: [Int: Prompt]) throws -> [Float] {
        func sigmoid(_ x: Float) -> Float { 1 / (1 + VectorMath.exp(-x)) }
        let sequences = samples.map { $0.prompt + $0.response }
        let h = try helpfulness?.scores(sequences).map(sigmoid), s = try safety?.scores(sequences).map(sigmoid)
        var combined = samples.indices.map { i -> Float in
            guard let s else { return h?[i] ?? 0 }
            guard let h else { return s[i] }
            let unsafe = prompts[samples[i].promptId]?.unsafe ?? false
            return unsafe || s[i] < safetyThreshold ? s[i] : h[i]
        }
        if logit { combined = combined.map { p in let q = min(max(p, 1e-6), 1 - 1e-6); return logf(q / (1 - q)) } }
        if whiten && combined.count > 1 { combined = PPOMath.whiten(combined) }
        return combined.map { $0 * weight }
    }
}

/// The reward of each sample: model rewards (if any) plus weighted rules.
public struct RewardScorer {
    public var models: ModelRewards?
    public var rules: [(rule: RewardRule, weight: Float)]
    public var decode: ([Int32]) -> String

    public init(models: ModelRewards?, rules: [(rule: RewardRule, weight: Float)], decode: @escaping ([Int32]) -> String) {
        self.models = models; self.rules = rules; self.decode = decode
    }

    public func score(_ samples: [Sample], prompts: [Int: Prompt]) throws -> [Float] {
        var total = try models?.scores(samples, prompts: prompts) ?? [Float](repeating: 0, count: samples.count)
        for (i, s) in samples.enumerated() {
            var cached: String?
            let text = { () -> String in
                if let cached { return cached }
                cached = decode(s.response)
                return cached!
            }
            for (rule, weight) in rules { total[i] += weight * rule.value(response: s.response, text: text) }
        }
        return total
    }
}
