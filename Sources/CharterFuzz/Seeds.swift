import Engine
import Formats
import Foundation
import Tokenizer

/// The model-file seeds of the corpora (fuzz/corpus/), written by scripts/make-fuzz-seeds.sh: a
/// one-layer model with the first 400 tokens of SmolLM2's vocabulary, small enough for libFuzzer to
/// mutate (its inputs stay under 64 KB).
enum Seeds {
    static func write(into folder: URL) throws {
        let full = FuzzTarget.tokenizer, n = 400
        let merges = full.merges.filter { a, b in [a, b, a + b].allSatisfy { full.id(of: $0).map { $0 < n } ?? false } }
        let tok = try BPETokenizer(tokens: Array(full.tokens.prefix(n)), merges: merges.map { "\($0.0) \($0.1)" },
                                   types: full.types.prefix(n).map(\.rawValue), bos: full.bos, eos: full.eos, pad: full.pad, unknown: full.unknown)
        let config = ModelConfig(layers: 1, width: 8, heads: 2, kvHeads: 1, ffnWidth: 16, vocab: n, ropeTheta: 10000, contextLength: 64)
        let weights = ModelWeights.random(config: config, seed: 1, std: 0.02)
        func put(_ target: FuzzTarget, _ name: String, _ data: Data) throws {
            let dir = folder.appendingPathComponent(target.rawValue)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try data.write(to: dir.appendingPathComponent(name))
        }
        for type in [GGMLType.f32, .f16] {
            try put(.gguf, "tiny-\(type).gguf", GGUFModel.writer(weights: weights, tokenizer: tok, name: "tiny", type: type).encoded())
        }
        for type in [SafetensorsFile.StorageType.f32, .bf16] {
            try put(.safetensors, "tiny-\(type.rawValue).safetensors", HFModel.safetensors(weights, as: type))
        }
        try put(.hfConfig, "config.json", HFModel.configJSON(config, bos: tok.bos, eos: tok.eos))
        try put(.tokenizerJSON, "tokenizer.json", HFTokenizer.tokenizerJSON(tok))
    }
}
