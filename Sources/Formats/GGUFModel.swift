import Engine
import Foundation
import Tokenizer

/// A model ready to run: weights in the engine's layout and the tokenizer that goes with them.
public struct LoadedModel: @unchecked Sendable {
    public let weights: ModelWeights
    public let tokenizer: BPETokenizer
    public let source: URL
    /// The Jinja chat template the model came with, if any (kept for saving).
    public var chatTemplate: String?
    public var config: ModelConfig { weights.config }

    public init(weights: ModelWeights, tokenizer: BPETokenizer, source: URL, chatTemplate: String? = nil) {
        self.weights = weights; self.tokenizer = tokenizer; self.source = source; self.chatTemplate = chatTemplate
    }
}

/// Llama-architecture GGUF files into the engine.
///
/// The GGUF converter permutes the rows of attn_q and attn_k so that llama.cpp can rotate adjacent
/// pairs (2i, 2i+1); the engine rotates half-split pairs (i, i + D/2) like Hugging Face, so those
/// rows are put back here: within each head, file row 2i + j is engine row j * D/2 + i.
public enum GGUFModel {
    public static func load(_ url: URL) throws -> LoadedModel {
        let file = try GGUFFile(url: url)
        let config = try config(of: file)
        do {
            try tensorCheck.check(config, tensorNames: file.tensors.map(\.name), shape: { file.tensor($0)?.shape })
        } catch { throw FormatError("GGUF \(url.lastPathComponent): \(error)") }
        let weights = ModelWeights(config: config)
        for (engineName, fileName) in tensorNames(config) {
            let info = file.tensor(fileName)!, slot = weights.layout.slot(engineName)!
            let dst = weights.base + slot.offset
            file.read(info, into: dst)
            if fileName.hasSuffix("attn_q.weight") || fileName.hasSuffix("attn_k.weight") {
                permuteRows(dst, rows: slot.shape[0], cols: slot.shape[1], headDim: config.headDim, toHalfSplit: true)
            }
        }
        return LoadedModel(weights: weights, tokenizer: try tokenizer(of: file), source: url,
                           chatTemplate: file.metadata["tokenizer.chat_template"]?.stringValue)
    }

    static var tensorCheck: TensorCheck {
        TensorCheck(names: tensorNames, block: { TensorCheck.blockNumber($0, after: "blk.") }, blockKey: "llama.block_count")
    }

    public static func config(of file: GGUFFile) throws(GGUFError) -> ModelConfig {
        let arch = try file.string("general.architecture")
        guard arch == "llama" else {
            throw GGUFError(field: "metadata \"general.architecture\"", offset: 0, problem: "\(shown(arch)) is not supported (llama)")
        }
        let width = try file.int("llama.embedding_length"), heads = try file.int("llama.attention.head_count")
        var vocab = try file.optionalInt("llama.vocab_size") ?? 0
        if vocab == 0 { vocab = try file.array("tokenizer.ggml.tokens").count }
        let headDim = try file.optionalInt("llama.rope.dimension_count") ?? width / max(heads, 1)
        let config = ModelConfig(
            layers: try file.int("llama.block_count"), width: width, heads: heads,
            kvHeads: try file.optionalInt("llama.attention.head_count_kv") ?? heads, headDim: headDim,
            ffnWidth: try file.int("llama.feed_forward_length"), vocab: vocab,
            ropeTheta: try file.optionalFloat("llama.rope.freq_base") ?? 10000,
            rmsEps: try file.float("llama.attention.layer_norm_rms_epsilon"),
            tiedEmbeddings: file.tensor("output.weight") == nil,
            contextLength: try file.int("llama.context_length"))
        do { try config.validate() } catch {
            throw GGUFError(field: "metadata", offset: 0, problem: error.description)
        }
        return config
    }

    /// Engine tensor name -> GGUF tensor name.
    public static func tensorNames(_ config: ModelConfig) -> [(String, String)] {
        var names = [("embed", "token_embd.weight"), ("final_norm", "output_norm.weight")]
        if !config.tiedEmbeddings { names.append(("lm_head", "output.weight")) }
        for l in 0..<config.layers {
            for (e, g) in [("attn_norm", "attn_norm"), ("wq", "attn_q"), ("wk", "attn_k"), ("wv", "attn_v"),
                           ("wo", "attn_output"), ("ffn_norm", "ffn_norm"), ("w_gate", "ffn_gate"),
                           ("w_up", "ffn_up"), ("w_down", "ffn_down")] {
                names.append(("layers.\(l).\(e)", "blk.\(l).\(g).weight"))
            }
        }
        return names
    }

    /// Moves rows between llama.cpp's interleaved rotary layout and the half-split one, head by head.
    public static func permuteRows(_ w: UnsafeMutablePointer<Float>, rows: Int, cols: Int, headDim: Int, toHalfSplit: Bool) {
        let half = headDim / 2
        let copy = [Float](UnsafeBufferPointer(start: w, count: rows * cols))
        copy.withUnsafeBufferPointer { src in
            for h in 0..<rows / headDim {
                for i in 0..<half {
                    for j in 0..<2 {
                        let interleaved = h * headDim + 2 * i + j, split = h * headDim + j * half + i
                        let (from, to) = toHalfSplit ? (interleaved, split) : (split, interleaved)
                        (w + to * cols).update(from: src.baseAddress! + from * cols, count: cols)
                    }
                }
            }
        }
    }

