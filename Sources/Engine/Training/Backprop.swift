/// One training sequence: its tokens, which positions are targets, and optional per-token weights.
public struct TrainingSequence: Sendable, Equatable {
    public var tokens: [Int32]
    /// Per position t, 1 if token t is predicted from tokens 0..<t and enters the loss, else 0.
    /// Position 0 has no prefix and must be 0.
    public var lossMask: [Float]
    /// Per position, a factor on that token's loss (PPO passes advantages here); nil means 1.
    public var weights: [Float]?

    public init(tokens: [Int32], lossMask: [Float], weights: [Float]? = nil) {
        self.tokens = tokens; self.lossMask = lossMask; self.weights = weights
    }
}

public struct LossReport: Sendable {
    /// sum of weight * mask * -log p(token) / normalizer
    public var loss: Double
    /// number of positions with a non-zero mask
    public var targets: Int
    /// per sequence and position: log p(token | prefix) where the mask is set, else 0
    public var logprobs: [[Float]]
    /// per sequence and position: entropy of the predicting distribution where the mask is set
    public var entropies: [[Float]] = []
}

/// Loss and gradients of a Llama model on packed sequences (no padding), on the CPU.
///
/// Memory: each layer keeps its input and its projections' outputs (about 5,800 floats per token
/// and layer at SmolLM2's shape); norms and the SwiGLU product are redone in the backward pass.
/// Logits exist only for target rows, a chunk at a time. Gradients are added into `grads`, so
/// micro-batches accumulate.
public final class Backprop {
    public let weights: ModelWeights
    let rotary: RotaryTable
    let attention: CausalAttention
    let offsets: [ParameterLayout.LayerOffsets]
    /// Target rows per cross-entropy chunk: bounds the (rows, V) logits buffer.
    public var rowsPerChunk = 256
    /// Low-rank adapters added to the projections, if any.
    public var lora: LoRAAdapters?

    public var config: ModelConfig { weights.config }

    public init(weights: ModelWeights) throws(EngineError) {
        try weights.config.validate()
        let c = weights.config
        self.weights = weights
        rotary = RotaryTable(config: c)
        attention = CausalAttention(heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim)
        offsets = (0..<c.layers).map { weights.layout.layer($0) }
    }

    /// The packed batch: where each sequence starts, and which rows predict which targets.
    struct Packing {
        var starts: [Int] = [], lengths: [Int] = []
        var tokens: [Int32] = []
        var targetRows: [Int] = [], targets: [Int32] = [], coefs: [Float] = []
        var targetSource: [(sequence: Int, position: Int)] = []
        var n: Int { tokens.count }
    }

    func pack(_ batch: [TrainingSequence], normalizer: Double?) throws(EngineError) -> (Packing, Int) {
        var p = Packing()
        var count = 0
        for (s, seq) in batch.enumerated() {
            let t = seq.tokens.count
            if t == 0 { throw .invalidInput("sequence \(s) is empty") }
            if t > config.contextLength { throw .invalidInput("sequence \(s) has \(t) tokens, the context holds \(config.contextLength)") }
            if seq.lossMask.count != t { throw .invalidInput("sequence \(s): \(seq.lossMask.count) mask values for \(t) tokens") }
            if let w = seq.weights, w.count != t { throw .invalidInput("sequence \(s): \(w.count) weights for \(t) tokens") }
            if seq.lossMask[0] != 0 { throw .invalidInput("sequence \(s): position 0 cannot be a target (nothing precedes it)") }
            if let bad = seq.tokens.first(where: { $0 < 0 || Int($0) >= config.vocab }) {
                throw .invalidInput("sequence \(s): token id \(bad) outside the vocabulary 0..<\(config.vocab)")
            }
            p.starts.append(p.n); p.lengths.append(t)
            for pos in 1..<max(t, 1) where seq.lossMask[pos] != 0 {
                p.targetRows.append(p.n + pos - 1)
                p.targets.append(seq.tokens[pos])
                p.coefs.append(seq.lossMask[pos] * (seq.weights?[pos] ?? 1))
                p.targetSource.append((s, pos))
                count += 1
            }
            p.tokens += seq.tokens
        }
        let norm = Float(normalizer ?? Double(max(count, 1)))
        p.coefs = p.coefs.map { $0 / norm }
        return (p, count)
    }

