#if canImport(Glibc)
import Glibc
#endif

/// How to pick each next token. Temperature 0 is greedy.
public struct SamplingParams: Sendable, Codable, Equatable {
    public var temperature: Float
    public var topK: Int            // 0: no limit
    public var topP: Float          // 1: no limit
    public var maxNewTokens: Int
    public var stopTokens: Set<Int32>
    public var seed: UInt64

    public init(temperature: Float = 1, topK: Int = 0, topP: Float = 1, maxNewTokens: Int = 128,
                stopTokens: Set<Int32> = [], seed: UInt64 = 0) {
        self.temperature = temperature; self.topK = topK; self.topP = topP
        self.maxNewTokens = maxNewTokens; self.stopTokens = stopTokens; self.seed = seed
    }

    public func validate() throws(EngineError) {
        if !(temperature >= 0) || !temperature.isFinite { throw .invalidInput("temperature must be >= 0, found \(temperature)") }
        if topK < 0 { throw .invalidInput("top-k must be >= 0, found \(topK)") }
        if !(topP > 0 && topP <= 1) { throw .invalidInput("top-p must be in (0, 1], found \(topP)") }
        if maxNewTokens < 0 { throw .invalidInput("max new tokens must be >= 0, found \(maxNewTokens)") }
    }
}

/// A chosen token with its log-probability under the distribution it was drawn from (after
/// temperature, top-k, top-p) and under the raw model (softmax of the unmodified logits).
public struct SampledToken: Sendable, Equatable, Codable {
    public var id: Int32
    public var logprob: Float
    public var rawLogprob: Float
}

public enum Sampler {
    /// Picks a token from one row of logits (V) and advances `rng` by at most one draw.
    public static func sample(logits: UnsafePointer<Float>, vocab: Int, params: SamplingParams,
                              rng: inout SplitMix64) -> SampledToken {
        let rawLogZ = VectorMath.logSumExp(logits, vocab)
        if params.temperature == 0 || params.topK == 1 {
            var best = 0
            for i in 1..<vocab where logits[i] > logits[best] { best = i }
            return SampledToken(id: Int32(best), logprob: 0, rawLogprob: logits[best] - rawLogZ)
        }
        // probs = exp((logits - max) / T), unnormalised, in one vector pass.
        let probs = UnsafeMutablePointer<Float>.allocate(capacity: vocab)
        defer { probs.deallocate() }
        probs.update(from: logits, count: vocab)
        VectorMath.scale(probs, 1 / params.temperature, vocab)
        let total = Double(VectorMath.expShifted(probs, VectorMath.max(probs, vocab), vocab))
        let u = rng.nextUniform()

        if params.topK == 0 && params.topP >= 1 {
            var target = u * total, choice = vocab - 1
            for i in 0..<vocab {
                target -= Double(probs[i])
                if target < 0 { choice = i; break }
            }
            return SampledToken(id: Int32(choice), logprob: Float(log(Double(probs[choice]) / total)),
                                rawLogprob: logits[choice] - rawLogZ)
        }

        // Truncated: grow a candidate set of the highest logits until it holds the top-k, or enough
        // mass for top-p, so the whole vocabulary is sorted only in the worst case.
        var k = params.topK > 0 ? min(params.topK, vocab) : min(64, vocab)
        var candidates: [Int]
        while true {
            candidates = topIndices(logits, vocab, k)
            if params.topP >= 1 || k == vocab || (params.topK > 0 && k == params.topK) { break }
            if candidates.reduce(0.0, { $0 + Double(probs[$1]) }) >= Double(params.topP) * total { break }
            k = min(k * 4, vocab)
        }
        // Renormalise over the top-k, then cut at top-p and renormalise again.
        var kept = candidates.map { Double(probs[$0]) }
        var keptTotal = kept.reduce(0, +)
        if params.topP < 1 {
            var cumulative = 0.0, keep = kept.count
            for (i, p) in kept.enumerated() {
                cumulative += p / keptTotal
                if cumulative >= Double(params.topP) { keep = i + 1; break }
            }
            candidates.removeSubrange(keep...)
            kept.removeSubrange(keep...)
            keptTotal = kept.reduce(0, +)
        }
        var target = u * keptTotal, pick = candidates.count - 1
        for (i, p) in kept.enumerated() {
            target -= p
            if target < 0 { pick = i; break }
        }
        let id = candidates[pick]
        return SampledToken(id: Int32(id), logprob: Float(log(kept[pick] / keptTotal)), rawLogprob: logits[id] - rawLogZ)
    }

    /// Indices of the k largest values, largest first (ties: lower index first).
    static func topIndices(_ x: UnsafePointer<Float>, _ n: Int, _ k: Int) -> [Int] {
        if k >= n { return (0..<n).sorted { x[$0] > x[$1] || (x[$0] == x[$1] && $0 < $1) } }
        // A sorted window of size k; most elements fail the first comparison.
        var top: [Int] = []
        top.reserveCapacity(k + 1)
        for i in 0..<n {
            if top.count == k, x[i] <= x[top[k - 1]] { continue }
            var lo = 0, hi = top.count
            while lo < hi { let mid = (lo + hi) / 2; if x[top[mid]] >= x[i] { lo = mid + 1 } else { hi = mid } }
            top.insert(i, at: lo)
            if top.count > k { top.removeLast() }
        }
        return top
    }
}
