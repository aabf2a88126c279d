import Engine

/// The learning step of an RL iteration (PPO, rejection sampling) and what a checkpoint needs of
/// it. The run loop and the checkpoint speak only to this; each algorithm says how it fits.
public protocol RLLearner: AnyObject {
    /// The weights being trained (with `lora`, the frozen base).
    var weights: ModelWeights { get }
    var lora: LoRAAdapters? { get }
    /// The policy's peak learning rate, for the metrics.
    var learningRate: Float { get }
    /// A value head on the policy's own trunk, which can score the rows that generate (nil by default).
    var generatingValueHead: ScalarHead? { get }
    /// One update on an iteration's scored samples; the learner's figures go into `metrics`.
    func learn(from samples: [Sample], into metrics: inout IterationMetrics) throws
    /// Every buffer that training changes, by name, each with the optimizer that trains it.
    var trained: [(name: String, values: UnsafeMutableBufferPointer<Float>, optimizer: AdamW)] { get }
    /// The rest of the learner's state at an iteration boundary.
    var state: LearnerState { get }
    func restore(_ state: LearnerState)
}

/// A learner's state beyond its buffers: the KL controller's beta (PPO) and the shuffling RNG.
public struct LearnerState: Codable, Equatable, Sendable {
    public var beta: Float?
    public var rng: UInt64
}

extension RLLearner {
    /// The policy that generates: the weights with any LoRA adapters merged in.
    public var generatingPolicy: ModelWeights { lora?.merged(with: weights) ?? weights }
    public var generatingValueHead: ScalarHead? { nil }
}

extension PPOTrainer: RLLearner {
    public var weights: ModelWeights { policy.weights }
    public var lora: LoRAAdapters? { policy.lora }
    public var learningRate: Float { settings.learningRate }
    public var generatingValueHead: ScalarHead? { settings.critic == .head ? valueHead : nil }

    public func learn(from samples: [Sample], into m: inout IterationMetrics) throws {
        let s = try update(samples)
        m.kl = s.meanKL; m.beta = s.beta; m.policyLoss = s.policyLoss; m.valueLoss = s.valueLoss; m.entropy = s.entropy
        m.approxKL = s.approxKL; m.clipFraction = s.clipFraction; m.explainedVariance = s.explainedVariance
        m.ppoEpochs = s.epochs; m.ppoMinibatches = s.minibatches; m.earlyStopped = s.earlyStopped; m.skippedSteps = s.skippedSteps
        m.valuePass = s.valuePass
        m.referenceSeconds = s.referenceSeconds; m.valueSeconds = s.valueSeconds; m.updateSeconds = s.updateSeconds
    }

    public var trained: [(name: String, values: UnsafeMutableBufferPointer<Float>, optimizer: AdamW)] {
        var t = [(name: "policy", values: policy.trainable, optimizer: policy.optimizer),
                 (name: "value_head", values: valueHead.storage, optimizer: headOptimizer)]
        if let c = criticTrainer { t.append((name: "critic", values: c.trainable, optimizer: c.optimizer)) }
        return t
    }

    public var state: LearnerState { LearnerState(beta: kl.beta, rng: rng.state) }

    public func restore(_ state: LearnerState) {
        if let beta = state.beta { kl.beta = beta }
        rng.state = state.rng
    }
}

extension RejectionSampler: RLLearner {
    public var weights: ModelWeights { trainer.weights }
    public var lora: LoRAAdapters? { trainer.lora }
    public var learningRate: Float { settings.learningRate }

    public func learn(from samples: [Sample], into m: inout IterationMetrics) throws {
        let s = try update(samples)
        m.kept = s.kept; m.updateSeconds = s.updateSeconds; m.skippedSteps = s.skippedSteps
    }

    public var trained: [(name: String, values: UnsafeMutableBufferPointer<Float>, optimizer: AdamW)] {
        [(name: "policy", values: trainer.trainable, optimizer: trainer.optimizer)]
    }

    public var state: LearnerState { LearnerState(beta: nil, rng: rng.state) }

    public func restore(_ state: LearnerState) { rng.state = state.rng }
}
