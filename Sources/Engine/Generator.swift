/// One sequence to continue.
public struct GenerationRequest: Sendable {
    public var prompt: [Int32]
    public var params: SamplingParams

    public init(prompt: [Int32], params: SamplingParams) {
        self.prompt = prompt; self.params = params
    }
}

public enum FinishReason: String, Sendable, Codable { case stop, length }

/// A finished continuation: its tokens (a stop token included, as the last one) and, per token,
/// the log-probability under the sampling distribution and under the raw model.
public struct GenerationResult: Sendable, Equatable {
    public var tokens: [Int32] = []
    public var logprobs: [Float] = []
    public var rawLogprobs: [Float] = []
    public var finishReason: FinishReason = .length
}

/// Where the time of one `generate` call went.
public struct GenerationStats: Sendable {
    public var prefillTokens = 0, prefillSeconds = 0.0
    public var decodeTokens = 0, decodeSeconds = 0.0
    public init() {}
}

/// Batched generation: a prefill pass per prompt, then decode steps over the sequences still
/// running; a finished sequence leaves the batch at once. Prompts are prefilled one per pass so no
/// pass is long (a worker heartbeats between passes); a row's logits do not depend on the other
/// rows of a pass, so this gives the same bits as one pass over all of them.
public struct Generator {
    public let model: Transformer

    public init(model: Transformer) { self.model = model }

    /// `onToken(requestIndex, token)` is called as each token is chosen, in request order per step;
    /// `between` after every forward pass.
    public func generate(_ requests: [GenerationRequest], onToken: ((Int, SampledToken) -> Void)? = nil,
                         between: () -> Void = {}) throws(EngineError) -> [GenerationResult] {
        var stats = GenerationStats()
        return try generate(requests, stats: &stats, onToken: onToken, between: between)
    }

    public func generate(_ requests: [GenerationRequest], stats: inout GenerationStats, onToken: ((Int, SampledToken) -> Void)? = nil,
                         between: () -> Void = {}) throws(EngineError) -> [GenerationResult] {
        let V = model.config.vocab
        for (i, r) in requests.enumerated() {
            try r.params.validate()
            if r.prompt.isEmpty { throw .invalidInput("request \(i) has an empty prompt") }
            if r.prompt.count >= model.config.contextLength {
                throw .invalidInput("request \(i): prompt of \(r.prompt.count) tokens does not fit the context of \(model.config.contextLength)")
            }
        }
        var results = [GenerationResult](repeating: GenerationResult(), count: requests.count)
        var rngs = requests.map { SplitMix64(seed: $0.params.seed) }
        let caches = requests.map { model.makeCache(capacity: $0.prompt.count + $0.params.maxNewTokens) }
        var active = requests.indices.filter { requests[$0].params.maxNewTokens > 0 }
        var next: [Int: Int32] = [:]

        var step = active.map { (cache: caches[$0], tokens: requests[$0].prompt) }
        var prefill = true
        while !active.isEmpty {
            let started = ContinuousClock.now
            var logits: [Float] = []
            if prefill {
                logits.reserveCapacity(step.count * V)
                for s in step {
                    logits += try model.forward([s], outputs: .lastPerSequence)
                    between()
                }
            } else {
                logits = try model.forward(step, outputs: .lastPerSequence)
                between()
            }
            var still: [Int] = []
            logits.withUnsafeBufferPointer { buf in
                for (row, i) in active.enumerated() {
                    let p = requests[i].params
                    let t = Sampler.sample(logits: buf.baseAddress! + row * V, vocab: V, params: p, rng: &rngs[i])
                    results[i].tokens.append(t.id)
                    results[i].logprobs.append(t.logprob)
                    results[i].rawLogprobs.append(t.rawLogprob)
                    onToken?(i, t)
                    if p.stopTokens.contains(t.id) {
                        results[i].finishReason = .stop
                    } else if results[i].tokens.count >= p.maxNewTokens || requests[i].prompt.count + results[i].tokens.count >= model.config.contextLength {
                        // prompt + response fills the context: a training pass over it still fits.
                        results[i].finishReason = .length
                    } else {
                        still.append(i)
                        next[i] = t.id
                    }
                }
            }
            let seconds = (ContinuousClock.now - started).seconds
            if prefill {
                stats.prefillTokens += step.reduce(0) { $0 + $1.tokens.count }; stats.prefillSeconds += seconds
            } else {
                stats.decodeTokens += step.count; stats.decodeSeconds += seconds
            }
            prefill = false
            active = still
            step = active.map { (cache: caches[$0], tokens: [next[$0]!]) }
        }
        return results
    }
}

extension Duration {
    /// This duration in seconds as a Double.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
