import Engine
import Foundation
import Tokenizer

/// Direct preference optimisation (Rafailov et al. 2023) on AI-labelled pairs with soft labels.
/// With the log-ratio r(y) = log pi(y | x) - log ref(y | x) summed over the response's tokens,
/// h = beta * (r(chosen) - r(rejected)) and q the label after smoothing (conservative DPO,
/// q = (1 - e) p + e (1 - p)):
///   loss = -(q log sigmoid(h) + (1 - q) log sigmoid(-h)),   d loss / d h = sigmoid(h) - q,
/// so d loss / d log pi(chosen) = beta (sigmoid(h) - q) and the rejected side has the opposite sign.
/// A label of 0.5 pulls h toward 0: no preferred side.
public enum DPOMath {
    public static func sigmoid(_ x: Float) -> Float { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }

    /// log sigmoid(x) without overflow for large |x|.
    static func logSigmoid(_ x: Double) -> Double { x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)) }

    public static func smoothed(_ p: Float, _ smoothing: Float) -> Float { (1 - smoothing) * p + smoothing * (1 - p) }

    /// The loss of one pair and its derivative by h.
    public static func loss(h: Float, label q: Float) -> (loss: Double, dh: Float) {
        let loss = -(Double(q) * logSigmoid(Double(h)) + Double(1 - q) * logSigmoid(-Double(h)))
        return (loss, sigmoid(h) - q)
    }
}

public struct DPOSettings: Sendable, Codable, Equatable {
    /// The strength of the leash to the reference: small beta lets the policy move further.
    public var beta: Float = 0.1
    /// Conservative DPO's e: the label is trusted with probability 1 - e.
    public var labelSmoothing: Float = 0
    public var epochs = 1
    public var learningRate: Float = 5e-6
    public var batchSize = 8          // pairs per optimizer step
    public var microBatchSize = 8     // pairs per forward/backward (gradient accumulation)
    public var warmupFraction: Float = 0.1
    public var seed: UInt64 = 0
    public init() {}

    public func validate() throws {
        if !(beta > 0 && beta.isFinite) { throw DataError("beta must be a positive number, found \(beta)") }
        if !(0..<0.5).contains(labelSmoothing) { throw DataError("label smoothing must be in [0, 0.5), found \(labelSmoothing)") }
        if epochs < 1 { throw DataError("epochs must be at least 1, found \(epochs)") }
        if !(learningRate > 0) { throw DataError("learning rate must be positive, found \(learningRate)") }
        if batchSize < 1 || microBatchSize < 1 { throw DataError("batch sizes must be at least 1") }
    }
}

/// One preference for DPO: the prompt with each answer as a sequence whose loss mask covers the
/// answer (and its closing <|im_end|>), and how sure the label is that `chosen` is better.
public struct DPOPair: Sendable {
    public var chosen: TrainingSequence, rejected: TrainingSequence
    public var pChosen: Float = 1
    /// log ref(answer | prompt), filled once by `DPOTrainer.scoreReference`.
    public var referenceChosen: Float = 0, referenceRejected: Float = 0

    public init(chosen: TrainingSequence, rejected: TrainingSequence, pChosen: Float = 1) {
        self.chosen = chosen; self.rejected = rejected; self.pChosen = pChosen
    }

    public struct LoadReport: Sendable {
        public var pairs: [DPOPair] = []
        /// Lines dropped because the length limit left an answer without a token.
        public var truncatedAway: [Int] = []
    }

    /// Reads a preference file in any layout PairFormat takes, with an optional "p_chosen" in [0, 1];
    /// errors name the line.
    public static func load(_ url: URL, tokenizer: BPETokenizer, maxLength: Int) throws -> LoadReport {
        var report = LoadReport()
        for (line, o) in try JSONLines.read(url.path) {
            func fail(_ s: String) -> DataError { JSONLines.error(url.path, line, s) }
            let (prompt, chosen, rejected) = try PairFormat.pair(o, fail)
            func sequence(_ answer: String) throws -> TrainingSequence {
                let messages = prompt + [ChatMessage(role: "assistant", content: answer)]
                return ChatData.cut(try ChatData.encode(messages, trained: messages.indices.map { $0 == prompt.count }, tokenizer: tokenizer,
                                                        line: line, file: url.lastPathComponent), to: maxLength)
            }
            let pair = DPOPair(chosen: try sequence(chosen), rejected: try sequence(rejected), pChosen: try PairFormat.pChosen(o, fail))
            if !pair.chosen.lossMask.contains(1) || !pair.rejected.lossMask.contains(1) { report.truncatedAway.append(line); continue }
            report.pairs.append(pair)
        }
        if report.pairs.isEmpty { throw DataError("\(url.lastPathComponent): no usable pairs") }
        return report
    }
}

