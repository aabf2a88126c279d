import Engine

/// A tiny model of SmolLM2's architecture (grouped-query attention, tied embeddings), built in code.
enum TinyModel {
    static let config = ModelConfig(layers: 2, width: 64, heads: 4, kvHeads: 2, ffnWidth: 160, vocab: 256,
                                    ropeTheta: 10000, rmsEps: 1e-5, tiedEmbeddings: true, contextLength: 128)

    static func make(seed: UInt64 = 7) throws -> Transformer {
        try Transformer(weights: ModelWeights.random(config: config, seed: seed))
    }

    static func tokens(_ count: Int, seed: UInt64) -> [Int32] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in Int32(rng.next() % UInt64(config.vocab)) }
    }

    static func maxDifference(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Float {
        zip(a, b).map { abs($0 - $1) }.max() ?? 0
    }
}
