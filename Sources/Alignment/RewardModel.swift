import Engine
import Formats
import Foundation
import Tokenizer

/// A reward model: a Llama trunk with a scalar head read at the last token of prompt + response.
/// On disk: a Hugging Face model folder plus score_head.safetensors ("score.weight" (C),
/// "score.bias" (1)).
public final class RewardModel {
    public let model: LoadedModel
    public let head: ScalarHead

    public var weights: ModelWeights { model.weights }

    public init(model: LoadedModel, head: ScalarHead) throws {
        guard head.width == model.config.width else { throw DataError("score head width \(head.width) does not match the model's \(model.config.width)") }
        self.model = model; self.head = head
    }

    /// A new reward model from a policy checkpoint: the policy's trunk (copied) and a small random head.
    public static func initialize(from policy: LoadedModel, seed: UInt64) throws -> RewardModel {
        return try RewardModel(model: LoadedModel(weights: policy.weights.copy(), tokenizer: policy.tokenizer, source: policy.source, chatTemplate: policy.chatTemplate),
                               head: .random(width: policy.config.width, seed: seed, std: 1 / Float(policy.config.width).squareRoot()))
    }

    public static func load(_ folder: String) throws -> RewardModel {
        let model = try ModelLoader.load(folder)
        return try RewardModel(model: model, head: try head(of: folder, width: model.config.width))
    }

    /// The score head saved in `folder`.
    public static func head(of folder: String, width: Int) throws -> ScalarHead {
        let file = try SafetensorsFile(url: URL(fileURLWithPath: folder).appendingPathComponent("score_head.safetensors"))
        let head = ScalarHead(width: width)
        guard let w = file.floats("score.weight"), w.count == head.width, let b = file.floats("score.bias"), b.count == 1 else {
            throw FormatError("\(folder)/score_head.safetensors: needs score.weight (\(head.width)) and score.bias (1)")
        }
        for i in 0..<head.width { head.storage[i] = w[i] }
        head.storage[head.width] = b[0]
        return head
    }

    public func save(_ folder: String) throws {
        let url = URL(fileURLWithPath: folder)
        try Checkpoint.saveModel(model, to: url)
        try headFile().write(to: url.appendingPathComponent("score_head.safetensors"))
    }

    /// score_head.safetensors: "score.weight" (C) and "score.bias" (1).
    public func headFile() throws -> Data {
        let w = UnsafeBufferPointer(start: head.storage.baseAddress, count: head.width)
        let b = UnsafeBufferPointer(start: head.storage.baseAddress! + head.width, count: 1)
        return try SafetensorsFile.encode([("score.weight", [head.width], w), ("score.bias", [1], b)])
    }

    /// Tokens of a user prompt and an assistant response, closed by <|im_end|>, as the policy sees them.
    public func tokens(prompt: String, response: String) throws -> [Int32] {
        try tokens(conversation: [ChatMessage(role: "user", content: prompt)], response: response)
    }

    /// Tokens of a conversation and the assistant's answer to it, closed by <|im_end|>.
    public func tokens(conversation: [ChatMessage], response: String) throws -> [Int32] {
        try model.tokenizer.encode(ChatTemplate.render(conversation) + response + "<|im_end|>")
    }

    /// Scores at the last token of each sequence, `batchSize` sequences per pass of the inference
    /// engine, whose kernels are batch invariant: a sequence's score does not depend on the others.
    public func scores(_ sequences: [[Int32]], batchSize: Int = 16) throws -> [Float] {
        let engine = try Transformer(weights: model.weights)
        var out: [Float] = []
        for start in stride(from: 0, to: sequences.count, by: batchSize) {
            let part = sequences[start ..< min(start + batchSize, sequences.count)]
            let hidden = try engine.forward(part.map { (cache: engine.makeCache(capacity: $0.count), tokens: $0) }, outputs: .lastHidden)
            out += hidden.withUnsafeBufferPointer { head.forward($0.baseAddress!, rows: part.count) }
        }
        return out
    }
}

