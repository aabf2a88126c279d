import Tokenizer

/// Three specials, the 256 byte symbols, three merges: enough to exercise every tokenizer field.
enum BPETokenizerFixture {
    static func make() throws -> BPETokenizer {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var chars = printable
        var extra = 0
        for b in 0..<256 where !printable.contains(b) { printable.append(b); chars.append(256 + extra); extra += 1 }
        let bytes = zip(printable, chars).sorted { $0.0 < $1.0 }.map { String(Character(Unicode.Scalar(UInt32($0.1))!)) }
        let tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + bytes + ["ab", "abc", "Ġa"]
        return try BPETokenizer(tokens: tokens, merges: ["a b", "ab c", "Ġ a"], types: [3, 3, 3] + [Int32](repeating: 1, count: 259),
                                bos: 1, eos: 2, pad: 2, unknown: 0)
    }
}