    /// Activations: what each layer keeps from the forward pass for its backward pass (the
    /// projections' outputs), and temporaries shared by all layers. Normed inputs and the SwiGLU
    /// product are cheap to redo, so the backward pass recomputes them instead of keeping them.
    final class Scratch {
        let n: Int, qkvWidth: Int, hd: Int, c: Int, f2: Int
        private let keptQKV, keptAtt, keptX2, keptGateUp, keptInv1, keptInv2: UnsafeMutablePointer<Float> // (L, N, ...)
        let xn1, xn2, hidden: UnsafeMutablePointer<Float>
        let dGateUp, dXn, dQKV, dAtt, dHidden: UnsafeMutablePointer<Float>

        init(n: Int, c config: ModelConfig) {
            let C = config.width, W = (config.heads + 2 * config.kvHeads) * config.headDim, HD = config.heads * config.headDim
            let F = config.ffnWidth, L = config.layers
            self.n = n; qkvWidth = W; hd = HD; c = C; f2 = 2 * F
            func a(_ k: Int) -> UnsafeMutablePointer<Float> { .allocate(capacity: max(k, 1)) }
            keptQKV = a(L * n * W); keptAtt = a(L * n * HD); keptX2 = a(L * n * C); keptGateUp = a(L * n * 2 * F)
            keptInv1 = a(L * n); keptInv2 = a(L * n)
            xn1 = a(n * C); xn2 = a(n * C); hidden = a(n * F)
            dGateUp = a(n * 2 * F); dXn = a(n * C); dQKV = a(n * W); dAtt = a(n * HD); dHidden = a(n * F)
        }

        deinit {
            [keptQKV, keptAtt, keptX2, keptGateUp, keptInv1, keptInv2, xn1, xn2, hidden, dGateUp, dXn, dQKV, dAtt, dHidden].forEach { $0.deallocate() }
        }

        func qkv(_ l: Int) -> UnsafeMutablePointer<Float> { keptQKV + l * n * qkvWidth }      // (N, (H + 2K) * D), rotated
        func att(_ l: Int) -> UnsafeMutablePointer<Float> { keptAtt + l * n * hd }            // (N, H * D)
        func x2(_ l: Int) -> UnsafeMutablePointer<Float> { keptX2 + l * n * c }               // (N, C) after attention
        func gateUp(_ l: Int) -> UnsafeMutablePointer<Float> { keptGateUp + l * n * f2 }      // (N, 2F)
        func inv1(_ l: Int) -> UnsafeMutablePointer<Float> { keptInv1 + l * n }               // (N)
        func inv2(_ l: Int) -> UnsafeMutablePointer<Float> { keptInv2 + l * n }               // (N)
    }

    /// x_out (N, C) from x_in (N, C) for layer l, leaving the intermediates in `s`.
    func layerForward(_ l: Int, _ p: Packing, xIn: UnsafePointer<Float>, xOut: UnsafeMutablePointer<Float>, _ s: Scratch) {
        let c = config, n = p.n, C = c.width, D = c.headDim, H = c.heads, K = c.kvHeads, F = c.ffnWidth
        let W = (H + 2 * K) * D, w = weights.base, o = offsets[l]
        RMSNorm.forward(s.xn1, inv: s.inv1(l), xIn, w + o.attnNorm, rows: n, n: C, eps: c.rmsEps)
        BLAS.gemm(m: n, n: W, k: C, a: s.xn1, lda: C, b: w + o.wq, ldb: C, transB: true, c: s.qkv(l), ldc: W)
        for (t, column) in [(LoRAConfig.Target.q, 0), (.k, H * D), (.v, (H + K) * D)] {
            if let a = lora?.slot(layer: l, t) { lora!.forward(a, out: s.qkv(l) + column, ldOut: W, x: s.xn1, ldIn: C, rows: n) }
        }
        if let b = o.bqkv { for r in 0..<n { VectorMath.axpy(1, w + b, s.qkv(l) + r * W, W) } }
        for (start, len) in zip(p.starts, p.lengths) {
            for pos in 0..<len { rotary.apply(s.qkv(l) + (start + pos) * W, heads: H + K, pos: pos) }
        }
        attention.forward(s.att(l), qkv: s.qkv(l), starts: p.starts, lengths: p.lengths)
        s.x2(l).update(from: xIn, count: n * C)
        BLAS.gemm(m: n, n: C, k: H * D, a: s.att(l), lda: H * D, b: w + o.wo, ldb: H * D, transB: true, c: s.x2(l), ldc: C, beta: 1)
        if let a = lora?.slot(layer: l, .o) { lora!.forward(a, out: s.x2(l), ldOut: C, x: s.att(l), ldIn: H * D, rows: n) }
        RMSNorm.forward(s.xn2, inv: s.inv2(l), s.x2(l), w + o.ffnNorm, rows: n, n: C, eps: c.rmsEps)
        BLAS.gemm(m: n, n: 2 * F, k: C, a: s.xn2, lda: C, b: w + o.wGate, ldb: C, transB: true, c: s.gateUp(l), ldc: 2 * F)
        for (t, column) in [(LoRAConfig.Target.gate, 0), (.up, F)] {
            if let a = lora?.slot(layer: l, t) { lora!.forward(a, out: s.gateUp(l) + column, ldOut: 2 * F, x: s.xn2, ldIn: C, rows: n) }
        }
        Parallel.forEach(n) { r in SwiGLU.forward(s.hidden + r * F, gate: s.gateUp(l) + r * 2 * F, up: s.gateUp(l) + r * 2 * F + F, F) }
        xOut.update(from: s.x2(l), count: n * C)
        BLAS.gemm(m: n, n: C, k: F, a: s.hidden, lda: F, b: w + o.wDown, ldb: F, transB: true, c: xOut, ldc: C, beta: 1)
        if let a = lora?.slot(layer: l, .down) { lora!.forward(a, out: xOut, ldOut: C, x: s.hidden, ldIn: F, rows: n) }
    }