/// One preference: which of two responses to a prompt is better, by how much, how sure.
public struct PreferencePair: Sendable {
    public var chosen: [Int32], rejected: [Int32]
    /// Llama 2's margin: the chosen score should exceed the rejected one by at least this.
    public var margin: Float = 0
    /// Probability that `chosen` is the better one (1 for a hard label; an AI labeler's soft label otherwise).
    public var pChosen: Float = 1

    public init(chosen: [Int32], rejected: [Int32], margin: Float = 0, pChosen: Float = 1) {
        self.chosen = chosen; self.rejected = rejected; self.margin = margin; self.pChosen = pChosen
    }

    /// Reads `{"prompt", "chosen", "rejected", "margin"?, "p_chosen"?}` per line, in any layout of
    /// PairFormat; errors name the line.
    public static func load(_ url: URL, rm: RewardModel, maxLength: Int) throws -> [PreferencePair] {
        var pairs: [PreferencePair] = []
        for (line, o) in try JSONLines.read(url.path) {
            func fail(_ s: String) -> DataError { JSONLines.error(url.path, line, s) }
            let (prompt, chosen, rejected) = try PairFormat.pair(o, fail)
            var pair = PreferencePair(chosen: [], rejected: [])
            if let m = o["margin"] { guard let m = (m as? NSNumber)?.floatValue else { throw fail("\"margin\" must be a number") }; pair.margin = m }
            pair.pChosen = try PairFormat.pChosen(o, fail)
            do {
                pair.chosen = Array(try rm.tokens(conversation: prompt, response: chosen).prefix(maxLength))
                pair.rejected = Array(try rm.tokens(conversation: prompt, response: rejected).prefix(maxLength))
            } catch { throw fail("\(error)") }
            pairs.append(pair)
        }
        if pairs.isEmpty { throw DataError("\(url.lastPathComponent): no pairs") }
        return pairs
    }
}

/// Bradley-Terry training of a reward model: with d = score(chosen) - score(rejected) - margin,
/// loss = -(p log sigmoid(d) + (1 - p) log sigmoid(-d)), so dloss/dd = sigmoid(d) - p. A hard label
/// (p = 1) is Llama 2's -log sigmoid(d - m); p = 0.5 pulls d toward 0 and has no preferred side.
public final class RewardModelTrainer {
    public let rm: RewardModel
    public let trunk: Trainer
    public let headOptimizer: AdamW
    let headGrads: UnsafeMutableBufferPointer<Float>

    public struct Evaluation: Sendable {
        public var loss: Double
        public var accuracy: Double          // share of pairs ranked the way the label leans (ties in the label skipped)
        public var calibrationError: Double  // expected calibration error of sigmoid(d) against p, 10 bins
        public var pairs: Int
    }

    /// `lora`: train adapters on the trunk (and the head) instead of every trunk weight.
    public init(rm: RewardModel, lora: LoRAAdapters? = nil, schedule: LRSchedule, settings: AdamW.Settings = .init()) throws {
        self.rm = rm
        trunk = try Trainer(weights: rm.weights, lora: lora, schedule: schedule, settings: settings)
        headOptimizer = AdamW(count: rm.head.width + 1, settings: settings, decayRanges: [])
        headGrads = .allocate(capacity: rm.head.width + 1)
    }

    deinit { headGrads.deallocate() }

    /// The head's AdamW moments and step, for a checkpoint beside the trunk's optimizer state.
    public func headOptimizerFile() throws -> Data {
        try [Float(headOptimizer.step)].withUnsafeBufferPointer { step in
            try SafetensorsFile.encode([("adam.m", [headOptimizer.m.count], UnsafeBufferPointer(headOptimizer.m)),
                                        ("adam.v", [headOptimizer.v.count], UnsafeBufferPointer(headOptimizer.v)), ("adam.step", [1], step)])
        }
    }

    public func restoreHeadOptimizer(from url: URL) throws {
        let file = try SafetensorsFile(url: url)
        for (name, buffer) in [("adam.m", headOptimizer.m), ("adam.v", headOptimizer.v)] {
            guard let t = file.tensors[name], t.count == buffer.count else { throw FormatError("\(url.lastPathComponent): \(name) is missing or has the wrong size") }
            file.read(t, into: buffer.baseAddress!)
        }
        guard let step = file.floats("adam.step")?.first, (0...1e9).contains(step), step == step.rounded() else {
            throw FormatError("\(url.lastPathComponent): adam.step is missing or not a step count")
        }
        headOptimizer.step = Int(step)
    }

