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
/// the log-probability under the sampling distribution and under the raw model, and (with a value
/// head) the head's score of the hidden state that predicted the token.
public struct GenerationResult: Sendable, Equatable {
    public var tokens: [Int32] = []
    public var logprobs: [Float] = []
    public var rawLogprobs: [Float] = []
    public var values: [Float] = []
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
    /// `between` after every forward pass. With `caches`, request i continues the sequence its
    /// cache holds: its prompt is the tokens that come after it. A finished sequence's last token
    /// is not fed to its cache.
    /// `valueHead`: a scalar head on this model's trunk (PPO's value head) that scores every row
    /// that samples a token, into the results' `values`.
    /// A server's hooks: `onLogits(requestIndex, row)` sees each row of logits before its token is
    /// chosen (the top log-probs an API returns); `ended(requestIndex)`, asked after `onToken`,
    /// ends a sequence early (a stop string in its text), as a stop token would.
    public func generate(_ requests: [GenerationRequest], caches: [SequenceCache]? = nil, valueHead: ScalarHead? = nil,
                         onLogits: ((Int, UnsafePointer<Float>) -> Void)? = nil, onToken: ((Int, SampledToken) -> Void)? = nil,
                         ended: ((Int) -> Bool)? = nil, between: () -> Void = {}) throws(EngineError) -> [GenerationResult] {
        var stats = GenerationStats()
        return try generate(requests, caches: caches, valueHead: valueHead, stats: &stats, onLogits: onLogits, onToken: onToken, ended: ended, between: between)
    }

    public func generate(_ requests: [GenerationRequest], caches given: [SequenceCache]? = nil, valueHead: ScalarHead? = nil,
                         stats: inout GenerationStats, onLogits: ((Int, UnsafePointer<Float>) -> Void)? = nil,
                         onToken: ((Int, SampledToken) -> Void)? = nil, ended: ((Int) -> Bool)? = nil,
                         between: () -> Void = {}) throws(EngineError) -> [GenerationResult] {
        if let valueHead, valueHead.width != model.config.width {
            throw .invalidInput("a value head of width \(valueHead.width) cannot score a model of width \(model.config.width)")
        }
        let V = model.config.vocab, context = model.config.contextLength
        if let given, given.count != requests.count { throw .invalidInput("\(requests.count) requests but \(given.count) caches") }
        let caches = given ?? requests.map { model.makeCache(capacity: min($0.prompt.count + $0.params.maxNewTokens, context)) }
        // Where each sequence starts: what its cache held before this call.
        let held = caches.map(\.length)
        for (i, r) in requests.enumerated() {
            try r.params.validate()
            if r.prompt.isEmpty { throw .invalidInput("request \(i) has an empty prompt") }
            if held[i] + r.prompt.count >= context {
                throw .invalidInput("request \(i): prompt of \(held[i] + r.prompt.count) tokens does not fit the context of \(context)")
            }
            if min(held[i] + r.prompt.count + r.params.maxNewTokens, context) > caches[i].capacity {
                throw .invalidInput("request \(i): its cache holds \(caches[i].capacity) positions, fewer than its prompt and answer may take")
            }
        }
        var results = [GenerationResult](repeating: GenerationResult(), count: requests.count)
        var rngs = requests.map { SplitMix64(seed: $0.params.seed) }
        var active = requests.indices.filter { requests[$0].params.maxNewTokens > 0 }
        var next: [Int: Int32] = [:]

        var step = active.map { (cache: caches[$0], tokens: requests[$0].prompt) }
        var prefill = true
        while !active.isEmpty {
            let started = ContinuousClock.now
            var logits: [Float] = [], values: [Float] = []
            if prefill {
                logits.reserveCapacity(step.count * V)
                for s in step {
                    let out = try model.forward([s], outputs: .lastPerSequence, scoring: valueHead)
                    logits += out.logits; values += out.scores
                    between()
                }
            } else {
                (logits, values) = try model.forward(step, outputs: .lastPerSequence, scoring: valueHead)
                between()
            }
            var still: [Int] = []
            logits.withUnsafeBufferPointer { buf in
                for (row, i) in active.enumerated() {
                    let p = requests[i].params
                    onLogits?(i, buf.baseAddress! + row * V)
                    let t = Sampler.sample(logits: buf.baseAddress! + row * V, vocab: V, params: p, rng: &rngs[i])
                    results[i].tokens.append(t.id)
                    results[i].logprobs.append(t.logprob)
                    results[i].rawLogprobs.append(t.rawLogprob)
                    if valueHead != nil { results[i].values.append(values[row]) }
                    onToken?(i, t)
                    if p.stopTokens.contains(t.id) || ended?(i) == true {
                        results[i].finishReason = .stop
                    } else if results[i].tokens.count >= p.maxNewTokens || held[i] + requests[i].prompt.count + results[i].tokens.count >= context {
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
