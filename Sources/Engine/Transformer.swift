/// Inference forward pass for a batch of sequences of different lengths.
///
/// The new tokens of every sequence are packed into one (N, C) matrix, so each projection is one
/// call of the engine's kernel (MatMul.swift) for the whole batch; attention runs per sequence and
/// head against that sequence's KV cache. No padding enters the arithmetic and the kernel's result
/// for a row does not depend on the other rows, so a sequence's logits are bitwise the same in any batch.
public final class Transformer: @unchecked Sendable {
    public let weights: ModelWeights
    public let rotary: RotaryTable
    public var config: ModelConfig { weights.config }
    private let layerOffsets: [ParameterLayout.LayerOffsets]
    /// Set with `.bf16` precision: the projections read these (a copy made at init, so later
    /// changes to `weights` do not reach them); embeddings and norms stay float32.
    public let bf16: BFloat16Weights?

    /// The precision of the weights the projections read: float32, or bfloat16 copies (half the
    /// bytes per decoded token, results within the tolerance ReferenceTests state).
    public enum Precision: String, CaseIterable, Sendable { case f32, bf16 }
    /// The projection kernel (Kernel.swift): the process's unless a test or benchmark names one.
    public let kernel: Kernel

    public init(weights: ModelWeights, precision: Precision = .f32, kernel: Kernel = .active) throws(EngineError) {
        try weights.config.validate()
        self.weights = weights
        self.kernel = kernel
        bf16 = precision == .bf16 ? BFloat16Weights(weights) : nil
        rotary = RotaryTable(config: weights.config)
        layerOffsets = (0..<weights.config.layers).map { weights.layout.layer($0) }
    }

    public func makeCache(capacity: Int) -> SequenceCache {
        SequenceCache(config: config, capacity: min(capacity, config.contextLength))
    }

    /// `lastHidden`: instead of logits, the final-normed hidden state (rows, C) of each item's last
    /// new token, for a scalar head. `tokens`: per item, the logits of those of its new tokens (by
    /// index into the item's tokens), when only some rows are wanted (a reference pass needs the
    /// response's, not the prompt's: the output projection is a fifth of a row's work).
    public enum Outputs: Sendable, Equatable { case lastPerSequence, everyToken, lastHidden, tokens([Range<Int>]) }

    /// One step: appends `tokens` of each item to its cache and returns logits, (rows, V) row-major:
    /// one row per item (its last new token) or one per new token in item order.
    public func forward(_ items: [(cache: SequenceCache, tokens: [Int32])], outputs: Outputs) throws(EngineError) -> [Float] {
        try forward(items, outputs: outputs, scoring: nil).logits
    }

