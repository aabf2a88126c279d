/// Which projections get low-rank adapters, and their rank and scale (alpha / rank).
public struct LoRAConfig: Codable, Sendable, Equatable {
    public enum Target: String, Codable, Sendable, CaseIterable { case q, k, v, o, gate, up, down }
    public var rank: Int
    public var alpha: Float
    public var targets: [Target]

    public init(rank: Int, alpha: Float? = nil, targets: [Target] = Target.allCases) {
        self.rank = rank; self.alpha = alpha ?? Float(2 * rank); self.targets = targets
    }

    public var scale: Float { alpha / Float(rank) }
}

/// Low-rank adapters W + (alpha / r) B A on a model's projections, in one flat buffer of their
/// own (so the optimizer and the weight broadcast walk only them). A (r, in) starts random,
/// B (out, r) starts at zero, so a fresh adapter leaves the model unchanged.
public final class LoRAAdapters: @unchecked Sendable {
    public struct Slot: Sendable {
        public let layer: Int, target: LoRAConfig.Target
        public let inDim: Int, outDim: Int
        public let a: Int, b: Int // offsets of A (r, in) and B (out, r)
    }

    public let config: LoRAConfig
    public let model: ModelConfig
    public let slots: [Slot]
    public let storage: UnsafeMutableBufferPointer<Float>
    let byLayer: [[LoRAConfig.Target: Int]]

    /// Refuses a rank above a targeted matrix's smaller side (such an adapter is no longer low
    /// rank, and a corrupted rank would ask for gigabytes) and adapters beyond the machine's memory.
    public init(config: LoRAConfig, model: ModelConfig) throws(EngineError) {
        var floats = 0.0
        for t in config.targets {
            let (i, o) = Self.shape(t, model)
            if config.rank > min(i, o) {
                throw .invalidConfig("LoRA rank \(config.rank) is above \(min(i, o)), the smaller side of the \(t.rawValue) projection (\(o) x \(i))")
            }
            floats += Double(config.rank) * Double(i + o) * Double(model.layers)
        }
        try MemoryBudget.check(4 * floats, for: "LoRA adapters of rank \(config.rank)")
        self.config = config; self.model = model
        var slots: [Slot] = [], offset = 0
        var byLayer: [[LoRAConfig.Target: Int]] = []
        for l in 0..<model.layers {
            var index: [LoRAConfig.Target: Int] = [:]
            for t in LoRAConfig.Target.allCases where config.targets.contains(t) {
                let (i, o) = Self.shape(t, model)
                index[t] = slots.count
                slots.append(Slot(layer: l, target: t, inDim: i, outDim: o, a: offset, b: offset + config.rank * i))
                offset += config.rank * (i + o)
            }
            byLayer.append(index)
        }
        self.slots = slots
        self.byLayer = byLayer
        storage = .allocate(capacity: max(offset, 1))
        storage.initialize(repeating: 0)
    }

    deinit { storage.deallocate() }

    /// (in, out) of a projection.
    static func shape(_ t: LoRAConfig.Target, _ c: ModelConfig) -> (Int, Int) {
        let C = c.width, HD = c.heads * c.headDim, KD = c.kvHeads * c.headDim, F = c.ffnWidth
        switch t {
        case .q: return (C, HD)
        case .k, .v: return (C, KD)
        case .o: return (HD, C)
        case .gate, .up: return (C, F)
        case .down: return (F, C)
        }
    }

    public var count: Int { slots.last.map { $0.b + $0.outDim * config.rank } ?? 0 }

    public func slot(layer: Int, _ t: LoRAConfig.Target) -> Slot? { byLayer[layer][t].map { slots[$0] } }

