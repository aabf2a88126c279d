import Engine
import Foundation

public struct PPOSettings: Sendable, Codable, Equatable {
    public enum Critic: String, Sendable, Codable { case separate, head }
    public var epochs = 2
    public var minibatchSize = 8          // samples per optimizer step
    public var clip: Float = 0.2
    public var valueClip: Float = 0.2
    public var gamma: Float = 1
    public var lambda: Float = 0.95
    public var whitenAdvantages = true
    /// Stop the update once a minibatch's approximate KL to the generating policy exceeds 1.5 x this
    /// (TRL's rule), checked after every minibatch.
    public var earlyStopKL: Float? = 0.1
    /// The rollouts' sampling temperature: every training-side pass (policy and reference) divides
    /// its logits by it, so ratios, KL and entropy are of the distribution sampled from.
    public var temperature: Float = 1
    public var critic: Critic = .separate
    /// With a value head on the policy trunk: weight of the value loss in the shared loss.
    public var valueCoefficient: Float = 0.1
    public var learningRate: Float = 1e-5
    public var criticLearningRate: Float = 1e-4
    public var seed: UInt64 = 0
    public init() {}
}

/// What one PPO update did.
public struct PPOStats: Sendable {
    public var meanReward: Float = 0
    public var meanKL: Float = 0            // per sequence: sum over response tokens of logp_policy - logp_ref
    public var beta: Float = 0
    public var policyLoss: Float = 0
    public var valueLoss: Float = 0
    public var entropy: Float = 0
    public var approxKL: Float = 0
    public var clipFraction: Float = 0
    public var explainedVariance: Float = 0
    public var epochs = 0
    public var minibatches = 0
    public var earlyStopped = false
    public var skippedSteps = 0
    /// False when the old values came with the samples, scored as they were generated.
    public var valuePass = false
    public var referenceSeconds = 0.0, valueSeconds = 0.0, updateSeconds = 0.0
}

/// PPO with a KL leash to a frozen reference. The policy trains through `Trainer` (full or LoRA);
/// the critic is either a separate model (a trunk and a scalar head) or a value head on the policy.
public final class PPOTrainer {
    public let settings: PPOSettings
    public let policy: Trainer
    /// The frozen reference on the inference engine: its log-probs do not depend on how samples are
    /// grouped, so they match those workers compute.
    public let reference: Transformer
    public var kl: KLController
    /// Separate critic: its trainer and head. Head mode: the head sits on the policy trunk.
    let criticTrainer: Trainer?
    public let valueHead: ScalarHead
    let headOptimizer: AdamW
    let headGrads: UnsafeMutableBufferPointer<Float>
    var rng: SplitMix64

    /// `criticInit`: trunk and head to start a separate critic from (a reward model's, usually).
    public init(policy: ModelWeights, lora: LoRAAdapters? = nil, reference: ModelWeights, criticInit: (ModelWeights, ScalarHead)?,
                kl: KLController, settings: PPOSettings) throws {
        self.settings = settings
        self.kl = kl
        self.policy = try Trainer(weights: policy, lora: lora, schedule: LRSchedule(peak: settings.learningRate, decay: .constant))
        self.reference = try Transformer(weights: reference)
        let width = policy.config.width
        valueHead = ScalarHead(width: width)
        if let criticInit { _ = valueHead.storage.update(from: criticInit.1.storage) }
        if settings.critic == .separate {
            criticTrainer = try Trainer(weights: (criticInit?.0 ?? policy).copy(), schedule: LRSchedule(peak: settings.criticLearningRate, decay: .constant))
        } else {
            criticTrainer = nil
        }
        headOptimizer = AdamW(count: width + 1, settings: .init(), decayRanges: [])
        headGrads = .allocate(capacity: width + 1)
        rng = SplitMix64(seed: SplitMix64.derive(settings.seed, 0x990))
    }

    deinit { headGrads.deallocate() }

    /// Steps any of the three optimizers refused for a non-finite gradient.
    var skippedSteps: Int { policy.optimizer.skippedSteps + (criticTrainer?.optimizer.skippedSteps ?? 0) + headOptimizer.skippedSteps }

    /// Per-token quantities of one sample, fixed for the whole update.
    struct Prepared {
        var sequence: TrainingSequence
        var oldLogprobs: [Float]   // at generation, per response token
        var oldValues: [Float]
        var advantages: [Float]
        var returns: [Float]
        var promptLength: Int
    }