    /// On entry dx holds d loss / d x_out of layer l; on return, d loss / d x_in. Parameter gradients
    /// are added to g (skipped when nil: frozen base) and adapter gradients to loraGrads.
    func layerBackward(_ l: Int, _ p: Packing, xIn: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, _ s: Scratch,
                       grads g: UnsafeMutablePointer<Float>?, loraGrads: UnsafeMutablePointer<Float>?) {
        let c = config, n = p.n, C = c.width, D = c.headDim, H = c.heads, K = c.kvHeads, F = c.ffnWidth
        let W = (H + 2 * K) * D, w = weights.base, o = offsets[l]
        func adapter(_ t: LoRAConfig.Target, dOut: UnsafePointer<Float>, ldOut: Int, x: UnsafePointer<Float>, ldIn: Int, dX: UnsafeMutablePointer<Float>) {
            if let lora, let loraGrads, let a = lora.slot(layer: l, t) {
                lora.backward(a, dOut: dOut, ldOut: ldOut, x: x, ldIn: ldIn, rows: n, dX: dX, grads: loraGrads)
            }
        }
        // Redo the cheap intermediates the forward pass did not keep.
        RMSNorm.forward(s.xn1, inv: nil, xIn, w + o.attnNorm, rows: n, n: C, eps: c.rmsEps)
        RMSNorm.forward(s.xn2, inv: nil, s.x2(l), w + o.ffnNorm, rows: n, n: C, eps: c.rmsEps)
        Parallel.forEach(n) { r in SwiGLU.forward(s.hidden + r * F, gate: s.gateUp(l) + r * 2 * F, up: s.gateUp(l) + r * 2 * F + F, F) }
        // x_out = x2 + hidden * Wdown^T
        BLAS.gemm(m: n, n: F, k: C, a: dx, lda: C, b: w + o.wDown, ldb: F, transB: false, c: s.dHidden, ldc: F)
        if let g { BLAS.gemm(m: C, n: F, k: n, a: dx, lda: C, transA: true, b: s.hidden, ldb: F, transB: false, c: g + o.wDown, ldc: F, beta: 1) }
        adapter(.down, dOut: dx, ldOut: C, x: s.hidden, ldIn: F, dX: s.dHidden)
        Parallel.forEach(n) { r in
            SwiGLU.backward(dGate: s.dGateUp + r * 2 * F, dUp: s.dGateUp + r * 2 * F + F, dOut: s.dHidden + r * F,
                            gate: s.gateUp(l) + r * 2 * F, up: s.gateUp(l) + r * 2 * F + F, F)
        }
        BLAS.gemm(m: n, n: C, k: 2 * F, a: s.dGateUp, lda: 2 * F, b: w + o.wGate, ldb: C, transB: false, c: s.dXn, ldc: C)
        if let g { BLAS.gemm(m: 2 * F, n: C, k: n, a: s.dGateUp, lda: 2 * F, transA: true, b: s.xn2, ldb: C, transB: false, c: g + o.wGate, ldc: C, beta: 1) }
        adapter(.gate, dOut: s.dGateUp, ldOut: 2 * F, x: s.xn2, ldIn: C, dX: s.dXn)
        adapter(.up, dOut: s.dGateUp + F, ldOut: 2 * F, x: s.xn2, ldIn: C, dX: s.dXn)
        RMSNorm.backward(dx: dx, dGain: g.map { $0 + o.ffnNorm }, dOut: s.dXn, s.x2(l), w + o.ffnNorm, inv: s.inv2(l), rows: n, n: C)
        // x2 = x_in + att * Wo^T
        BLAS.gemm(m: n, n: H * D, k: C, a: dx, lda: C, b: w + o.wo, ldb: H * D, transB: false, c: s.dAtt, ldc: H * D)
        if let g { BLAS.gemm(m: C, n: H * D, k: n, a: dx, lda: C, transA: true, b: s.att(l), ldb: H * D, transB: false, c: g + o.wo, ldc: H * D, beta: 1) }
        adapter(.o, dOut: dx, ldOut: C, x: s.att(l), ldIn: H * D, dX: s.dAtt)
        attention.backward(dqkv: s.dQKV, dOut: s.dAtt, qkv: s.qkv(l), starts: p.starts, lengths: p.lengths)
        for (start, len) in zip(p.starts, p.lengths) {
            for pos in 0..<len { rotary.apply(s.dQKV + (start + pos) * W, heads: H + K, pos: pos, inverse: true) }
        }
        if let g, let b = o.bqkv { for r in 0..<n { VectorMath.axpy(1, s.dQKV + r * W, g + b, W) } }
        BLAS.gemm(m: n, n: C, k: W, a: s.dQKV, lda: W, b: w + o.wq, ldb: C, transB: false, c: s.dXn, ldc: C)
        if let g { BLAS.gemm(m: W, n: C, k: n, a: s.dQKV, lda: W, transA: true, b: s.xn1, ldb: C, transB: false, c: g + o.wq, ldc: C, beta: 1) }
        adapter(.q, dOut: s.dQKV, ldOut: W, x: s.xn1, ldIn: C, dX: s.dXn)
        adapter(.k, dOut: s.dQKV + H * D, ldOut: W, x: s.xn1, ldIn: C, dX: s.dXn)
        adapter(.v, dOut: s.dQKV + (H + K) * D, ldOut: W, x: s.xn1, ldIn: C, dX: s.dXn)
        RMSNorm.backward(dx: dx, dGain: g.map { $0 + o.attnNorm }, dOut: s.dXn, xIn, w + o.attnNorm, inv: s.inv1(l), rows: n, n: C)
    }