    /// A ~ uniform(-1/sqrt(in), 1/sqrt(in)) as PEFT does; B = 0.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        storage.update(repeating: 0)
        for s in slots {
            let bound = 1 / Float(s.inDim).squareRoot()
            for i in 0..<config.rank * s.inDim { storage[s.a + i] = Float(rng.nextUniform() * 2 - 1) * bound }
        }
    }

    /// out (rows, outDim; ldOut) += scale * (x A^T) B^T for x (rows, inDim; ldIn).
    func forward(_ s: Slot, out: UnsafeMutablePointer<Float>, ldOut: Int, x: UnsafePointer<Float>, ldIn: Int, rows: Int) {
        let r = config.rank, p = storage.baseAddress!
        let u = UnsafeMutablePointer<Float>.allocate(capacity: max(rows * r, 1))
        defer { u.deallocate() }
        BLAS.gemm(m: rows, n: r, k: s.inDim, a: x, lda: ldIn, b: p + s.a, ldb: s.inDim, transB: true, c: u, ldc: r)
        BLAS.gemm(m: rows, n: s.outDim, k: r, a: u, lda: r, b: p + s.b, ldb: r, transB: true, c: out, ldc: ldOut, alpha: config.scale, beta: 1)
    }

    /// Given dOut (rows, outDim; ldOut): dX (rows, inDim; ldIn) += scale * dOut B A, and the adapter
    /// gradients dA += scale * (dOut B)^T x, dB += scale * dOut^T (x A^T) into `grads` (same layout).
    func backward(_ s: Slot, dOut: UnsafePointer<Float>, ldOut: Int, x: UnsafePointer<Float>, ldIn: Int, rows: Int,
                  dX: UnsafeMutablePointer<Float>, grads: UnsafeMutablePointer<Float>) {
        let r = config.rank, p = storage.baseAddress!, scale = config.scale
        let u = UnsafeMutablePointer<Float>.allocate(capacity: max(rows * r, 1))
        let du = UnsafeMutablePointer<Float>.allocate(capacity: max(rows * r, 1))
        defer { u.deallocate(); du.deallocate() }
        BLAS.gemm(m: rows, n: r, k: s.inDim, a: x, lda: ldIn, b: p + s.a, ldb: s.inDim, transB: true, c: u, ldc: r)
        BLAS.gemm(m: s.outDim, n: r, k: rows, a: dOut, lda: ldOut, transA: true, b: u, ldb: r, transB: false,
                  c: grads + s.b, ldc: r, alpha: scale, beta: 1)
        BLAS.gemm(m: rows, n: r, k: s.outDim, a: dOut, lda: ldOut, b: p + s.b, ldb: r, transB: false, c: du, ldc: r, alpha: scale)
        BLAS.gemm(m: r, n: s.inDim, k: rows, a: du, lda: r, transA: true, b: x, ldb: ldIn, transB: false,
                  c: grads + s.a, ldc: s.inDim, beta: 1)
        BLAS.gemm(m: rows, n: s.inDim, k: r, a: du, lda: r, b: p + s.a, ldb: s.inDim, transB: false, c: dX, ldc: ldIn, beta: 1)
    }

    /// A copy of `base` with the adapters merged in; `base` is left as it is.
    public func merged(with base: ModelWeights) -> ModelWeights {
        let w = base.copy()
        merge(into: w)
        return w
    }

    /// W += scale * B A for every adapter: the merged model for generation and export.
    public func merge(into weights: ModelWeights) {
        precondition(weights.config == model, "adapters belong to another model shape")
        for s in slots {
            let o = weights.layout.layer(s.layer)
            let base: Int
            switch s.target {
            case .q: base = o.wq
            case .k: base = o.wk
            case .v: base = o.wv
            case .o: base = o.wo
            case .gate: base = o.wGate
            case .up: base = o.wUp
            case .down: base = o.wDown
            }
            let p = storage.baseAddress!
            BLAS.gemm(m: s.outDim, n: s.inDim, k: config.rank, a: p + s.b, lda: config.rank, b: p + s.a, ldb: s.inDim,
                      transB: false, c: weights.base + base, ldc: s.inDim, alpha: config.scale, beta: 1)
        }
    }
}