    /// Values at the rows predicting each response token, per sample: (samples) x (response length).
    func values(_ sequences: [TrainingSequence]) throws -> [[Float]] {
        let pass = try (criticTrainer?.backprop ?? policy.backprop).forward(sequences)
        let flat = pass.scores(valueHead, rows: pass.targetRows)
        var out = sequences.map { _ in [Float]() }
        for (k, src) in pass.targetPositions.enumerated() { out[src.sequence].append(flat[k]) }
        return out
    }

    public func update(_ samples: [Sample]) throws -> PPOStats {
        var stats = PPOStats()
        guard !samples.isEmpty else { return stats }
        let sequences = samples.map { $0.trainingSequence() }
        var clock = ContinuousClock.now
        func lap() -> Double { let now = ContinuousClock.now; defer { clock = now }; return (now - clock).seconds }

        // Reference log-probs (unless the rollout source brought them) and old values.
        var reference: [[Float]] = samples.compactMap(\.referenceLogprobs)
        if reference.count != samples.count {
            reference = try ReferenceLogprobs.compute(self.reference, samples: samples, temperature: settings.temperature)
        }
        let skippedBefore = skippedSteps
        stats.referenceSeconds = lap()
        // Old values: scored as the samples were generated when the head sits on the policy trunk
        // (the rows that sampled are the rows that predict), else one pass of the critic.
        var oldValues: [[Float]] = samples.compactMap(\.values)
        if criticTrainer != nil || oldValues.count != samples.count || zip(oldValues, samples).contains(where: { $0.count != $1.response.count }) {
            oldValues = []
            stats.valuePass = true
            for start in stride(from: 0, to: sequences.count, by: settings.minibatchSize) {
                oldValues += try values(Array(sequences[start ..< min(start + settings.minibatchSize, sequences.count)]))
            }
        }
        stats.valueSeconds = lap()

        var prepared: [Prepared] = []
        var klSum: Float = 0
        for (i, s) in samples.enumerated() {
            let r = PPOMath.tokenRewards(score: s.reward, policyLogprobs: s.logprobs, referenceLogprobs: reference[i], beta: kl.beta)
            klSum += zip(s.logprobs, reference[i]).reduce(0) { $0 + $1.0 - $1.1 }
            let gae = PPOMath.advantages(rewards: r, values: oldValues[i], gamma: settings.gamma, lambda: settings.lambda)
            prepared.append(Prepared(sequence: sequences[i], oldLogprobs: s.logprobs, oldValues: oldValues[i],
                                     advantages: gae.advantages, returns: gae.returns, promptLength: s.prompt.count))
        }
        if settings.whitenAdvantages {
            let white = PPOMath.whiten(prepared.flatMap(\.advantages))
            var k = 0
            for i in prepared.indices { for t in prepared[i].advantages.indices { prepared[i].advantages[t] = white[k]; k += 1 } }
        }
        stats.meanReward = samples.reduce(0) { $0 + $1.reward } / Float(samples.count)
        stats.meanKL = klSum / Float(samples.count)
        stats.explainedVariance = PPOMath.explainedVariance(values: prepared.flatMap(\.oldValues), returns: prepared.flatMap(\.returns))

        var policyLosses: [Float] = [], valueLosses: [Float] = [], entropies: [Float] = [], logRatios: [Float] = [], clipped = 0, tokens = 0
        epochs: for epoch in 0..<settings.epochs {
            var order = Array(prepared.indices)
            order.shuffle(using: &rng)
            stats.epochs = epoch + 1
            for start in stride(from: 0, to: order.count, by: settings.minibatchSize) {
                let batch = order[start ..< min(start + settings.minibatchSize, order.count)].map { prepared[$0] }
                let m = try minibatch(batch)
                policyLosses.append(m.policyLoss); valueLosses.append(m.valueLoss); entropies += m.entropies
                logRatios += m.logRatios; clipped += m.clipped; tokens += m.logRatios.count
                stats.minibatches += 1
                if let limit = settings.earlyStopKL, PPOMath.approxKL(logRatios: m.logRatios) > 1.5 * limit {
                    stats.earlyStopped = true
                    break epochs
                }
            }
        }
        stats.updateSeconds = lap()
        stats.skippedSteps = skippedSteps - skippedBefore
        stats.policyLoss = policyLosses.reduce(0, +) / Float(max(policyLosses.count, 1))
        stats.valueLoss = valueLosses.reduce(0, +) / Float(max(valueLosses.count, 1))
        stats.entropy = entropies.reduce(0, +) / Float(max(entropies.count, 1))
        stats.approxKL = PPOMath.approxKL(logRatios: logRatios)
        stats.clipFraction = Float(clipped) / Float(max(tokens, 1))
        kl.update(observedKL: stats.meanKL, samples: samples.count)
        stats.beta = kl.beta
        return stats
    }