    /// Layer inputs: xs[l] (N, C) for l in 0...L (xs[L] is the last layer's output).
    func forwardAll(_ p: Packing, _ s: Scratch) -> [UnsafeMutablePointer<Float>] {
        let C = config.width
        let xs = (0...config.layers).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: max(p.n * C, 1)) }
        let embed = weights.base + weights.layout.embedOffset
        for (i, t) in p.tokens.enumerated() { (xs[0] + i * C).update(from: embed + Int(t) * C, count: C) }
        for l in 0..<config.layers { layerForward(l, p, xIn: xs[l], xOut: xs[l + 1], s) }
        return xs
    }

    /// Runs the trunk and keeps what the backward pass needs. `normalizer` divides the loss-mask
    /// weights (default: this batch's number of targets).
    public func forward(_ batch: [TrainingSequence], normalizer: Double? = nil) throws(EngineError) -> ForwardPass {
        let (p, count) = try pack(batch, normalizer: normalizer)
        let s = Scratch(n: p.n, c: config)
        return ForwardPass(model: self, packing: p, targets: count, scratch: s, xs: forwardAll(p, s), lengths: batch.map(\.tokens.count))
    }

    /// Forward, language-model loss and backward in one call: adds the gradient of the loss to
    /// `grads` (same layout as the weights). Pass the whole batch's target count as `normalizer`
    /// when accumulating micro-batches.
    public func lossAndGradients(_ batch: [TrainingSequence], grads: ModelWeights, normalizer: Double? = nil) throws(EngineError) -> LossReport {
        guard grads.layout.totalCount == weights.layout.totalCount else { throw .invalidInput("gradient buffer has another layout") }
        let pass = try forward(batch, normalizer: normalizer)
        let (report, dx) = pass.languageModelLoss(grads: grads)
        defer { dx.deallocate() }
        pass.backward(dx, grads: grads, loraGrads: nil)
        return report
    }

    /// Raw logits (N, V) at every position of the packed batch, through the training forward pass.
    public func logits(_ batch: [TrainingSequence]) throws(EngineError) -> [Float] {
        let pass = try forward(batch)
        let c = config, C = c.width, V = c.vocab, n = pass.packing.n
        let xn = pass.finalNormed(rows: Array(0..<n), inv: nil)
        defer { xn.deallocate() }
        var out = [Float](repeating: 0, count: n * V)
        out.withUnsafeMutableBufferPointer {
            BLAS.gemm(m: n, n: V, k: C, a: xn, lda: C, b: weights.base + weights.layout.lmHeadOffset, ldb: C, transB: true, c: $0.baseAddress!, ldc: V)
        }
        return out
    }
}