/// What a DPO step (or an evaluation) saw, averaged over its pairs.
public struct DPOReport: Sendable {
    public var loss = 0.0
    /// beta * r: the implicit rewards of the chosen and rejected answers, and their difference.
    public var chosenReward = 0.0, rejectedReward = 0.0, margin = 0.0
    public var pairs = 0
    /// Pairs whose label leans one way (not 0.5), and those of them the implicit reward ranks that way.
    public var leaning = 0, rankedRight = 0
    public var accuracy: Double { leaning == 0 ? 0 : Double(rankedRight) / Double(leaning) }
    public var step: StepReport?
}

/// DPO on a policy (all weights, or LoRA adapters) against a frozen reference.
public final class DPOTrainer {
    public let settings: DPOSettings
    public let trainer: Trainer
    let reference: Backprop

    /// `reference`: the frozen model the policy is measured against (by default a copy of the
    /// starting policy; with LoRA the base without adapters is the same thing).
    public init(policy: ModelWeights, lora: LoRAAdapters? = nil, reference: ModelWeights? = nil, schedule: LRSchedule,
                settings: DPOSettings) throws {
        try settings.validate()
        self.settings = settings
        trainer = try Trainer(weights: policy, lora: lora, schedule: schedule)
        let ref = reference ?? (lora == nil ? policy.copy() : policy)
        if ref.config != policy.config { throw DataError("the reference model's shape differs from the policy's") }
        self.reference = try Backprop(weights: ref)
    }

    /// Sum over each sequence's masked tokens of log p, from a forward pass's report.
    static func sequenceLogprobs(_ report: LossReport, _ seqs: [TrainingSequence]) -> [Float] {
        zip(report.logprobs, seqs).map { lp, s in zip(lp, s.lossMask).reduce(0) { $0 + ($1.1 != 0 ? $1.0 : 0) } }
    }

    /// Fills each pair's reference log-probs, `group` pairs per pass.
    public func scoreReference(_ pairs: inout [DPOPair], group: Int = 4) throws {
        for start in stride(from: 0, to: pairs.count, by: group) {
            let range = start ..< min(start + group, pairs.count)
            let seqs = pairs[range].flatMap { [$0.chosen, $0.rejected] }
            let (report, dx) = try reference.forward(seqs).languageModelLoss(grads: nil, backward: false)
            dx.deallocate()
            let lp = Self.sequenceLogprobs(report, seqs)
            for (k, i) in range.enumerated() { pairs[i].referenceChosen = lp[2 * k]; pairs[i].referenceRejected = lp[2 * k + 1] }
        }
    }

    /// The pairs' loss and figures; with `gradient`, adds d (mean loss over `normalizer` pairs) / d
    /// weights into the trainer's gradients.
    func pass(_ pairs: ArraySlice<DPOPair>, normalizer: Int, gradient: Bool) throws(EngineError) -> DPOReport {
        let seqs = pairs.flatMap { [$0.chosen, $0.rejected] }
        let pass = try trainer.backprop.forward(seqs)
        let (current, unused) = pass.languageModelLoss(grads: nil, backward: false)
        unused.deallocate()
        let lp = Self.sequenceLogprobs(current, seqs)
        var r = DPOReport(pairs: pairs.count)
        var coefficients = seqs.map { [Float](repeating: 0, count: $0.tokens.count) }
        for (k, pair) in pairs.enumerated() {
            let chosen = settings.beta * (lp[2 * k] - pair.referenceChosen), rejected = settings.beta * (lp[2 * k + 1] - pair.referenceRejected)
            let q = DPOMath.smoothed(pair.pChosen, settings.labelSmoothing)
            let (loss, dh) = DPOMath.loss(h: chosen - rejected, label: q)
            r.loss += loss / Double(normalizer)
            r.chosenReward += Double(chosen); r.rejectedReward += Double(rejected)
            if pair.pChosen != 0.5 { r.leaning += 1; if (chosen > rejected) == (pair.pChosen > 0.5) { r.rankedRight += 1 } }
            // The LM loss is the sum of coef * -log p, so coef = -(d loss / d log p) on each answer token.
            let g = settings.beta * dh / Float(normalizer)
            for (side, sign) in [(2 * k, Float(-1)), (2 * k + 1, Float(1))] {
                for t in seqs[side].lossMask.indices where seqs[side].lossMask[t] != 0 { coefficients[side][t] = sign * g }
            }
        }
        r.chosenReward /= Double(max(pairs.count, 1)); r.rejectedReward /= Double(max(pairs.count, 1))
        r.margin = r.chosenReward - r.rejectedReward
        if gradient {
            let (_, dx) = pass.languageModelLoss(grads: trainer.baseGrads, coefficients: coefficients)
            trainer.backward(pass, dx)
        }
        return r
    }

