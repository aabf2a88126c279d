/// The shape of a Llama-architecture model.
///
/// Shape letters used across the engine: B batch, T time, C width, L layers, H query heads,
/// K key/value heads, D head size, F feed-forward width, V vocabulary.
public struct ModelConfig: Equatable, Sendable, Codable {
    public var layers: Int          // L
    public var width: Int           // C
    public var heads: Int           // H
    public var kvHeads: Int         // K
    public var headDim: Int         // D
    public var ffnWidth: Int        // F
    public var vocab: Int           // V
    public var ropeTheta: Float
    public var rmsEps: Float
    public var tiedEmbeddings: Bool
    public var contextLength: Int
    /// Biases on the query, key and value projections (Qwen2); Llama has none.
    public var attentionBias: Bool
    /// Llama 3's rescaled rotary frequencies; nil: plain RoPE.
    public var ropeScaling: RopeScaling?

    public init(layers: Int, width: Int, heads: Int, kvHeads: Int, headDim: Int? = nil, ffnWidth: Int,
                vocab: Int, ropeTheta: Float = 10000, rmsEps: Float = 1e-5, tiedEmbeddings: Bool = true,
                contextLength: Int = 2048, attentionBias: Bool = false, ropeScaling: RopeScaling? = nil) {
        self.layers = layers; self.width = width; self.heads = heads; self.kvHeads = kvHeads
        self.headDim = headDim ?? width / heads
        self.ffnWidth = ffnWidth; self.vocab = vocab; self.ropeTheta = ropeTheta; self.rmsEps = rmsEps
        self.tiedEmbeddings = tiedEmbeddings; self.contextLength = contextLength
        self.attentionBias = attentionBias; self.ropeScaling = ropeScaling
    }

    /// Checks the relations the forward pass relies on; the message names the field.
    public func validate() throws(EngineError) {
        for (name, v) in [("layers", layers), ("width", width), ("heads", heads), ("kvHeads", kvHeads),
                          ("headDim", headDim), ("ffnWidth", ffnWidth), ("vocab", vocab), ("contextLength", contextLength)] where v <= 0 {
            throw .invalidConfig("\(name) must be positive, found \(v)")
        }
        if heads % kvHeads != 0 { throw .invalidConfig("heads (\(heads)) must be a multiple of kvHeads (\(kvHeads))") }
        if headDim % 2 != 0 { throw .invalidConfig("headDim must be even for rotary embeddings, found \(headDim)") }
        for (name, v) in [("ropeTheta", ropeTheta), ("rmsEps", rmsEps)] where !(v.isFinite && v > 0) {
            throw .invalidConfig("\(name) must be a positive finite number, found \(v)")
        }
        if let s = ropeScaling { try s.validate() }
        // The rotary table holds every position; no model Charter runs has more than 2^20.
        if contextLength > Self.longestContext {
            throw .invalidConfig("contextLength \(contextLength) is more than \(Self.longestContext)")
        }
    }

    public static let longestContext = 1 << 20

    /// Bytes of the model's float32 weights, counted without building its layout (a Double, so
    /// that absurd sizes from a file compare instead of overflowing).
    public var weightBytes: Double {
        let C = Double(width), F = Double(ffnWidth), q = Double(heads) * Double(headDim), kv = Double(kvHeads) * Double(headDim)
        let perLayer = C * (2 + 2 * q + 2 * kv + 3 * F) // two norms, q and o, k and v, gate, up and down
            + (attentionBias ? q + 2 * kv : 0)
        return 4 * (Double(layers) * perLayer + Double(vocab) * C * (tiedEmbeddings ? 1 : 2) + C)
    }

    /// Bytes of the key/value cache of one sequence of `tokens` tokens.
    public func cacheBytes(tokens: Int) -> Double {
        4 * 2 * Double(layers) * Double(kvHeads) * Double(headDim) * Double(tokens)
    }

    /// Refuses a model whose float32 weights would not fit in this machine's memory.
    public func checkFitsInMemory() throws(EngineError) {
        try MemoryBudget.check(weightBytes, for: "a model of \(layers) layers, width \(width), vocabulary \(vocab)")
    }

    /// SmolLM2-135M: what the GGUF metadata of the default model says.
    public static let smolLM2_135M = ModelConfig(
        layers: 30, width: 576, heads: 9, kvHeads: 3, headDim: 64, ffnWidth: 1536, vocab: 49152,
        ropeTheta: 100000, rmsEps: 1e-5, tiedEmbeddings: true, contextLength: 8192)
}

public enum EngineError: Error, Equatable, CustomStringConvertible {
    case invalidConfig(String)
    case invalidInput(String)
    case tooLarge(String)

    public var description: String {
        switch self {
        case .invalidConfig(let s): return "invalid model config: \(s)"
        case .invalidInput(let s): return "invalid input: \(s)"
        case .tooLarge(let s): return s
        }
    }
}
