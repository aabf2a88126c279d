import Foundation

/// Byte-level BPE, as GPT-2 and SmolLM2 use it.
///
/// encode: special tokens are cut out of the text first (longest first); the rest is split by the
/// pre-tokenizer, each piece's UTF-8 bytes are spelled in byte-level characters, and adjacent
/// symbols are merged lowest rank first. decode reverses the byte map, so decode(encode(t)) == t
/// for any text whose bytes all have a symbol in the vocabulary (see `TokenizerError.unencodableByte`).
public final class BPETokenizer: @unchecked Sendable {
    public enum TokenType: Int32, Sendable { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }

    public let tokens: [String]
    public let types: [TokenType]
    public let bos: Int32?, eos: Int32?, pad: Int32?, unknown: Int32?
    public let merges: [(String, String)]
    /// The tokens that end an answer: the end-of-sequence token and `<|endoftext|>`, where they exist.
    public var endTokens: [Int32] { [eos, id(of: "<|endoftext|>")].compactMap { $0 } }

    private let byteToken: [Int32?]                 // (256) the single-byte symbol's id, if any
    private let tokenBytes: [[UInt8]?]             // per id: the bytes it stands for (byte-level tokens)
    private let mergeTable: [UInt64: (rank: Int32, id: Int32)]
    private let specials: [(text: [UInt8], id: Int32)] // longest first
    private var cache: [String: [Int32]] = [:]
    private let cacheLock = NSLock()

    public var vocabSize: Int { tokens.count }

