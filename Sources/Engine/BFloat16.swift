/// A bfloat16 number: the top 16 bits of a float32 (8 exponent bits, 7 mantissa bits). Weights held
/// this way take half the bytes, which is what batch-1 decode is bound by; products still run in
/// float32 (a weight widens exactly to the float32 it stands for).
public struct BFloat16: Sendable, Equatable {
    public var bits: UInt16

    public init(bits: UInt16) { self.bits = bits }

    /// The nearest bfloat16, ties to even; a NaN becomes the quiet NaN 0x7FC0.
    public init(_ value: Float) {
        let b = value.bitPattern
        bits = value.isNaN ? 0x7FC0 : UInt16((b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
    }

    public var float: Float { Float(bitPattern: UInt32(bits) << 16) }
}

/// A bfloat16 copy of a model's whole flat parameter buffer, at the same offsets.
public final class BFloat16Weights: @unchecked Sendable {
    public let storage: UnsafeMutableBufferPointer<BFloat16>

    public init(_ weights: ModelWeights) {
        storage = .allocate(capacity: weights.storage.count)
        let source = weights.storage
        let chunk = 1 << 20
        Parallel.forEach((source.count + chunk - 1) / chunk) { c in
            for i in c * chunk ..< min(source.count, (c + 1) * chunk) { self.storage[i] = BFloat16(source[i]) }
        }
    }

    deinit { storage.deallocate() }

    public var base: UnsafeMutablePointer<BFloat16> { storage.baseAddress! }
}
