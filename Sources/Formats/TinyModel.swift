import Engine
import Foundation
import Tokenizer

/// Small random models of the Llama architecture for tests, demos and examples, with a real
/// model's tokenizer. A spec such as "tiny:layers=2,width=64,seed=1" names one wherever a model path
/// is taken: every process that reads the same spec builds the same weights, so a cluster run on
/// a tiny model needs no file shipped to the workers.
public enum TinyModel {
    public static let defaultTokenizer = DefaultModel.path

    public static func isSpec(_ path: String) -> Bool { path.hasPrefix("tiny:") || path == "tiny" }

    public static func config(layers: Int, width: Int, heads: Int, kvHeads: Int, vocab: Int) throws -> ModelConfig {
        let c = ModelConfig(layers: layers, width: width, heads: heads, kvHeads: kvHeads, ffnWidth: width * 8 / 3 / 8 * 8,
                            vocab: vocab, ropeTheta: 10000, contextLength: 1024)
        try c.validate()
        try c.checkFitsInMemory()
        return c
    }

    /// The model a spec names. Keys: layers (2), width (64), heads (4), kv_heads (2), seed (0),
    /// tokenizer (a model file or folder whose tokenizer to use; default the SmolLM2 GGUF).
    public static func make(spec: String) throws -> LoadedModel {
        var values = ["layers": "2", "width": "64", "heads": "4", "kv_heads": "2", "seed": "0", "tokenizer": defaultTokenizer]
        for item in spec.dropFirst(5).split(separator: ",") where !item.isEmpty {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, values[kv[0]] != nil else {
                throw FormatError("model \"\(spec)\": \"\(item)\" is not one of layers=, width=, heads=, kv_heads=, seed=, tokenizer=")
            }
            values[kv[0]] = kv[1]
        }
        func int(_ key: String) throws -> Int {
            guard let v = Int(values[key]!), v > 0 || (key == "seed" && v == 0) else {
                throw FormatError("model \"\(spec)\": \(key) must be \(key == "seed" ? "a non-negative" : "a positive") integer")
            }
            // Sizes are multiplied together (the feed-forward width, the weights): no size is larger.
            if key != "seed" && v > 1 << 20 { throw FormatError("model \"\(spec)\": \(key) must be at most \(1 << 20)") }
            return v
        }
        let source = try tokenizerSource(values["tokenizer"]!)
        let config = try config(layers: try int("layers"), width: try int("width"), heads: try int("heads"), kvHeads: try int("kv_heads"),
                                vocab: source.tokenizer.vocabSize)
        return LoadedModel(weights: .random(config: config, seed: UInt64(try int("seed")), std: 0.02), tokenizer: source.tokenizer,
                           source: URL(fileURLWithPath: try DefaultModel.locate(values["tokenizer"]!)), chatTemplate: source.template)
    }

    /// The spec with a relative `tokenizer=` path made relative to `folder` (a configuration's).
    public static func spec(_ spec: String, resolvingAgainst folder: (String) -> String) -> String {
        let items = spec.dropFirst(5).split(separator: ",", omittingEmptySubsequences: false).map { item -> String in
            guard item.hasPrefix("tokenizer=") else { return String(item) }
            return "tokenizer=" + folder(String(item.dropFirst(10)))
        }
        return "tiny:" + items.joined(separator: ",")
    }

    /// Only the tokenizer of a GGUF file (no weights read); the whole model of a folder.
    static func tokenizerSource(_ path: String) throws -> (tokenizer: BPETokenizer, template: String?) {
        let path = try DefaultModel.locate(path)
        if path.hasSuffix(".gguf") {
            guard FileManager.default.fileExists(atPath: path) else { throw FormatError("tokenizer model \(path) not found") }
            let file = try GGUFFile(url: URL(fileURLWithPath: path))
            return (try GGUFModel.tokenizer(of: file), file.metadata["tokenizer.chat_template"]?.stringValue)
        }
        let model = try ModelLoader.load(path)
        return (model.tokenizer, model.chatTemplate)
    }
}