    public static func tokenizer(of file: GGUFFile) throws -> BPETokenizer {
        let model = try file.string("tokenizer.ggml.model")
        guard model == "gpt2" else {
            throw GGUFError(field: "metadata \"tokenizer.ggml.model\"", offset: 0, problem: "\(shown(model)) is not supported (gpt2 byte-level BPE)")
        }
        func strings(_ key: String) throws -> [String] {
            try file.array(key).enumerated().map { i, v in
                guard let s = v.stringValue else { throw GGUFError(field: "metadata \"\(key)\"[\(i)]", offset: 0, problem: "expected a string") }
                return s
            }
        }
        // Values outside Int32 become -1, which the tokenizer refuses with the token it belongs to.
        let types: [Int32]? = try file.metadata["tokenizer.ggml.token_type"].map { _ in
            try file.array("tokenizer.ggml.token_type").map { $0.int.flatMap { Int32(exactly: $0) } ?? -1 }
        }
        func id(_ key: String) throws -> Int32? { try file.optionalInt(key).map { Int32(exactly: $0) ?? -1 } }
        let tokens = try strings("tokenizer.ggml.tokens"), merges = try strings("tokenizer.ggml.merges")
        do { try BPEMerges.checkPresent(merges, tokens: tokens, types: types ?? tokens.map { _ in 1 }) } catch {
            throw GGUFError(field: "metadata \"tokenizer.ggml.merges\"", offset: 0, problem: error.description)
        }
        return try BPETokenizer(tokens: tokens, merges: merges,
                                types: types, bos: try id("tokenizer.ggml.bos_token_id"), eos: try id("tokenizer.ggml.eos_token_id"),
                                pad: try id("tokenizer.ggml.padding_token_id"), unknown: try id("tokenizer.ggml.unknown_token_id"))
    }
}

extension GGUFModel {
    /// A GGUF file llama.cpp can load: llama metadata, the tokenizer, every tensor as F32 or F16,
    /// attn_q/attn_k rows permuted back to llama.cpp's interleaved rotary layout.
    public static func writer(weights: ModelWeights, tokenizer: BPETokenizer, name: String, type: GGMLType = .f32) -> GGUFWriter {
        let c = weights.config
        var g = GGUFWriter()
        g.add("general.architecture", .string("llama"))
        g.add("general.name", .string(name))
        g.add("general.file_type", .uint32(type == .f32 ? 0 : 1))
        g.add("llama.block_count", .uint32(UInt32(c.layers)))
        g.add("llama.context_length", .uint32(UInt32(c.contextLength)))
        g.add("llama.embedding_length", .uint32(UInt32(c.width)))
        g.add("llama.feed_forward_length", .uint32(UInt32(c.ffnWidth)))
        g.add("llama.attention.head_count", .uint32(UInt32(c.heads)))
        g.add("llama.attention.head_count_kv", .uint32(UInt32(c.kvHeads)))
        g.add("llama.rope.freq_base", .float32(c.ropeTheta))
        g.add("llama.rope.dimension_count", .uint32(UInt32(c.headDim)))
        g.add("llama.attention.layer_norm_rms_epsilon", .float32(c.rmsEps))
        g.add("llama.vocab_size", .uint32(UInt32(c.vocab)))
        g.add("tokenizer.ggml.model", .string("gpt2"))
        g.add("tokenizer.ggml.pre", .string("smollm"))
        g.add("tokenizer.ggml.tokens", .array(tokenizer.tokens.map { .string($0) }))
        g.add("tokenizer.ggml.token_type", .array(tokenizer.types.map { .int32($0.rawValue) }))
        g.add("tokenizer.ggml.merges", .array(tokenizer.merges.map { .string("\($0.0) \($0.1)") }))
        for (key, id) in [("bos", tokenizer.bos), ("eos", tokenizer.eos), ("unknown", tokenizer.unknown), ("padding", tokenizer.pad)] {
            if let id { g.add("tokenizer.ggml.\(key)_token_id", .uint32(UInt32(id))) }
        }
        g.add("tokenizer.ggml.add_bos_token", .bool(false))
        for (engineName, fileName) in tensorNames(c) {
            let slot = weights.layout.slot(engineName)!
            var values = Array(weights.view(engineName)!)
            if fileName.hasSuffix("attn_q.weight") || fileName.hasSuffix("attn_k.weight") {
                values.withUnsafeMutableBufferPointer {
                    permuteRows($0.baseAddress!, rows: slot.shape[0], cols: slot.shape[1], headDim: c.headDim, toHalfSplit: false)
                }
            }
            // Norm gains stay F32 in an F16 file, as llama.cpp's converter does.
            g.addTensor(fileName, shape: slot.shape, values: values, type: slot.shape.count == 1 ? .f32 : type)
        }
        return g
    }
}