    /// The mean loss over `pairs` and its gradient in the trainer's gradient buffer (zeroed first).
    public func gradient(_ pairs: [DPOPair]) throws -> Double {
        trainer.grads.update(repeating: 0)
        return try pass(pairs[...], normalizer: pairs.count, gradient: true).loss
    }

    /// One optimizer step on `pairs`, in micro-batches of `settings.microBatchSize`.
    public func step(_ pairs: [DPOPair]) throws -> DPOReport {
        var total = DPOReport(pairs: pairs.count)
        let tokens = pairs.reduce(0) { $0 + $1.chosen.tokens.count + $1.rejected.tokens.count }
        let report = try trainer.update(targets: pairs.count, tokens: tokens) { () throws(EngineError) in
            for start in stride(from: 0, to: pairs.count, by: settings.microBatchSize) {
                let part = pairs[start ..< min(start + settings.microBatchSize, pairs.count)]
                let r = try pass(part, normalizer: pairs.count, gradient: true)
                total.add(r, weight: Double(part.count) / Double(pairs.count))
            }
            return total.loss
        }
        total.step = report
        return total
    }

    /// The mean figures over `pairs`, weights untouched (held-out evaluation).
    public func evaluate(_ pairs: [DPOPair]) throws -> DPOReport {
        var total = DPOReport(pairs: pairs.count)
        for start in stride(from: 0, to: pairs.count, by: settings.microBatchSize) {
            let part = pairs[start ..< min(start + settings.microBatchSize, pairs.count)]
            total.add(try pass(part, normalizer: pairs.count, gradient: false), weight: Double(part.count) / Double(pairs.count))
        }
        return total
    }
}

extension DPOReport {
    /// Adds a part's figures: its loss is already normalised by the whole; the rest are its means.
    mutating func add(_ part: DPOReport, weight: Double) {
        loss += part.loss
        chosenReward += part.chosenReward * weight; rejectedReward += part.rejectedReward * weight
        margin = chosenReward - rejectedReward
        leaning += part.leaning; rankedRight += part.rankedRight
    }
}

/// Epochs of DPO steps over labelled pairs, with a held-out set: what `charter dpo` runs.
public final class DPORun: EpochRun {
    public let dpo: DPOTrainer
    public let train: [DPOPair], heldOut: [DPOPair]
    public var trainer: Trainer { dpo.trainer }
    public var batchesDone = 0
    public var stepsPerEpoch: Int { (train.count + dpo.settings.batchSize - 1) / dpo.settings.batchSize }
    public var totalSteps: Int { stepsPerEpoch * dpo.settings.epochs }

    /// Scores every pair under the reference first (the default reference is the starting policy).
    public init(policy: ModelWeights, lora: LoRAAdapters? = nil, reference: ModelWeights? = nil,
                train: [DPOPair], heldOut: [DPOPair], settings: DPOSettings) throws {
        try settings.validate()
        if train.isEmpty { throw DataError("no training pairs") }
        let total = (train.count + settings.batchSize - 1) / settings.batchSize * settings.epochs
        dpo = try DPOTrainer(policy: policy, lora: lora, reference: reference,
                             schedule: LRSchedule(peak: settings.learningRate, warmupSteps: Int(Float(total) * settings.warmupFraction),
                                                  totalSteps: total, decay: .cosine, minRatio: 0.1),
                             settings: settings)
        var train = train, heldOut = heldOut
        try dpo.scoreReference(&train)
        try dpo.scoreReference(&heldOut)
        self.train = train; self.heldOut = heldOut
    }

    static func figures(_ r: DPOReport, prefix: String = "") -> [String: Any] {
        [prefix + "loss": r.loss.isFinite ? r.loss : "nan", prefix + "accuracy": r.accuracy, prefix + "margin": r.margin,
         prefix + "chosen_reward": r.chosenReward, prefix + "rejected_reward": r.rejectedReward]
    }

    public func trainStep() throws -> (report: StepReport, figures: [String: Any], text: String) {
        let s = dpo.settings
        let pairs = SFTRun.batch(at: batchesDone, of: train.count, size: s.batchSize, seed: s.seed).map { train[$0] }
        batchesDone += 1
        let r = try dpo.step(pairs)
        return (r.step!, Self.figures(r), String(format: "loss %.4f  accuracy %.2f  margin %.3f", r.loss, r.accuracy, r.margin))
    }

    public func evaluate() throws -> (figures: [String: Any], text: String)? {
        if heldOut.isEmpty { return nil }
        let r = try dpo.evaluate(heldOut)
        return (Self.figures(r, prefix: "eval_"), String(format: "held-out loss %.4f, accuracy %.3f, margin %.3f", r.loss, r.accuracy, r.margin))
    }
}
