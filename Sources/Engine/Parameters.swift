/// Where one named tensor lives inside a flat buffer.
public struct TensorSlot: Equatable, Sendable {
    public let name: String
    public let offset: Int
    public let shape: [Int]
    public var count: Int { shape.reduce(1, *) }
}

/// The layout of every parameter tensor of a model in one flat buffer, in a fixed order.
///
/// Names are the engine's own; Formats maps them to GGUF and Hugging Face names. Weights are stored
/// as PyTorch does, (out, in) row-major. The rotary layout of attn_q/attn_k rows is the Hugging Face
/// half-split one: dimension i pairs with i + D/2.
public struct ParameterLayout: Sendable {
    public let config: ModelConfig
    public let slots: [TensorSlot]
    public let totalCount: Int
    private let index: [String: Int]

    public init(config: ModelConfig) {
        let c = config.width, hd = config.heads * config.headDim, kvd = config.kvHeads * config.headDim
        var shapes: [(String, [Int])] = [("embed", [config.vocab, c])]
        for l in 0..<config.layers {
            shapes += [
                ("layers.\(l).attn_norm", [c]),
                ("layers.\(l).wq", [hd, c]),
                ("layers.\(l).wk", [kvd, c]),
                ("layers.\(l).wv", [kvd, c]),
            ]
            // Adjacent like the matrices: one add after the one product of all three.
            if config.attentionBias { shapes += [("layers.\(l).bq", [hd]), ("layers.\(l).bk", [kvd]), ("layers.\(l).bv", [kvd])] }
            shapes += [
                ("layers.\(l).wo", [c, hd]),
                ("layers.\(l).ffn_norm", [c]),
                ("layers.\(l).w_gate", [config.ffnWidth, c]),
                ("layers.\(l).w_up", [config.ffnWidth, c]),
                ("layers.\(l).w_down", [c, config.ffnWidth]),
            ]
        }
        shapes.append(("final_norm", [c]))
        if !config.tiedEmbeddings { shapes.append(("lm_head", [config.vocab, c])) }
        var offset = 0
        var slots: [TensorSlot] = []
        for (name, shape) in shapes {
            let slot = TensorSlot(name: name, offset: offset, shape: shape)
            slots.append(slot)
            offset += slot.count
        }
        self.config = config
        self.slots = slots
        self.totalCount = offset
        self.index = Dictionary(uniqueKeysWithValues: slots.enumerated().map { ($1.name, $0) })
    }

    public func slot(_ name: String) -> TensorSlot? { index[name].map { slots[$0] } }

    /// Offsets of one layer's tensors, looked up once per layer rather than by name in the hot path.
    public struct LayerOffsets: Sendable {
        public let attnNorm, wq, wk, wv, wo, ffnNorm, wGate, wUp, wDown: Int
        /// The q, k and v biases, back to back ((H + 2K) * D), when the model has them.
        public let bqkv: Int?
    }

    public func layer(_ l: Int) -> LayerOffsets {
        func o(_ s: String) -> Int { slot("layers.\(l).\(s)")!.offset }
        return LayerOffsets(attnNorm: o("attn_norm"), wq: o("wq"), wk: o("wk"), wv: o("wv"), wo: o("wo"),
                            ffnNorm: o("ffn_norm"), wGate: o("w_gate"), wUp: o("w_up"), wDown: o("w_down"),
                            bqkv: slot("layers.\(l).bq")?.offset)
    }

    public var embedOffset: Int { slot("embed")!.offset }
    public var finalNormOffset: Int { slot("final_norm")!.offset }
    /// The output projection: the embedding when tied.
    public var lmHeadOffset: Int { slot(config.tiedEmbeddings ? "embed" : "lm_head")!.offset }
}

/// A model's parameters: one flat float32 buffer with named views.
///
/// Memory is allocated once and freed on deinit; the class is shared read-only by forward passes.
public final class ModelWeights: @unchecked Sendable {
    public let layout: ParameterLayout
    public let storage: UnsafeMutableBufferPointer<Float> // (totalCount)

    public var config: ModelConfig { layout.config }

    public init(config: ModelConfig) {
        layout = ParameterLayout(config: config)
        storage = .allocate(capacity: layout.totalCount)
        storage.initialize(repeating: 0)
    }

    deinit { storage.deallocate() }

    public func view(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        guard let s = layout.slot(name) else { return nil }
        return UnsafeMutableBufferPointer(rebasing: storage[s.offset..<s.offset + s.count])
    }

    public var base: UnsafeMutablePointer<Float> { storage.baseAddress! }

    /// A separate buffer with the same values (a frozen reference, a critic's starting trunk).
    public func copy() -> ModelWeights {
        let w = ModelWeights(config: config)
        _ = w.storage.update(from: storage)
        return w
    }

    /// Random weights for tests and tiny demo models: normal(0, std) matrices and biases, norm gains near 1.
    public static func random(config: ModelConfig, seed: UInt64, std: Float = 0.08) -> ModelWeights {
        let w = ModelWeights(config: config)
        var rng = SplitMix64(seed: seed)
        for slot in w.layout.slots {
            let v = w.view(slot.name)!
            let isNorm = slot.name.hasSuffix("norm")
            for i in 0..<v.count {
                v[i] = isNorm ? 1 + 0.1 * rng.nextNormal() : std * rng.nextNormal()
            }
        }
        return w
    }
}
