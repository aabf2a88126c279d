/// What one optimizer step did.
public struct StepReport: Sendable {
    public var step: Int          // 1-based count of updates so far
    public var loss: Double       // mean over the step's targets
    public var gradNorm: Float    // before clipping
    public var learningRate: Float
    public var targets: Int
    public var tokens: Int
}

/// Full fine-tuning: gradients accumulated over micro-batches, clipped, AdamW, scheduled rate.
public final class Trainer {
    public let weights: ModelWeights
    public let grads: ModelWeights
    public let backprop: Backprop
    public let optimizer: AdamW
    public var schedule: LRSchedule

    public init(weights: ModelWeights, schedule: LRSchedule, settings: AdamW.Settings = .init()) throws(EngineError) {
        self.weights = weights
        grads = ModelWeights(config: weights.config)
        backprop = try Backprop(weights: weights)
        optimizer = AdamW(count: weights.layout.totalCount, settings: settings, decayRanges: AdamW.matrixRanges(weights.layout))
        self.schedule = schedule
    }

    /// One update from the sum of the micro-batches' gradients; the loss is normalised by the
    /// targets of all micro-batches together, so the update equals one big batch's.
    public func step(_ microBatches: [[TrainingSequence]]) throws(EngineError) -> StepReport {
        let targets = microBatches.joined().reduce(0) { $0 + $1.lossMask.filter { $0 != 0 }.count }
        if targets == 0 { throw .invalidInput("the step's batch has no target tokens") }
        grads.storage.update(repeating: 0)
        var loss = 0.0
        for batch in microBatches where !batch.isEmpty {
            loss += try backprop.lossAndGradients(batch, grads: grads, normalizer: Double(targets)).loss
        }
        let lr = schedule.rate(at: optimizer.step)
        let norm = optimizer.update(params: weights.storage, grads: grads.storage, lr: lr)
        return StepReport(step: optimizer.step, loss: loss, gradNorm: norm, learningRate: lr, targets: targets,
                          tokens: microBatches.joined().reduce(0) { $0 + $1.tokens.count })
    }

    /// Mean loss over the targets of `batch`, without touching the weights (held-out evaluation).
    public func evaluate(_ batch: [TrainingSequence]) throws(EngineError) -> Double {
        let (report, dx) = try backprop.forward(batch).languageModelLoss(grads: nil)
        dx.deallocate()
        return report.loss
    }
}
