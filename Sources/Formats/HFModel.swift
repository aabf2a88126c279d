import Engine
import Foundation
import Tokenizer

/// Hugging Face model folders: config.json + model.safetensors with the standard Llama names, of
/// the Llama (rope scaling `llama3` included) and Qwen2 (q, k, v biases) architectures.
/// Hugging Face stores attn_q/attn_k in the half-split rotary layout the engine uses, so tensors
/// are copied as they are.
public enum HFModel {
    /// Engine tensor name -> Hugging Face tensor name.
    public static func tensorNames(_ config: ModelConfig) -> [(String, String)] {
        var names = [("embed", "model.embed_tokens.weight"), ("final_norm", "model.norm.weight")]
        if !config.tiedEmbeddings { names.append(("lm_head", "lm_head.weight")) }
        for l in 0..<config.layers {
            let p = "model.layers.\(l)."
            names += [("attn_norm", "input_layernorm"), ("wq", "self_attn.q_proj"), ("wk", "self_attn.k_proj"),
                      ("wv", "self_attn.v_proj"), ("wo", "self_attn.o_proj"), ("ffn_norm", "post_attention_layernorm"),
                      ("w_gate", "mlp.gate_proj"), ("w_up", "mlp.up_proj"), ("w_down", "mlp.down_proj")]
                .map { ("layers.\(l).\($0.0)", p + $0.1 + ".weight") }
            if config.attentionBias {
                names += [("bq", "q_proj"), ("bk", "k_proj"), ("bv", "v_proj")].map { ("layers.\(l).\($0.0)", p + "self_attn.\($0.1).bias") }
            }
        }
        return names
    }