    static func sigmoid(_ x: Float) -> Float { 1 / (1 + VectorMath.exp(-x)) }

    /// One optimizer step on a batch of pairs, `microBatch` pairs per forward and backward pass
    /// (gradients add up to the whole batch's); returns the mean loss and the step's learning rate.
    @discardableResult
    public func step(_ pairs: [PreferencePair], microBatch: Int? = nil) throws -> (loss: Double, learningRate: Float) {
        headGrads.update(repeating: 0)
        let n = pairs.count, size = max(1, microBatch ?? n)
        let report = try trunk.update(targets: n, tokens: pairs.reduce(0) { $0 + $1.chosen.count + $1.rejected.count }) { () throws(EngineError) in
            var loss = 0.0
            for start in stride(from: 0, to: n, by: size) {
                let part = pairs[start ..< min(start + size, n)], m = part.count
                let pass = try trunk.backprop.forward((part.map(\.chosen) + part.map(\.rejected)).map {
                    TrainingSequence(tokens: $0, lossMask: [Float](repeating: 0, count: $0.count))
                })
                let s = pass.scores(rm.head)
                var dScores = [Float](repeating: 0, count: 2 * m)
                for (i, pair) in part.enumerated() {
                    let d = s[i] - s[m + i] - pair.margin, sig = Self.sigmoid(d), p = pair.pChosen
                    loss -= Double(p * logf(max(sig, 1e-30)) + (1 - p) * logf(max(1 - sig, 1e-30)))
                    dScores[i] = (sig - p) / Float(n) // over the whole batch, not the micro-batch
                    dScores[m + i] = -(sig - p) / Float(n)
                }
                trunk.backward(pass, pass.scoreBackward(rm.head, dScores: dScores, headGrads: headGrads.baseAddress!, grads: trunk.baseGrads))
            }
            return loss / Double(n)
        }
        headOptimizer.update(params: rm.head.storage, grads: headGrads, lr: report.learningRate)
        return (report.loss, report.learningRate)
    }

    /// The reward model as trained so far: with adapters, merged into a copy of the trunk.
    public func current() throws -> RewardModel {
        guard let lora = trunk.lora else { return rm }
        let m = rm.model
        return try RewardModel(model: LoadedModel(weights: lora.merged(with: m.weights), tokenizer: m.tokenizer, source: m.source, chatTemplate: m.chatTemplate),
                               head: rm.head)
    }

    public func evaluate(_ pairs: [PreferencePair]) throws -> Evaluation {
        let rm = try current()
        let chosen = try rm.scores(pairs.map(\.chosen)), rejected = try rm.scores(pairs.map(\.rejected))
        var loss = 0.0, correct = 0, decided = 0
        var bins = [(predicted: Double, observed: Double, count: Int)](repeating: (0, 0, 0), count: 10)
        for (i, pair) in pairs.enumerated() {
            let d = chosen[i] - rejected[i] - pair.margin, sig = Self.sigmoid(d), p = pair.pChosen
            loss -= Double(p * logf(max(sig, 1e-30)) + (1 - p) * logf(max(1 - sig, 1e-30)))
            // Accuracy is the ranking alone: the margin shapes the loss, not which response wins.
            if p != 0.5 { decided += 1; if (chosen[i] > rejected[i]) == (p > 0.5) { correct += 1 } }
            let b = min(Int(Double(Self.sigmoid(chosen[i] - rejected[i])) * 10), 9)
            bins[b].predicted += Double(Self.sigmoid(chosen[i] - rejected[i])); bins[b].observed += Double(p); bins[b].count += 1
        }
        let ece = bins.reduce(0.0) { $0 + ($1.count == 0 ? 0 : abs($1.predicted - $1.observed) / Double(pairs.count)) }
        return Evaluation(loss: loss / Double(max(pairs.count, 1)), accuracy: Double(correct) / Double(max(decided, 1)),
                          calibrationError: ece, pairs: pairs.count)
    }
}
