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
        let invT = 1 / params.temperature
        let u = rng.nextUniform()

        if params.topK == 0 && params.topP >= 1 {
            // Full distribution: one pass for the normaliser, one for the draw.
            let m = VectorMath.max(logits, vocab)
            let logZ = logSumExpScaled(logits, vocab, invT, m)
            var target = u, choice = vocab - 1
            for i in 0..<vocab {
                target -= Double(libmExpf((logits[i] - m) * invT - logZ))
                if target < 0 { choice = i; break }
            }
            return SampledToken(id: Int32(choice), logprob: (logits[choice] - m) * invT - logZ,
                                rawLogprob: logits[choice] - rawLogZ)
        }

        // Truncated: grow a candidate set of the highest logits until it holds the top-k, or enough
        // mass for top-p, so the whole vocabulary is sorted only in the worst case.
        let m = VectorMath.max(logits, vocab)
        let fullLogZ = logSumExpScaled(logits, vocab, invT, m)
        var k = params.topK > 0 ? min(params.topK, vocab) : min(64, vocab)
        var candidates: [Int]
        while true {
            candidates = topIndices(logits, vocab, k)
            if params.topP >= 1 || k == vocab { break }
            var mass = 0.0
            for c in candidates { mass += Double(libmExpf((logits[c] - m) * invT - fullLogZ)) }
            if mass >= Double(params.topP) || (params.topK > 0 && k == params.topK) { break }
            k = min(k * 4, params.topK > 0 ? params.topK : vocab)
        }
        // Probabilities renormalised over the top-k, then cut at top-p and renormalised again.
        var probs = candidates.map { Double(libmExpf((logits[$0] - m) * invT)) }
        var total = probs.reduce(0, +)
        if params.topP < 1 {
            var cumulative = 0.0, keep = probs.count
            for (i, p) in probs.enumerated() {
                cumulative += p / total
                if cumulative >= Double(params.topP) { keep = i + 1; break }
            }
            candidates.removeSubrange(keep...)
            probs.removeSubrange(keep...)
            total = probs.reduce(0, +)
        }
        var target = u * total, pick = candidates.count - 1
        for (i, p) in probs.enumerated() {
            target -= p
            if target < 0 { pick = i; break }
        }
        let id = candidates[pick]
        return SampledToken(id: Int32(id), logprob: Float(log(probs[pick] / total)), rawLogprob: logits[id] - rawLogZ)
    }

    /// log(sum(exp((x - m) / T))) with m the max of x.
    static func logSumExpScaled(_ x: UnsafePointer<Float>, _ n: Int, _ invT: Float, _ m: Float) -> Float {
        var s = 0.0
        for i in 0..<n { s += Double(libmExpf((x[i] - m) * invT)) }
        return Float(log(s))
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

@inline(__always) func libmExpf(_ x: Float) -> Float { expf(x) }
