import Tokenizer

/// A small byte-level vocabulary: three special tokens, the 256 byte symbols, four merges.
enum TestVocabulary {
    static func make() throws -> BPETokenizer {
        // GPT-2's byte-to-character map, rebuilt here from its definition.
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var chars = printable
        var extra = 0
        for b in 0..<256 where !printable.contains(b) { printable.append(b); chars.append(256 + extra); extra += 1 }
        let byteChars = zip(printable, chars).sorted { $0.0 < $1.0 }.map { String(Character(Unicode.Scalar(UInt32($0.1))!)) }
        let merges = ["h e", "l l", "he ll", "hell o"]
        let tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + byteChars + ["he", "ll", "hell", "hello"]
        let types = [Int32](repeating: 3, count: 3) + [Int32](repeating: 1, count: tokens.count - 3)
        return try BPETokenizer(tokens: tokens, merges: merges, types: types, bos: 1, eos: 2, pad: 2, unknown: 0)
    }
}
