/// What one optimizer step did.
public struct StepReport: Sendable {
    public var step: Int          // 1-based count of updates so far
    public var loss: Double       // mean over the step's targets
    public var gradNorm: Float    // before clipping
    public var learningRate: Float
    public var targets: Int
    public var tokens: Int
    /// The gradient norm was not finite, so nothing was updated.
    public var skipped: Bool { !gradNorm.isFinite }
}

/// Fine-tuning: gradients accumulated over micro-batches, clipped, AdamW, scheduled rate. Either
/// every parameter trains, or (with `lora`) only the adapters while the base stays frozen.
public final class Trainer {
    public let weights: ModelWeights
    public let lora: LoRAAdapters?
    /// The base model's gradients; nil when only adapters train.
    public let baseGrads: ModelWeights?
    /// The trained buffer's gradients: the base's or the adapters'.
    public let grads: UnsafeMutableBufferPointer<Float>
    public let backprop: Backprop
    public let optimizer: AdamW
    public var schedule: LRSchedule

    public init(weights: ModelWeights, lora: LoRAAdapters? = nil, schedule: LRSchedule, settings: AdamW.Settings = .init()) throws(EngineError) {
        self.weights = weights
        self.lora = lora
        backprop = try Backprop(weights: weights)
        backprop.lora = lora
        if let lora {
            if lora.model != weights.config { throw .invalidConfig("the adapters were made for another model shape") }
            baseGrads = nil
            grads = .allocate(capacity: lora.count)
            optimizer = AdamW(count: lora.count, settings: settings, decayRanges: [0..<lora.count])
        } else {
            let g = ModelWeights(config: weights.config)
            baseGrads = g
            grads = g.storage
            optimizer = AdamW(count: weights.layout.totalCount, settings: settings, decayRanges: AdamW.matrixRanges(weights.layout))
        }
        self.schedule = schedule
    }

    deinit { if lora != nil { grads.deallocate() } }

    /// The buffer the optimizer updates.
    public var trainable: UnsafeMutableBufferPointer<Float> { lora?.storage ?? weights.storage }

    /// One update from the sum of the micro-batches' gradients; the loss is normalised by the
    /// targets of all micro-batches together, so the update equals one big batch's.
    public func step(_ microBatches: [[TrainingSequence]]) throws(EngineError) -> StepReport {
        let targets = microBatches.joined().reduce(0) { $0 + $1.lossMask.filter { $0 != 0 }.count }
        if targets == 0 { throw .invalidInput("the step's batch has no target tokens") }
        var loss = 0.0
        return try update(targets: targets, tokens: microBatches.joined().reduce(0) { $0 + $1.tokens.count }) { () throws(EngineError) in
            for batch in microBatches where !batch.isEmpty {
                let pass = try backprop.forward(batch, normalizer: Double(targets))
                let (report, dx) = pass.languageModelLoss(grads: baseGrads)
                backward(pass, dx)
                loss += report.loss
            }
            return loss
        }
    }

    /// One optimizer step around a custom loss: zeroes the gradients, lets `accumulate` add its
    /// gradients (through `backward`) and return its loss, then clips and applies AdamW.
    public func update(targets: Int, tokens: Int, _ accumulate: () throws(EngineError) -> Double) throws(EngineError) -> StepReport {
        grads.update(repeating: 0)
        let loss = try accumulate()
        let lr = schedule.rate(at: optimizer.step)
        let norm = optimizer.update(params: trainable, grads: grads, lr: lr)
        return StepReport(step: optimizer.step, loss: loss, gradNorm: norm, learningRate: lr, targets: targets, tokens: tokens)
    }

    /// Backward from d loss / d final hidden into whichever buffer trains; deallocates dx.
    public func backward(_ pass: ForwardPass, _ dx: UnsafeMutablePointer<Float>) {
        pass.backward(dx, grads: baseGrads, loraGrads: lora == nil ? nil : grads.baseAddress!)
        dx.deallocate()
    }

    /// Mean loss over the targets of `batch`, without touching the weights (held-out evaluation).
    public func evaluate(_ batch: [TrainingSequence]) throws(EngineError) -> Double {
        let (report, dx) = try backprop.forward(batch).languageModelLoss(grads: nil, backward: false)
        dx.deallocate()
        return report.loss
    }
}