/// The kept state of one forward pass: what an output head reads and what backward needs.
public final class ForwardPass {
    let model: Backprop
    let packing: Backprop.Packing
    let scratch: Backprop.Scratch
    let xs: [UnsafeMutablePointer<Float>]
    /// Number of loss-mask targets in the batch.
    public let targets: Int
    let lengths: [Int]

    init(model: Backprop, packing: Backprop.Packing, targets: Int, scratch: Backprop.Scratch, xs: [UnsafeMutablePointer<Float>], lengths: [Int]) {
        self.model = model; self.packing = packing; self.targets = targets; self.scratch = scratch; self.xs = xs; self.lengths = lengths
    }

    deinit { xs.forEach { $0.deallocate() } }

    var config: ModelConfig { model.config }
    var finalHidden: UnsafeMutablePointer<Float> { xs[config.layers] }

    /// Packed rows that predict the targets, and which (sequence, position) each predicts.
    public var targetRows: [Int] { packing.targetRows }
    public var targetPositions: [(sequence: Int, position: Int)] { packing.targetSource }

    /// Packed row of each sequence's last token.
    public var lastRows: [Int] { zip(packing.starts, packing.lengths).map { $0 + $1 - 1 } }
    /// Total packed rows.
    public var rowCount: Int { packing.n }

    /// Final-normed hidden states of `rows`, (rows, C), caller deallocates; `inv` receives 1/rms.
    func finalNormed(rows: [Int], inv: UnsafeMutablePointer<Float>?) -> UnsafeMutablePointer<Float> {
        let C = config.width, w = model.weights
        let gathered = UnsafeMutablePointer<Float>.allocate(capacity: max(rows.count * C, 1))
        defer { gathered.deallocate() }
        for (i, r) in rows.enumerated() { (gathered + i * C).update(from: finalHidden + r * C, count: C) }
        let out = UnsafeMutablePointer<Float>.allocate(capacity: max(rows.count * C, 1))
        RMSNorm.forward(out, inv: inv, gathered, w.base + w.layout.finalNormOffset, rows: rows.count, n: C, eps: config.rmsEps)
        return out
    }

    /// Backward through the final norm for `rows`: dXn (rows, C) into dx (N, C), gain gradient into grads.
    func finalNormBackward(rows: [Int], dXn: UnsafePointer<Float>, inv: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, grads: ModelWeights?) {
        let C = config.width, w = model.weights, gainOffset = w.layout.finalNormOffset
        let gathered = UnsafeMutablePointer<Float>.allocate(capacity: max(rows.count * C, 1))
        let dRows = UnsafeMutablePointer<Float>.allocate(capacity: max(rows.count * C, 1))
        defer { gathered.deallocate(); dRows.deallocate() }
        for (i, r) in rows.enumerated() { (gathered + i * C).update(from: finalHidden + r * C, count: C) }
        dRows.initialize(repeating: 0, count: rows.count * C)
        RMSNorm.backward(dx: dRows, dGain: grads.map { $0.base + gainOffset }, dOut: dXn, gathered, w.base + gainOffset, inv: inv, rows: rows.count, n: C)
        for (i, r) in rows.enumerated() { VectorMath.axpy(1, dRows + i * C, dx + r * C, C) }
    }

