import Engine
import Formats
import Foundation
import XCTest

/// Model files whose metadata lies (issue 14, items 1 and 3): each is refused with one line before
/// any weight is allocated, never accepted, never a crash or an allocation failure.
final class HostileModelFileTests: XCTestCase {
    let config = ModelConfig(layers: 2, width: 32, heads: 4, kvHeads: 2, ffnWidth: 48, vocab: 263, ropeTheta: 10000, contextLength: 64)

    func writer() throws -> GGUFWriter {
        let tok = try TestVocabulary.make()
        XCTAssertEqual(tok.vocabSize, config.vocab)
        return GGUFModel.writer(weights: ModelWeights.random(config: config, seed: 3), tokenizer: tok, name: "tiny")
    }

    func file(_ data: Data, _ ext: String = "gguf") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("charter-hostile-\(UUID()).\(ext)")
        try data.write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// The GGUF with one metadata value replaced.
    func gguf(_ key: String, _ value: GGUFValue) throws -> URL {
        var g = try writer()
        let i = try XCTUnwrap(g.metadata.firstIndex { $0.0 == key }, key)
        g.metadata[i].1 = value
        return try file(g.encoded())
    }

    func expectRefused(_ load: @autoclosure () throws -> Any, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try load(), file: file, line: line) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(expected), "\(text)\n  does not contain: \(expected)", file: file, line: line)
            XCTAssertFalse(text.contains("\n"), "one line: \(text)", file: file, line: line)
        }
    }

    func testTheUnchangedFileLoads() throws {
        XCTAssertEqual(try GGUFModel.load(try file(try writer().encoded())).config, config)
    }

    /// The sizes the probes used: each would have asked for gigabytes (or trapped) before.
    func testSizesFromMetadataAreCheckedAgainstTheTensorsBeforeAllocating() throws {
        for (key, value, expected) in [
            ("llama.embedding_length", GGUFValue.uint32(100_000), "tensor \"token_embd.weight\" has shape [263, 32], the metadata implies [263, 100000]"),
            ("llama.feed_forward_length", .uint32(100_000), "tensor \"blk.0.ffn_gate.weight\" has shape [48, 32], the metadata implies [100000, 32]"),
            ("llama.vocab_size", .uint32(100_000), "tensor \"token_embd.weight\" has shape [263, 32], the metadata implies [100000, 32]"),
            ("llama.attention.head_count", .uint32(2), "tensor \"blk.0.attn_q.weight\" has shape [32, 32], the metadata implies [16, 32]"),
            ("llama.attention.head_count", .uint32(100_000), "tensor \"blk.0.attn_q.weight\" has shape [32, 32], the metadata implies [800000, 32]"),
            ("llama.rope.dimension_count", .uint32(100_000), "tensor \"blk.0.attn_q.weight\" has shape [32, 32], the metadata implies [400000, 32]"),
            ("llama.block_count", .uint32(1_000_000_000), "llama.block_count is 1000000000, but the file has only 20 tensors (9 per block)"),
            ("llama.block_count", .uint32(1), "tensor \"blk.1.attn_k.weight\" belongs to block 1, but llama.block_count is 1"),
            ("llama.context_length", .uint64(1 << 40), "contextLength 1099511627776 is more than 1048576"),
        ] {
            expectRefused(try GGUFModel.load(try gguf(key, value)), expected)
        }
    }

    func testRopeBaseAndNormEpsilonMustBePositiveAndFinite() throws {
        for bad: Float in [.nan, .infinity, 0, -1] {
            expectRefused(try GGUFModel.load(try gguf("llama.rope.freq_base", .float32(bad))), "ropeTheta must be a positive finite number, found \(bad)")
            expectRefused(try GGUFModel.load(try gguf("llama.attention.layer_norm_rms_epsilon", .float32(bad))), "rmsEps must be a positive finite number, found \(bad)")
        }
    }

    func testOptionalKeysOfTheWrongTypeAreErrorsNotDefaults() throws {
        expectRefused(try GGUFModel.load(try gguf("llama.rope.freq_base", .string("1e4"))), "metadata \"llama.rope.freq_base\" at byte 0: expected a number")
        expectRefused(try GGUFModel.load(try gguf("llama.attention.head_count_kv", .float32(2))), "metadata \"llama.attention.head_count_kv\" at byte 0: expected an integer")
    }

    func testATensorWhoseTypeChangedNoLongerMeetsTheNext() throws {
        var g = try writer()
        g.tensors[0].type = .f16 // the bytes stay float32: twice what F16 extents take
        let url = try file(g.encoded())
        expectRefused(try GGUFFile(url: url), "GGUF tensor \"output_norm.weight\" offset at byte ")
        expectRefused(try GGUFFile(url: url), ": offset 33664, but the tensors before it end at 16832; a wrong type or extent?")
    }

    func testTokenizerValuesOutsideTheirRangeAreErrors() throws {
        expectRefused(try GGUFModel.load(try gguf("tokenizer.ggml.merges", .array([]))),
                      "the merge list is empty, but 4 tokens (such as \"he\") need merges to be produced")
        expectRefused(try GGUFModel.load(try gguf("tokenizer.ggml.bos_token_id", .uint64(1 << 40))), "bos id -1 is outside the vocabulary")
        var types = [GGUFValue](repeating: .int64(1), count: config.vocab)
        types[5] = .int64(1 << 40)
        expectRefused(try GGUFModel.load(try gguf("tokenizer.ggml.token_type", .array(types))), "token 5 has unknown type -1")
    }

    /// Names of binary garbage are shown capped and escaped, never as raw bytes.
    func testBinaryNamesAreCappedAndEscapedInErrors() throws {
        let garbage = String(decoding: (0..<4000).map { UInt8(truncatingIfNeeded: $0 * 7) }, as: UTF8.self)
        var twice = try writer()
        twice.add(garbage, .uint8(1)); twice.add(garbage, .uint8(2))
        for url in [try gguf("general.architecture", .string(garbage)), try file(twice.encoded())] {
            XCTAssertThrowsError(try GGUFModel.load(url)) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains("... (") && text.contains(" bytes)"), text)
                XCTAssertLessThan(text.utf8.count, 600, text)
                XCTAssertFalse(text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }, text)
            }
        }
    }

    // MARK: Hugging Face folders

    func folder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("charter-hostile-\(UUID())")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        let model = try GGUFModel.load(try file(try writer().encoded()))
        try HFModel.safetensors(model.weights).write(to: url.appendingPathComponent("model.safetensors"))
        try HFModel.configJSON(config, bos: 1, eos: 2).write(to: url.appendingPathComponent("config.json"))
        try HFTokenizer.tokenizerJSON(model.tokenizer).write(to: url.appendingPathComponent("tokenizer.json"))
        return url
    }

    /// The folder's JSON file with one key changed (nil: removed).
    func edit(_ folder: URL, _ name: String, _ change: (inout [String: Any]) -> Void) throws {
        let url = folder.appendingPathComponent(name)
        var j = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        change(&j)
        try JSONSerialization.data(withJSONObject: j).write(to: url)
    }

    func testConfigJSONSizesAreCheckedAgainstTheTensors() throws {
        for (key, value, expected) in [
            ("hidden_size", 100_000 as Any, "model.safetensors: tensor \"model.embed_tokens.weight\" has shape [263, 32], the metadata implies [263, 100000]"),
            ("num_hidden_layers", 1_000_000_000, "num_hidden_layers is 1000000000, but the file has only 20 tensors"),
            ("num_hidden_layers", 1, "tensor \"model.layers.1.input_layernorm.weight\" belongs to block 1, but num_hidden_layers is 1"),
            ("intermediate_size", 100_000, "the metadata implies [100000, 32]"),
            ("rms_norm_eps", 0, "rmsEps must be a positive finite number, found 0.0"),
            ("rope_theta", -5, "ropeTheta must be a positive finite number, found -5.0"),
            ("rope_theta", "10000", "\"rope_theta\" must be a number"),
            ("num_key_value_heads", 2.5, "\"num_key_value_heads\" must be an integer"),
            ("head_dim", true, "\"head_dim\" must be an integer"),
            ("tie_word_embeddings", "yes", "\"tie_word_embeddings\" must be true or false"),
            ("max_position_embeddings", 1e30, "\"max_position_embeddings\" must be an integer"),
        ] {
            let f = try folder()
            try edit(f, "config.json") { $0[key] = value }
            expectRefused(try ModelLoader.load(f.path), expected)
        }
    }

    func testTokenizerJSONIdsMustFallInsideTheVocabulary() throws {
        for (id, expected) in [(-5, "token \"he\" has id -5, outside 0..<266"), (1 << 40, "has id 1099511627776, outside 0..<266")] {
            let f = try folder()
            try edit(f, "tokenizer.json") { j in
                var model = j["model"] as! [String: Any], vocab = model["vocab"] as! [String: Int]
                vocab["he"] = id
                model["vocab"] = vocab; j["model"] = model
            }
            expectRefused(try ModelLoader.load(f.path), expected)
        }
        let f = try folder()
        try edit(f, "tokenizer.json") { j in
            var model = j["model"] as! [String: Any]
            model["merges"] = [String]()
            j["model"] = model
        }
        expectRefused(try ModelLoader.load(f.path), "the merge list is empty, but 4 tokens")
    }

    func testATokenizerLargerThanTheEmbeddingIsRefused() throws {
        let f = try folder()
        try edit(f, "tokenizer.json") { j in
            var added = j["added_tokens"] as! [[String: Any]]
            added.append(["id": 263, "content": "<extra>", "special": true])
            j["added_tokens"] = added
        }
        expectRefused(try ModelLoader.load(f.path), "the tokenizer has 264 tokens, the embedding only 263 rows")
    }

    // MARK: safetensors

    /// A file with a header padded by spaces, so that a length one short still parses.
    func safetensors(headerLengthChange: Int = 0, offsets: [[Int]] = [[0, 8], [8, 16]], dataBytes: Int = 16) -> Data {
        let header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":\(offsets[0])},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":\(offsets[1])}}        "
        var out = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count + headerLengthChange).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: Array(header.utf8))
        out.append(contentsOf: [UInt8](repeating: 0x3f, count: dataBytes))
        return out
    }

    func testSafetensorsTensorsMustTileTheDataSection() throws {
        XCTAssertEqual(try SafetensorsFile(data: safetensors()).floats("b")?.count, 2)
        expectRefused(try SafetensorsFile(data: safetensors(headerLengthChange: -1)),
                      "the tensors end at data offset 16, but the data section has 17 bytes; header length wrong?")
        expectRefused(try SafetensorsFile(data: safetensors(offsets: [[0, 8], [4, 12]])),
                      "tensor \"b\" at data offset 4 overlaps the tensor before it, which ends at 8")
        expectRefused(try SafetensorsFile(data: safetensors(offsets: [[0, 8], [12, 20]], dataBytes: 20)),
                      "data offsets 8..<12 belong to no tensor")
        expectRefused(try SafetensorsFile(data: safetensors(dataBytes: 20)), "the data section has 20 bytes")
    }

    // MARK: sizes a configuration asks for

    func testTinySpecsAndLoRARanksBeyondTheMachineOrTheModelAreRefused() throws {
        expectRefused(try TinyModel.make(spec: "tiny:width=100000,heads=4,kv_heads=2"), "more than this machine's")
        expectRefused(try LoRAAdapters(config: LoRAConfig(rank: 100_000), model: config),
                      "LoRA rank 100000 is above 32, the smaller side of the q projection (32 x 32)")
        XCTAssertNoThrow(try LoRAAdapters(config: LoRAConfig(rank: 16), model: config))
    }
}
