#if canImport(Glibc)
import Glibc
#endif

/// The arithmetic of PPO on one response at a time, free of models: per-token rewards with the KL
/// penalty, generalised advantage estimation, whitening, the clipped surrogate and value losses.
public enum PPOMath {
    /// Per-token reward: -beta * (logp_policy - logp_reference) at every response token, plus the
    /// sequence's score at the last one.
    public static func tokenRewards(score: Float, policyLogprobs: [Float], referenceLogprobs: [Float], beta: Float) -> [Float] {
        var r = zip(policyLogprobs, referenceLogprobs).map { -beta * ($0 - $1) }
        if !r.isEmpty { r[r.count - 1] += score }
        return r
    }

    /// GAE over one response: delta_t = r_t + gamma V_{t+1} - V_t (V after the last token is 0),
    /// A_t = delta_t + gamma lambda A_{t+1}; returns are A_t + V_t.
    public static func advantages(rewards: [Float], values: [Float], gamma: Float, lambda: Float) -> (advantages: [Float], returns: [Float]) {
        precondition(rewards.count == values.count, "one value per reward")
        var adv = [Float](repeating: 0, count: rewards.count)
        var next: Float = 0, nextValue: Float = 0
        for t in stride(from: rewards.count - 1, through: 0, by: -1) {
            let delta = rewards[t] + gamma * nextValue - values[t]
            next = delta + gamma * lambda * next
            adv[t] = next
            nextValue = values[t]
        }
        return (adv, zip(adv, values).map(+))
    }

    /// (x - mean) / (std + 1e-8) over all the values given (population std).
    public static func whiten(_ x: [Float]) -> [Float] {
        if x.isEmpty { return x }
        let mean = x.reduce(0, +) / Float(x.count)
        let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(x.count)
        return x.map { ($0 - mean) / (variance.squareRoot() + 1e-8) }
    }

    /// Clipped surrogate for one token: loss = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A),
    /// ratio = exp(logp - oldLogp). Returns the loss, d loss / d logp, and whether the clip was active.
    public static func policyLoss(logp: Float, oldLogp: Float, advantage a: Float, clip eps: Float) -> (loss: Float, dLogp: Float, clipped: Bool) {
        let ratio = expf(logp - oldLogp)
        let unclipped = ratio * a, clipped = min(max(ratio, 1 - eps), 1 + eps) * a
        if unclipped <= clipped { return (-unclipped, -unclipped, false) } // d(-ratio * A)/dlogp = -ratio * A
        return (-clipped, 0, true)
    }

    /// Clipped value loss for one token: 0.5 * max((v - R)^2, (vOld + clip(v - vOld, -eps, eps) - R)^2).
    /// Returns the loss and d loss / d v.
    public static func valueLoss(value v: Float, oldValue: Float, target r: Float, clip eps: Float) -> (loss: Float, dValue: Float) {
        let vClipped = oldValue + min(max(v - oldValue, -eps), eps)
        let plain = (v - r) * (v - r), clippedLoss = (vClipped - r) * (vClipped - r)
        if plain >= clippedLoss { return (0.5 * plain, v - r) }
        // The clipped branch only moves with v inside the clip range.
        let inside = abs(v - oldValue) < eps
        return (0.5 * clippedLoss, inside ? vClipped - r : 0)
    }

    /// Approximate KL(old || new) from log-ratios: mean of (ratio - 1) - log ratio (always >= 0).
    public static func approxKL(logRatios: [Float]) -> Float {
        if logRatios.isEmpty { return 0 }
        return logRatios.reduce(0) { $0 + (expf($1) - 1 - $1) } / Float(logRatios.count)
    }

    /// 1 - Var(returns - values) / Var(returns).
    public static func explainedVariance(values: [Float], returns: [Float]) -> Float {
        func variance(_ x: [Float]) -> Float {
            let m = x.reduce(0, +) / Float(max(x.count, 1))
            return x.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Float(max(x.count, 1))
        }
        let v = variance(returns)
        return v == 0 ? 0 : 1 - variance(zip(returns, values).map(-)) / v
    }
}

/// beta for the KL penalty: fixed, or adaptive (Ziegler et al. 2019): after each iteration,
/// beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * samples / horizon.
public struct KLController: Codable, Sendable, Equatable {
    public var beta: Float
    public var target: Float?      // nil: fixed beta
    public var horizon: Float

    public init(beta: Float, target: Float? = nil, horizon: Float = 10_000) {
        self.beta = beta; self.target = target; self.horizon = horizon
    }

    public mutating func update(observedKL kl: Float, samples: Int) {
        guard let target, target > 0 else { return }
        let error = min(max(kl / target - 1, -0.2), 0.2)
        beta *= 1 + error * Float(samples) / horizon
    }
}
