/// Splits text into the pieces BPE merges within, as the `smollm` pre-tokenizer of llama.cpp and
/// Hugging Face does: first every number character becomes a piece of its own, then each remaining
/// run is split by GPT-2's pattern
///     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
public enum PreTokenizer {
    public static func split(_ text: Substring) -> [Substring] {
        let scalars = Array(text.unicodeScalars)
        var starts: [String.Index] = []
        var idx = text.startIndex
        for _ in scalars { starts.append(idx); idx = text.unicodeScalars.index(after: idx) }
        starts.append(text.endIndex)

        var pieces: [Substring] = []
        var runStart = 0
        func gpt2(_ lo: Int, _ hi: Int) {
            for r in gpt2Ranges(scalars, lo, hi) { pieces.append(text[starts[r.lowerBound]..<starts[r.upperBound]]) }
        }
        for (i, s) in scalars.enumerated() where isNumber(s) {
            if runStart < i { gpt2(runStart, i) }
            pieces.append(text[starts[i]..<starts[i + 1]])
            runStart = i + 1
        }
        if runStart < scalars.count { gpt2(runStart, scalars.count) }
        return pieces
    }

    /// GPT-2's pattern over s[lo..<hi].
    static func gpt2Ranges(_ s: [Unicode.Scalar], _ lo: Int, _ hi: Int) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var i = lo
        func run(from j: Int, while test: (Unicode.Scalar) -> Bool) -> Int {
            var k = j
            while k < hi && test(s[k]) { k += 1 }
            return k
        }
        while i < hi {
            let c = s[i]
            if c == "'" && i + 1 < hi {
                let c1 = s[i + 1]
                if c1 == "s" || c1 == "t" || c1 == "m" || c1 == "d" { out.append(i..<i + 2); i += 2; continue }
                if i + 2 < hi {
                    let c2 = s[i + 2]
                    if (c1 == "r" && c2 == "e") || (c1 == "v" && c2 == "e") || (c1 == "l" && c2 == "l") {
                        out.append(i..<i + 3); i += 3; continue
                    }
                }
            }
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional plain space, then a run of one class.
            let j = (c == " " && i + 1 < hi) ? i + 1 : i
            let lead = s[j]
            if !isSpace(lead) {
                let end: Int
                if isLetter(lead) { end = run(from: j, while: isLetter) }
                else if isNumber(lead) { end = run(from: j, while: isNumber) }
                else { end = run(from: j) { !isSpace($0) && !isLetter($0) && !isNumber($0) } }
                out.append(i..<end); i = end; continue
            }
            // `\s+(?!\S)` leaves the last space of a run to start the next piece; `\s+` takes the rest.
            let end = run(from: i, while: isSpace)
            if end < hi && end - i > 1 { out.append(i..<end - 1); i = end - 1 }
            else { out.append(i..<end); i = end }
        }
        return out
    }

    static func isLetter(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    static func isNumber(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    static func isSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }
}