    struct MinibatchResult { var policyLoss: Float; var valueLoss: Float; var entropies: [Float]; var logRatios: [Float]; var clipped: Int }

    /// One policy step (and one critic step) on a minibatch; gradients are per token, averaged over its tokens.
    func minibatch(_ batch: [Prepared]) throws -> MinibatchResult {
        let seqs = batch.map(\.sequence)
        let count = batch.reduce(0) { $0 + $1.oldLogprobs.count }
        var result = MinibatchResult(policyLoss: 0, valueLoss: 0, entropies: [], logRatios: [], clipped: 0)
        headGrads.update(repeating: 0)
        let headMode = criticTrainer == nil
        _ = try policy.update(targets: count, tokens: seqs.reduce(0) { $0 + $1.tokens.count }) { () throws(EngineError) in
            let pass = try policy.backprop.forward(seqs)
            let (current, unusedGradient) = pass.languageModelLoss(grads: nil, backward: false, entropies: true, temperature: settings.temperature)
            unusedGradient.deallocate()
            var coefficients = seqs.map { [Float](repeating: 0, count: $0.tokens.count) }
            for (i, b) in batch.enumerated() {
                for t in b.oldLogprobs.indices {
                    let pos = b.promptLength + t
                    let logp = current.logprobs[i][pos]
                    let r = PPOMath.policyLoss(logp: logp, oldLogp: b.oldLogprobs[t], advantage: b.advantages[t], clip: settings.clip)
                    result.policyLoss += r.loss / Float(count)
                    result.logRatios.append(logp - b.oldLogprobs[t])
                    result.entropies.append(current.entropies[i][pos])
                    if r.clipped { result.clipped += 1 }
                    coefficients[i][pos] = -r.dLogp / Float(count) // the LM loss is sum of coef * -logp
                }
            }
            let (_, dx) = pass.languageModelLoss(grads: policy.baseGrads, coefficients: coefficients, temperature: settings.temperature)
            if headMode {
                let dValues = valueGradients(pass, batch, count, scale: settings.valueCoefficient, loss: &result.valueLoss)
                let dxValue = pass.scoreBackward(valueHead, dScores: dValues, rows: pass.targetRows, headGrads: headGrads.baseAddress!, grads: policy.baseGrads)
                VectorMath.axpy(1, dxValue, dx, pass.rowCount * policy.weights.config.width)
                dxValue.deallocate()
            }
            policy.backward(pass, dx)
            return Double(result.policyLoss)
        }
        if let critic = criticTrainer {
            _ = try critic.update(targets: count, tokens: 0) { () throws(EngineError) in
                let pass = try critic.backprop.forward(seqs)
                let dValues = valueGradients(pass, batch, count, scale: 1, loss: &result.valueLoss)
                critic.backward(pass, pass.scoreBackward(valueHead, dScores: dValues, rows: pass.targetRows,
                                                         headGrads: headGrads.baseAddress!, grads: critic.baseGrads))
                return Double(result.valueLoss)
            }
        }
        headOptimizer.update(params: valueHead.storage, grads: headGrads,
                             lr: headMode ? settings.learningRate : settings.criticLearningRate)
        return result
    }

    /// d (scale * mean clipped value loss) / d value at each target row of the pass.
    func valueGradients(_ pass: ForwardPass, _ batch: [Prepared], _ count: Int, scale: Float, loss: inout Float) -> [Float] {
        let v = pass.scores(valueHead, rows: pass.targetRows)
        var d = [Float](repeating: 0, count: v.count)
        for (k, src) in pass.targetPositions.enumerated() {
            let b = batch[src.sequence], t = src.position - b.promptLength
            let r = PPOMath.valueLoss(value: v[k], oldValue: b.oldValues[t], target: b.returns[t], clip: settings.valueClip)
            loss += r.loss / Float(count)
            d[k] = scale * r.dValue / Float(count)
        }
        return d
    }
}