    /// The same step, and `head`'s score of each output row's final-normed hidden state: a value
    /// head on this trunk scores the rows that sample, at no extra pass.
    public func forward(_ items: [(cache: SequenceCache, tokens: [Int32])], outputs: Outputs,
                        scoring head: ScalarHead?) throws(EngineError) -> (logits: [Float], scores: [Float]) {
        let cfg = config
        let C = cfg.width, H = cfg.heads, K = cfg.kvHeads, D = cfg.headDim, F = cfg.ffnWidth, V = cfg.vocab
        let qkvWidth = (H + 2 * K) * D

        // Token bookkeeping: where each item's tokens start in the packed batch.
        var starts: [Int] = []
        var n = 0
        for (i, item) in items.enumerated() {
            if item.tokens.isEmpty { throw .invalidInput("sequence \(i) has no new tokens") }
            if item.cache.length + item.tokens.count > item.cache.capacity {
                throw .invalidInput("sequence \(i) needs \(item.cache.length + item.tokens.count) positions, its cache holds \(item.cache.capacity)")
            }
            if let bad = item.tokens.first(where: { $0 < 0 || Int($0) >= V }) {
                throw .invalidInput("token id \(bad) outside the vocabulary 0..<\(V)")
            }
            starts.append(n)
            n += item.tokens.count
        }
        if case .tokens(let wanted) = outputs {
            if wanted.count != items.count { throw .invalidInput("\(items.count) sequences but token ranges for \(wanted.count)") }
            if let i = items.indices.first(where: { wanted[$0].lowerBound < 0 || wanted[$0].upperBound > items[$0].tokens.count }) {
                throw .invalidInput("sequence \(i): output tokens \(wanted[i]) outside its \(items[i].tokens.count) new tokens")
            }
        }
        if n == 0 { return ([], []) }

        let w = weights.base
        let x = UnsafeMutablePointer<Float>.allocate(capacity: n * C)          // (N, C) residual stream
        let xn = UnsafeMutablePointer<Float>.allocate(capacity: n * C)         // (N, C) normed
        let qkv = UnsafeMutablePointer<Float>.allocate(capacity: n * qkvWidth) // (N, (H + 2K) * D)
        let att = UnsafeMutablePointer<Float>.allocate(capacity: n * H * D)    // (N, H * D)
        let gateUp = UnsafeMutablePointer<Float>.allocate(capacity: n * 2 * F) // (N, 2F)
        let hidden = UnsafeMutablePointer<Float>.allocate(capacity: n * F)     // (N, F)
        defer { [x, xn, qkv, att, gateUp, hidden].forEach { $0.deallocate() } }

        let embed = w + weights.layout.embedOffset
        for (i, item) in items.enumerated() {
            for (j, t) in item.tokens.enumerated() {
                (x + (starts[i] + j) * C).update(from: embed + Int(t) * C, count: C)
            }
        }

        for l in 0..<cfg.layers {
            let o = layerOffsets[l]
            RMSNorm.forward(xn, inv: nil, x, w + o.attnNorm, rows: n, n: C, eps: cfg.rmsEps)
            // wq, wk, wv are adjacent in the flat buffer: one product gives all three.
            project(out: qkv, x: xn, m: n, at: o.wq, n: qkvWidth, k: C)
            if let b = o.bqkv { for r in 0..<n { VectorMath.axpy(1, w + b, qkv + r * qkvWidth, qkvWidth) } }
            for (i, item) in items.enumerated() {
                for j in 0..<item.tokens.count {
                    let row = qkv + (starts[i] + j) * qkvWidth, pos = item.cache.length + j
                    rotary.apply(row, heads: H + K, pos: pos) // queries and keys, not values
                    for g in 0..<K {
                        (item.cache.keys(layer: l, head: g) + pos * D).update(from: row + (H + g) * D, count: D)
                        (item.cache.values(layer: l, head: g) + pos * D).update(from: row + (H + K + g) * D, count: D)
                    }
                }
            }
            attention(items: items, starts: starts, layer: l, qkv: qkv, qkvWidth: qkvWidth, out: att)
            project(out: x, x: att, m: n, at: o.wo, n: C, k: H * D, accumulate: true)

            RMSNorm.forward(xn, inv: nil, x, w + o.ffnNorm, rows: n, n: C, eps: cfg.rmsEps)
            // w_gate and w_up are adjacent too.
            project(out: gateUp, x: xn, m: n, at: o.wGate, n: 2 * F, k: C)
            for r in 0..<n {
                SwiGLU.forward(hidden + r * F, gate: gateUp + r * 2 * F, up: gateUp + r * 2 * F + F, F)
            }
            project(out: x, x: hidden, m: n, at: o.wDown, n: C, k: F, accumulate: true)
        }
        for item in items { item.cache.length += item.tokens.count }

        // Final norm and output projection, only for the rows asked for.
        let rows: [Int]
        switch outputs {
        case .everyToken: rows = Array(0..<n)
        case .lastPerSequence, .lastHidden: rows = items.indices.map { starts[$0] + items[$0].tokens.count - 1 }
        case .tokens(let wanted): rows = items.indices.flatMap { i in wanted[i].map { starts[i] + $0 } }
        }
        for (r, src) in rows.enumerated() {
            RMSNorm.forward(xn + r * C, inv: nil, x + src * C, w + weights.layout.finalNormOffset, rows: 1, n: C, eps: cfg.rmsEps)
        }
        let scores = head?.forward(xn, rows: rows.count) ?? []
        if rows.isEmpty { return ([], scores) }
        if outputs == .lastHidden { return (Array(UnsafeBufferPointer(start: xn, count: rows.count * C)), scores) }
        var logits = [Float](repeating: 0, count: rows.count * V)
        logits.withUnsafeMutableBufferPointer { out in
            project(out: out.baseAddress!, x: xn, m: rows.count, at: weights.layout.lmHeadOffset, n: V, k: C)
        }
        return (logits, scores)
    }

    /// out (m, n) (+)= x (m, k) times the weight matrix (n, k) at `offset` of the flat buffer.
    private func project(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, m: Int, at offset: Int, n: Int, k: Int, accumulate: Bool = false) {
        if let b = bf16 { MatMul.linear(out: out, x: x, m: m, w: b.base + offset, n: n, k: k, accumulate: accumulate, kernel: kernel) }
        else { MatMul.linear(out: out, x: x, m: m, w: weights.base + offset, n: n, k: k, accumulate: accumulate, kernel: kernel) }
    }

    /// Causal attention of each item's new queries against its cache (already holding the new keys).
    private func attention(items: [(cache: SequenceCache, tokens: [Int32])], starts: [Int], layer: Int,
                           qkv: UnsafeMutablePointer<Float>, qkvWidth: Int, out: UnsafeMutablePointer<Float>) {
        let H = config.heads, D = config.headDim, group = config.heads / config.kvHeads
        let scale = 1 / Float(D).squareRoot()
        let units = items.count * H
        let work = { (u: Int) in
            let i = u / H, h = u % H, g = h / group
            let item = items[i]
            let past = item.cache.length, count = item.tokens.count
            let keys = item.cache.keys(layer: layer, head: g), values = item.cache.values(layer: layer, head: g)
            let total = past + count
            withUnsafeTemporaryAllocation(of: Float.self, capacity: total) { scores in
                let s = scores.baseAddress!
                for j in 0..<count {
                    let q = qkv + (starts[i] + j) * qkvWidth + h * D
                    let o = out + (starts[i] + j) * H * D + h * D
                    let visible = past + j + 1
                    for t in 0..<visible { s[t] = VectorMath.dot(q, keys + t * D, D) * scale }
                    VectorMath.softmax(s, visible)
                    o.update(repeating: 0, count: D)
                    for t in 0..<visible { VectorMath.axpy(s[t], values + t * D, o, D) }
                }
            }
        }
        Parallel.forEach(units, work)
    }
}
