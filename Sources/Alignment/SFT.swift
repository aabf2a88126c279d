import Engine

/// Supervised fine-tuning: epochs of shuffled batches through a `Trainer`, with a held-out loss.
/// The order of examples in epoch e depends only on (seed, e), so a run resumed at step k sees the
/// same batches as an uninterrupted one.
public struct SFTSettings: Sendable, Codable, Equatable {
    public var epochs = 1
    public var learningRate: Float = 1e-4
    public var batchSize = 8          // sequences per optimizer step
    public var microBatchSize = 8     // sequences per forward/backward (gradient accumulation)
    public var warmupFraction: Float = 0.05
    public var weightDecay: Float = 0
    public var clipNorm: Float? = 1
    public var seed: UInt64 = 0
    public init() {}

    public func validate() throws {
        if epochs < 1 { throw DataError("epochs must be at least 1, found \(epochs)") }
        if !(learningRate > 0) { throw DataError("learning rate must be positive, found \(learningRate)") }
        if batchSize < 1 || microBatchSize < 1 { throw DataError("batch sizes must be at least 1") }
        if !(0...1).contains(warmupFraction) { throw DataError("warm-up fraction must be in [0, 1], found \(warmupFraction)") }
    }
}

public final class SFTRun {
    public let trainer: Trainer
    public let settings: SFTSettings
    public let train: [TrainingSequence]
    public let heldOut: [TrainingSequence]
    public var stepsPerEpoch: Int { (train.count + settings.batchSize - 1) / settings.batchSize }
    public var totalSteps: Int { stepsPerEpoch * settings.epochs }

    public init(weights: ModelWeights, lora: LoRAAdapters? = nil, train: [TrainingSequence], heldOut: [TrainingSequence], settings: SFTSettings) throws {
        try settings.validate()
        if train.isEmpty { throw DataError("no training examples") }
        self.train = train; self.heldOut = heldOut; self.settings = settings
        let total = (train.count + settings.batchSize - 1) / settings.batchSize * settings.epochs
        trainer = try Trainer(
            weights: weights, lora: lora,
            schedule: LRSchedule(peak: settings.learningRate, warmupSteps: Int(Float(total) * settings.warmupFraction),
                                 totalSteps: total, decay: .cosine, minRatio: 0.1),
            settings: AdamW.Settings(weightDecay: settings.weightDecay, clipNorm: settings.clipNorm))
    }

    /// Splits examples into training and held-out sets: a seeded shuffle, the first `fraction` held out.
    public static func split<T>(_ items: [T], heldOutFraction: Double, seed: UInt64) -> (train: [T], heldOut: [T]) {
        var order = Array(items.indices)
        var rng = SplitMix64(seed: SplitMix64.derive(seed, 0x5EED))
        order.shuffle(using: &rng)
        let k = items.count < 2 ? 0 : min(max(1, Int((Double(items.count) * heldOutFraction).rounded())), items.count - 1)
        return (order[k...].map { items[$0] }, order[..<k].map { items[$0] })
    }

    /// Example indices of 0-based global step `step`.
    public func batch(at step: Int) -> [Int] { Self.batch(at: step, of: train.count, size: settings.batchSize, seed: settings.seed) }

    /// Indices of step `step`'s batch of `size` among `count` examples: epoch e is a shuffle
    /// seeded by (seed, e), so a run resumed at any step sees the batches the whole run would.
    public static func batch(at step: Int, of count: Int, size: Int, seed: UInt64) -> [Int] {
        let stepsPerEpoch = (count + size - 1) / size
        let epoch = step / stepsPerEpoch, within = step % stepsPerEpoch
        var order = Array(0..<count)
        var rng = SplitMix64(seed: SplitMix64.derive(seed, UInt64(epoch)))
        order.shuffle(using: &rng)
        return Array(order[within * size ..< min((within + 1) * size, count)])
    }

    /// Batches trained on so far; ahead of the optimizer's step count by the steps it skipped (a
    /// non-finite gradient), so a bad batch is passed over, not retried forever.
    public var batchesDone = 0

    /// Trains on the next batch.
    public func step() throws -> StepReport {
        let indices = batch(at: batchesDone)
        batchesDone += 1
        let micro = stride(from: 0, to: indices.count, by: settings.microBatchSize).map {
            indices[$0 ..< min($0 + settings.microBatchSize, indices.count)].map { train[$0] }
        }
        return try trainer.step(micro)
    }

    /// Mean loss on the held-out set, in micro-batches; nil without a held-out set.
    public func heldOutLoss() throws -> Double? {
        if heldOut.isEmpty { return nil }
        let targets = heldOut.reduce(0) { $0 + $1.lossMask.filter { $0 != 0 }.count }
        var total = 0.0
        for start in stride(from: 0, to: heldOut.count, by: settings.microBatchSize) {
            let part = Array(heldOut[start ..< min(start + settings.microBatchSize, heldOut.count)])
            let count = part.reduce(0) { $0 + $1.lossMask.filter { $0 != 0 }.count }
            total += try trainer.evaluate(part) * Double(count)
        }
        return total / Double(max(targets, 1))
    }
}

extension SFTRun: EpochRun {
    public func trainStep() throws -> (report: StepReport, figures: [String: Any], text: String) {
        let r = try step()
        return (r, ["loss": r.loss.isFinite ? r.loss : "nan"], String(format: "loss %.4f", r.loss))
    }

    public func evaluate() throws -> (figures: [String: Any], text: String)? {
        try heldOutLoss().map { (["eval_loss": $0], String(format: "held-out loss %.4f", $0)) }
    }
}