    public static func config(at folder: URL) throws -> ModelConfig {
        let url = folder.appendingPathComponent("config.json")
        guard let data = try? Data(contentsOf: url) else { throw FormatError("\(url.path): cannot read") }
        guard let j = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw FormatError("\(url.path): not a JSON object")
        }
        func int(_ key: String) throws -> Int {
            guard let v = try optionalInt(key) else { throw FormatError("\(url.path): \"\(key)\" must be an integer") }
            return v
        }
        // Optional keys: absent means the default; present with the wrong type is an error, not
        // silently the default.
        func optional<T>(_ key: String, in object: [String: Any]? = nil, _ type: String, _ read: (Any) -> T?) throws -> T? {
            guard let raw = (object ?? j)[key], !(raw is NSNull) else { return nil }
            guard let v = read(raw) else { throw FormatError("\(url.path): \"\(key)\" must be \(type)") }
            return v
        }
        func optionalInt(_ key: String) throws -> Int? {
            try optional(key, "an integer") { JSONValue.number($0).flatMap { Int(exactly: $0) } }
        }
        func number(_ key: String, in object: [String: Any]? = nil) throws -> Double? {
            try optional(key, in: object, "a number", JSONValue.number)
        }
        let type = try optional("model_type", "a string", { $0 as? String }) ?? "llama"
        guard ["llama", "qwen2"].contains(type) else {
            throw FormatError("\(url.path): model_type \(shown(type)) is not supported (llama, qwen2)")
        }
        // Llama's attention_bias puts biases on all four projections, Qwen2 has them on q, k, v only.
        if type == "llama", try optional("attention_bias", "true or false", JSONValue.bool) == true {
            throw FormatError("\(url.path): attention_bias true (biases on every attention projection) is not supported")
        }
        if type == "qwen2", try optional("use_sliding_window", "true or false", JSONValue.bool) == true {
            throw FormatError("\(url.path): use_sliding_window true is not supported")
        }
        let width = try int("hidden_size"), heads = try int("num_attention_heads")
        // transformers 5 puts the rope settings under rope_parameters; older configs have rope_theta
        // at the top and the scaling under rope_scaling.
        let ropeParameters = try optional("rope_parameters", "an object") { $0 as? [String: Any] }
        let theta = try number("rope_theta") ?? number("rope_theta", in: ropeParameters) ?? 10000
        let scaling = try ropeScaling(ropeParameters ?? optional("rope_scaling", "an object") { $0 as? [String: Any] }, path: url.path)
        let config = ModelConfig(
            layers: try int("num_hidden_layers"), width: width, heads: heads,
            kvHeads: try optionalInt("num_key_value_heads") ?? heads, headDim: try optionalInt("head_dim") ?? width / max(heads, 1),
            ffnWidth: try int("intermediate_size"), vocab: try int("vocab_size"), ropeTheta: Float(theta),
            rmsEps: Float(try number("rms_norm_eps") ?? 1e-6),
            tiedEmbeddings: try optional("tie_word_embeddings", "true or false", JSONValue.bool) ?? false,
            contextLength: try optionalInt("max_position_embeddings") ?? 2048, attentionBias: type == "qwen2", ropeScaling: scaling)
        do { try config.validate() } catch { throw FormatError("\(url.path): \(error)") }
        return config
    }

    /// The rope scaling of a rope_parameters or rope_scaling object: none for the default type,
    /// Llama 3's, and an error naming any other type.
    static func ropeScaling(_ p: [String: Any]?, path: String) throws -> RopeScaling? {
        guard let p else { return nil }
        let type = (p["rope_type"] ?? p["type"]) as? String ?? "default"
        if type == "default" { return nil }
        guard type == "llama3" else { throw FormatError("\(path): rope type \(shown(type)) is not supported (default, llama3)") }
        func number(_ key: String) throws -> Double {
            guard let v = p[key].flatMap(JSONValue.number) else { throw FormatError("\(path): llama3 rope scaling needs \"\(key)\" (a number)") }
            return v
        }
        let context = try number("original_max_position_embeddings")
        guard let original = Int(exactly: context) else { throw FormatError("\(path): original_max_position_embeddings must be an integer") }
        return RopeScaling(factor: try number("factor"), lowFreqFactor: try number("low_freq_factor"),
                           highFreqFactor: try number("high_freq_factor"), originalContext: original)
    }

    /// config.json and model.safetensors of a folder into engine weights.
    public static func loadWeights(_ folder: URL) throws -> ModelWeights {
        let config = try config(at: folder)
        let file = try SafetensorsFile(url: folder.appendingPathComponent("model.safetensors"))
        do {
            try tensorCheck.check(config, tensorNames: Array(file.tensors.keys), shape: { file.tensors[$0]?.shape })
        } catch { throw FormatError("model.safetensors: \(error)") }
        let weights = ModelWeights(config: config)
        for (engineName, hfName) in tensorNames(config) {
            file.read(file.tensors[hfName]!, into: weights.base + weights.layout.slot(engineName)!.offset)
        }
        return weights
    }

    static var tensorCheck: TensorCheck {
        TensorCheck(names: tensorNames, block: { TensorCheck.blockNumber($0, after: "model.layers.") }, blockKey: "num_hidden_layers")
    }

    /// The config.json text for a model.
    public static func configJSON(_ c: ModelConfig, bos: Int32?, eos: Int32?, dtype: SafetensorsFile.StorageType = .f32) -> Data {
        var j: [String: Any] = [
            "architectures": [c.attentionBias ? "Qwen2ForCausalLM" : "LlamaForCausalLM"], "model_type": c.attentionBias ? "qwen2" : "llama", "hidden_act": "silu",
            "hidden_size": c.width, "intermediate_size": c.ffnWidth, "num_attention_heads": c.heads,
            "num_hidden_layers": c.layers, "num_key_value_heads": c.kvHeads, "head_dim": c.headDim,
            "rms_norm_eps": Double(c.rmsEps), "rope_theta": Double(c.ropeTheta), "tie_word_embeddings": c.tiedEmbeddings,
            "vocab_size": c.vocab, "max_position_embeddings": c.contextLength, "attention_bias": false,
            "mlp_bias": false, "torch_dtype": dtype.torchName, "use_cache": true,
        ]
        if c.attentionBias { j["attention_bias"] = nil; j["mlp_bias"] = nil; j["use_sliding_window"] = false }
        if let s = c.ropeScaling {
            j["rope_scaling"] = ["rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.lowFreqFactor,
                                 "high_freq_factor": s.highFreqFactor, "original_max_position_embeddings": s.originalContext]
        }
        if let bos { j["bos_token_id"] = Int(bos) }
        if let eos { j["eos_token_id"] = Int(eos) }
        return try! JSONSerialization.data(withJSONObject: j, options: [.prettyPrinted, .sortedKeys])
    }

    /// model.safetensors bytes for engine weights (float32, standard names).
    public static func safetensors(_ weights: ModelWeights, as type: SafetensorsFile.StorageType = .f32) -> Data {
        let tensors = tensorNames(weights.config).map { engineName, hfName in
            let slot = weights.layout.slot(engineName)!
            return (name: hfName, shape: slot.shape, values: UnsafeBufferPointer(weights.view(engineName)!))
        }
        return SafetensorsFile.encode(tensors, metadata: ["format": "pt"], as: type)
    }
}

/// JSONSerialization hands back true and false as NSNumbers, which `as? Int` turns into 1 and 0:
/// these tell a JSON boolean from a JSON number.
public enum JSONValue {
    public static func isBool(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }
    public static func number(_ v: Any) -> Double? { (v as? NSNumber).flatMap { isBool($0) ? nil : $0.doubleValue } }
    public static func bool(_ v: Any) -> Bool? { (v as? NSNumber).flatMap { isBool($0) ? $0.boolValue : nil } }
}