    /// A zeroed (N, C) gradient for the final hidden states; the caller deallocates it.
    public func zeroGradient() -> UnsafeMutablePointer<Float> {
        let n = max(packing.n * config.width, 1)
        let dx = UnsafeMutablePointer<Float>.allocate(capacity: n)
        dx.initialize(repeating: 0, count: n)
        return dx
    }

    /// Weighted next-token cross-entropy on the loss-mask targets, a chunk of rows at a time.
    /// Adds the output projection's and final norm's gradients to `grads`; returns the report and
    /// d loss / d final hidden (N, C), which the caller passes to `backward` and then deallocates.
    /// Without `grads` the base model is frozen; with `backward` false it only evaluates (the
    /// returned gradient stays zero). `coefficients[s][t]`, if given, replaces mask x weight /
    /// normaliser as the factor on -log p of target t of sequence s (PPO's per-token gradients).
    /// With `temperature`, p is softmax(logits / temperature) (PPO at a sampling temperature).
    public func languageModelLoss(grads: ModelWeights?, backward: Bool = true, coefficients: [[Float]]? = nil,
                                  entropies wantEntropies: Bool = false, temperature: Float = 1) -> (LossReport, UnsafeMutablePointer<Float>) {
        let c = config, C = c.width, V = c.vocab, w = model.weights, p = packing
        let coefs = coefficients.map { given in p.targetSource.map { given[$0.sequence][$0.position] } } ?? p.coefs
        let outW = w.layout.lmHeadOffset
        let dx = zeroGradient()
        var loss = 0.0
        var logprobs = lengths.map { [Float](repeating: 0, count: $0) }
        var entropies = wantEntropies ? logprobs : []
        let R = min(model.rowsPerChunk, max(p.targetRows.count, 1))
        let dxn = UnsafeMutablePointer<Float>.allocate(capacity: R * C), inv = UnsafeMutablePointer<Float>.allocate(capacity: R)
        let lp = UnsafeMutablePointer<Float>.allocate(capacity: R), logits = UnsafeMutablePointer<Float>.allocate(capacity: R * V)
        let ent = UnsafeMutablePointer<Float>.allocate(capacity: R)
        defer { [dxn, inv, lp, logits, ent].forEach { $0.deallocate() } }
        for chunk in stride(from: 0, to: p.targetRows.count, by: R) {
            let range = chunk..<min(chunk + R, p.targetRows.count)
            let rows = Array(p.targetRows[range])
            let xn = finalNormed(rows: rows, inv: inv)
            loss += CrossEntropy.forwardBackward(
                xn: xn, rows: rows.count, targets: Array(p.targets[range]), coefs: Array(coefs[range]),
                w: w.base + outW, vocab: V, width: C, temperature: temperature, logits: logits, logprobs: lp, entropies: wantEntropies ? ent : nil,
                dXn: backward ? dxn : nil, dW: grads.map { $0.base + outW })
            xn.deallocate()
            if backward { finalNormBackward(rows: rows, dXn: dxn, inv: inv, dx: dx, grads: grads) }
            for (i, src) in p.targetSource[range].enumerated() {
                logprobs[src.sequence][src.position] = lp[i]
                if wantEntropies { entropies[src.sequence][src.position] = ent[i] }
            }
        }
        return (LossReport(loss: loss, targets: targets, logprobs: logprobs, entropies: entropies), dx)
    }

    /// Backward through the layers and the embedding: dx (N, C) is d loss / d final hidden (it is
    /// used as scratch). Parameter gradients are added into `grads` (nil: base frozen), adapter
    /// gradients into `loraGrads` (same layout as the model's adapters).
    public func backward(_ dx: UnsafeMutablePointer<Float>, grads: ModelWeights?, loraGrads: UnsafeMutablePointer<Float>? = nil) {
        let c = config, C = c.width
        for l in stride(from: c.layers - 1, through: 0, by: -1) {
            model.layerBackward(l, packing, xIn: xs[l], dx: dx, scratch, grads: grads?.base, loraGrads: loraGrads)
        }
        guard let g = grads?.base else { return }
        let gEmbed = g + model.weights.layout.embedOffset
        for (i, t) in packing.tokens.enumerated() { VectorMath.axpy(1, dx + i * C, gEmbed + Int(t) * C, C) }
    }
}