    public init(tokens: [String], merges: [String], types: [Int32]? = nil,
                bos: Int32? = nil, eos: Int32? = nil, pad: Int32? = nil, unknown: Int32? = nil) throws(TokenizerError) {
        guard !tokens.isEmpty else { throw .invalidVocabulary("the token list is empty") }
        if let types, types.count != tokens.count {
            throw .invalidVocabulary("\(types.count) token types for \(tokens.count) tokens")
        }
        self.tokens = tokens
        self.types = (types ?? []).isEmpty ? tokens.map { _ in .normal } : try types!.enumerated().map { (i, t) throws(TokenizerError) in
            guard let tt = TokenType(rawValue: t) else { throw .invalidVocabulary("token \(i) has unknown type \(t)") }
            return tt
        }
        for (name, id) in [("bos", bos), ("eos", eos), ("pad", pad), ("unknown", unknown)] {
            if let id, id < 0 || Int(id) >= tokens.count { throw .invalidVocabulary("\(name) id \(id) is outside the vocabulary") }
        }
        self.bos = bos; self.eos = eos; self.pad = pad; self.unknown = unknown

        var idOf: [String: Int32] = [:]
        idOf.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where idOf[t] == nil { idOf[t] = Int32(i) }

        let isSpecial = self.types.map { $0 == .control || $0 == .userDefined }
        tokenBytes = tokens.enumerated().map { isSpecial[$0] ? nil : ByteLevel.bytes(ofToken: $1) }
        byteToken = (0..<256).map { idOf[String(Character(ByteLevel.byteToScalar[$0]))] }
        specials = tokens.indices.filter { isSpecial[$0] }
            .map { (Array(tokens[$0].utf8), Int32($0)) }
            .sorted { $0.text.count > $1.text.count }

        var table: [UInt64: (Int32, Int32)] = [:]
        var pairs: [(String, String)] = []
        for (rank, line) in merges.enumerated() {
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw .invalidVocabulary("merge \(rank) \(shown(line)) is not two symbols separated by one space") }
            let a = String(parts[0]), b = String(parts[1])
            guard let ia = idOf[a], let ib = idOf[b], let merged = idOf[a + b] else {
                throw .invalidVocabulary("merge \(rank) \(shown(line)) names a symbol missing from the vocabulary")
            }
            let key = UInt64(UInt32(ia)) << 32 | UInt64(UInt32(ib))
            if table[key] == nil { table[key] = (Int32(rank), merged) }
            pairs.append((a, b))
        }
        mergeTable = table.mapValues { (rank: $0.0, id: $0.1) }
        self.merges = pairs
    }

    /// Bytes (0-255) that no vocabulary symbol can spell.
    public var unencodableBytes: [UInt8] { (0..<256).filter { byteToken[$0] == nil }.map(UInt8.init) }

    public func isSpecial(_ id: Int32) -> Bool {
        guard id >= 0, Int(id) < types.count else { return false }
        return types[Int(id)] == .control || types[Int(id)] == .userDefined
    }

    public func id(of token: String) -> Int32? { tokens.firstIndex(of: token).map(Int32.init) }

    /// Token ids for `text`. With `parseSpecial`, special-token text such as `<|im_start|>` becomes its
    /// id; without it, that text is tokenized like any other.
    public func encode(_ text: String, parseSpecial: Bool = true) throws(TokenizerError) -> [Int32] {
        var out: [Int32] = []
        for segment in parseSpecial ? splitSpecials(text) : [.text(text[...])] {
            switch segment {
            case .special(let id): out.append(id)
            case .text(let s): for piece in PreTokenizer.split(s) { out += try bpe(piece) }
            }
        }
        return out
    }

    /// The bytes a sequence of ids stands for; special tokens give their own text.
    public func decodeBytes(_ ids: [Int32]) throws(TokenizerError) -> [UInt8] {
        var out: [UInt8] = []
        for id in ids {
            guard id >= 0, Int(id) < tokens.count else { throw .unknownId(id) }
            if let b = tokenBytes[Int(id)] { out += b } else { out += Array(tokens[Int(id)].utf8) }
        }
        return out
    }

    /// Text for ids; invalid UTF-8 (a sequence cut inside a character) becomes U+FFFD.
    public func decode(_ ids: [Int32]) throws(TokenizerError) -> String {
        String(decoding: try decodeBytes(ids), as: UTF8.self)
    }

    // MARK: - internals

    enum Segment { case text(Substring), special(Int32) }

    private func splitSpecials(_ text: String) -> [Segment] {
        let utf8 = text.utf8
        var segments: [Segment] = []
        var plainStart = utf8.startIndex
        var i = utf8.startIndex
        outer: while i < utf8.endIndex {
            if utf8[i] == UInt8(ascii: "<") || specials.contains(where: { $0.text.first == utf8[i] }) {
                for s in specials where utf8[i...].starts(with: s.text) {
                    if plainStart < i { segments.append(.text(text[plainStart..<i])) }
                    segments.append(.special(s.id))
                    i = utf8.index(i, offsetBy: s.text.count)
                    plainStart = i
                    continue outer
                }
            }
            i = utf8.index(after: i)
        }
        if plainStart < utf8.endIndex { segments.append(.text(text[plainStart...])) }
        return segments
    }

    private func bpe(_ piece: Substring) throws(TokenizerError) -> [Int32] {
        let key = String(piece)
        if let hit = cacheLock.withLock({ cache[key] }) { return hit }
        var symbols: [Int32] = []
        symbols.reserveCapacity(piece.utf8.count)
        for b in piece.utf8 {
            guard let id = byteToken[Int(b)] else { throw .unencodableByte(b) }
            symbols.append(id)
        }
        // Merge the adjacent pair of lowest rank until none is left.
        while symbols.count > 1 {
            var bestRank = Int32.max, bestAt = -1, bestId: Int32 = 0
            for k in 0..<symbols.count - 1 {
                let key = UInt64(UInt32(symbols[k])) << 32 | UInt64(UInt32(symbols[k + 1]))
                if let m = mergeTable[key], m.rank < bestRank { bestRank = m.rank; bestAt = k; bestId = m.id }
            }
            if bestAt < 0 { break }
            symbols[bestAt] = bestId
            symbols.remove(at: bestAt + 1)
        }
        if piece.utf8.count <= 64 { cacheLock.withLock { cache[key] = symbols } }
        return symbols
    }
}

public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    case invalidVocabulary(String)
    case unencodableByte(UInt8)
    case unknownId(Int32)
    case invalidMessage(String)

    public var description: String {
        switch self {
        case .invalidVocabulary(let s): return "invalid tokenizer vocabulary: \(s)"
        case .unencodableByte(let b):
            return String(format: "the text contains byte 0x%02X, which no token of this vocabulary can represent", b)
        case .unknownId(let id): return "token id \(id) is not in the vocabulary"
        case .invalidMessage(let s): return "invalid chat message: \(s)"
        }
    }
}
