import Foundation
import Tokenizer

/// Hugging Face `tokenizer.json` + `tokenizer_config.json` for a byte-level BPE tokenizer with
/// SmolLM2's pre-tokenizer (digits split one by one, then GPT-2's byte-level pattern), so that
/// `transformers.AutoTokenizer.from_pretrained(folder)` loads what Charter saves, and back.
public enum HFTokenizer {
    public static func tokenizerJSON(_ t: BPETokenizer) -> Data {
        let added: [[String: Any]] = t.tokens.indices.filter { t.isSpecial(Int32($0)) }.map {
            ["id": $0, "content": t.tokens[$0], "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true]
        }
        // JSONSerialization sorts keys with ICU collation, seconds for a 49k vocabulary (and a run
        // writes its policy at every checkpoint): vocab and merges are written here, the vocab in
        // id order as the tokenizers library writes it, and spliced in where the placeholders are.
        var seen = Set<String>(), entries: [String] = []
        for (i, token) in t.tokens.enumerated() where seen.insert(token).inserted { entries.append(quoted(token) + ":" + String(i)) }
        let vocab = "{" + entries.joined(separator: ",") + "}"
        let merges = "[" + t.merges.map { "[" + quoted($0.0) + "," + quoted($0.1) + "]" }.joined(separator: ",") + "]"
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        let json: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added, "normalizer": NSNull(),
            "pre_tokenizer": ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel]],
            "post_processor": byteLevel, "decoder": byteLevel,
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": "@charter:vocab@", "merges": "@charter:merges@"] as [String: Any],
        ]
        let text = String(decoding: try! JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self)
        return Data(text.replacingOccurrences(of: quoted("@charter:vocab@"), with: vocab)
            .replacingOccurrences(of: quoted("@charter:merges@"), with: merges).utf8)
    }

    /// A JSON string literal.
    public static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    public static func configJSON(_ t: BPETokenizer, contextLength: Int, chatTemplate: String?) -> Data {
        func name(_ id: Int32?) -> Any { id.map { t.tokens[Int($0)] } ?? NSNull() }
        var decoder: [String: Any] = [:]
        for i in t.tokens.indices where t.isSpecial(Int32(i)) {
            decoder["\(i)"] = ["content": t.tokens[i], "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true]
        }
        var json: [String: Any] = [
            "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": false, "clean_up_tokenization_spaces": false,
            "model_max_length": contextLength, "bos_token": name(t.bos), "eos_token": name(t.eos),
            "pad_token": name(t.pad), "unk_token": name(t.unknown), "added_tokens_decoder": decoder,
        ]
        if let chatTemplate { json["chat_template"] = chatTemplate }
        return try! JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
    }

    /// Reads tokenizer.json (+ tokenizer_config.json for bos/eos/pad/unk) from a folder.
    public static func load(_ folder: URL) throws -> BPETokenizer {
        let url = folder.appendingPathComponent("tokenizer.json")
        guard let data = try? Data(contentsOf: url) else { throw FormatError("\(url.path): cannot read") }
        guard let j = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let model = j["model"] as? [String: Any], (model["type"] as? String) == "BPE",
              let vocab = model["vocab"] as? [String: Int] else {
            throw FormatError("\(url.path): expected a BPE model with a vocab")
        }
        let merges: [String] = (model["merges"] as? [Any] ?? []).compactMap {
            if let s = $0 as? String { return s }
            if let pair = $0 as? [String], pair.count == 2 { return pair[0] + " " + pair[1] }
            return nil
        }
        let added = j["added_tokens"] as? [[String: Any]] ?? []
        // Ids index an array: each must fall inside the vocabulary and added tokens together, so a
        // corrupted id can neither trap nor ask for a billion empty tokens.
        let idLimit = vocab.count + added.count
        func checked(_ id: Int, _ token: String) throws -> Int {
            guard (0..<idLimit).contains(id) else {
                throw FormatError("\(url.path): token \(shown(token)) has id \(id), outside 0..<\(idLimit) (the vocabulary and added tokens)")
            }
            return id
        }
        var tokens = [String](repeating: "", count: try vocab.map { try checked($0.value, $0.key) }.max().map { $0 + 1 } ?? 0)
        var types = [Int32](repeating: 1, count: tokens.count)
        for (token, id) in vocab { tokens[id] = token }
        for added in added {
            guard let id = added["id"] as? Int, let content = added["content"] as? String else { continue }
            if try checked(id, content) >= tokens.count { tokens += [String](repeating: "", count: id + 1 - tokens.count); types += [Int32](repeating: 1, count: id + 1 - types.count) }
            tokens[id] = content
            types[id] = (added["special"] as? Bool) == true ? 3 : 4
        }
        do { try BPEMerges.checkPresent(merges, tokens: tokens, types: types) } catch { throw FormatError("\(url.path): \(error)") }
        var special: [String: Int32] = [:]
        if let c = try? Data(contentsOf: folder.appendingPathComponent("tokenizer_config.json")),
           let config = (try? JSONSerialization.jsonObject(with: c)) as? [String: Any] {
            for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
                let name = (config[key] as? String) ?? ((config[key] as? [String: Any])?["content"] as? String)
                if let name, let id = tokens.firstIndex(of: name) { special[key] = Int32(id) }
            }
        }
        return try BPETokenizer(tokens: tokens, merges: merges, types: types, bos: special["bos_token"],
                                eos: special["eos_token"], pad: special["pad_token"], unknown: special["unk_token"])
    }
}

enum BPEMerges {
    /// A BPE vocabulary whose tokens span several symbols cannot produce them without merges: an
    /// empty merge list means a damaged file, not a tokenizer.
    static func checkPresent(_ merges: [String], tokens: [String], types: [Int32]) throws(FormatError) {
        guard merges.isEmpty else { return }
        let long = tokens.indices.filter { ($0 < types.count ? types[$0] : 1) == 1 && tokens[$0].unicodeScalars.count > 1 }
        guard long.isEmpty else {
            throw FormatError("the merge list is empty, but \(long.count) tokens (such as \(shown(tokens[long[0]]))) need merges to be produced")
        }
    }
}
