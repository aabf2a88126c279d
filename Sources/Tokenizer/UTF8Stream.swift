import Foundation

/// Holds back the bytes of a character cut between two tokens, so streamed output stays valid UTF-8.
public struct UTF8Stream {
    public init() {}

    private var pending: [UInt8] = []

    public mutating func push(_ bytes: [UInt8]) -> Data {
        pending += bytes
        // Find where the last, possibly incomplete, character starts.
        var start = pending.count
        while start > 0 && pending.count - start < 4 {
            start -= 1
            if pending[start] & 0xC0 != 0x80 { break }
        }
        guard start < pending.count else { return Data() }
        let lead = pending[start]
        let need = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        let cut = pending.count - start >= need ? pending.count : start
        defer { pending.removeFirst(cut) }
        return Data(pending[..<cut])
    }

    public mutating func flush() -> Data {
        defer { pending = [] }
        return Data(pending)
    }
}
