#if canImport(Glibc)
import Glibc
#endif

/// A small, fast, seedable generator (SplitMix64). Every sampled sequence owns one, so its tokens
/// depend only on its seed, never on what else shares the batch.
public struct SplitMix64: RandomNumberGenerator, Sendable, Codable, Equatable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Standard normal (Box-Muller).
    public mutating func nextNormal() -> Float {
        let u1 = max(nextUniform(), 1e-300), u2 = nextUniform()
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// A seed derived from a parent seed and a list of integers (run, iteration, prompt, sample):
    /// the same inputs give the same seed on any machine.
    public static func derive(_ seed: UInt64, _ parts: UInt64...) -> UInt64 {
        var g = SplitMix64(seed: seed)
        var h = g.next()
        for p in parts { g = SplitMix64(seed: h ^ p &* 0xD6E8_FEB8_6659_FD93); h = g.next() }
        return h
    }
}

