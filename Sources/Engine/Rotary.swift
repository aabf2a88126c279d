#if canImport(Glibc)
import Glibc
#endif

/// Rotary position embeddings in the half-split layout (dimension i pairs with i + D/2), as
/// Hugging Face checkpoints store attn_q/attn_k. Angles are computed in double once per model.
public struct RotaryTable: Sendable {
    public let headDim: Int
    public let positions: Int
    let cos: [Float] // (positions, D/2)
    let sin: [Float] // (positions, D/2)

    public init(config c: ModelConfig) {
        self.init(headDim: c.headDim, positions: c.contextLength, theta: c.ropeTheta, scaling: c.ropeScaling)
    }

    public init(headDim: Int, positions: Int, theta: Float, scaling: RopeScaling? = nil) {
        let half = headDim / 2
        let frequencies = (0..<half).map { i in
            let f = pow(Double(theta), -2 * Double(i) / Double(headDim))
            return scaling?.frequency(f) ?? f
        }
        var c = [Float](repeating: 0, count: positions * half), s = c
        for p in 0..<positions {
            for i in 0..<half {
                let angle = Double(p) * frequencies[i]
                c[p * half + i] = Float(Glibc.cos(angle))
                s[p * half + i] = Float(Glibc.sin(angle))
            }
        }
        self.headDim = headDim; self.positions = positions; cos = c; sin = s
    }

    /// Rotates `heads` vectors of size D stored back to back at `x`, all at position `pos`.
    /// With `inverse` it rotates by -angle (the backward pass of the rotation).
    @inline(__always)
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, pos: Int, inverse: Bool = false) {
        typealias V8 = SIMD8<Float>
        let half = headDim / 2
        cos.withUnsafeBufferPointer { cb in
            sin.withUnsafeBufferPointer { sb in
                let c = UnsafeRawPointer(cb.baseAddress! + pos * half), s = UnsafeRawPointer(sb.baseAddress! + pos * half)
                let sign: Float = inverse ? -1 : 1
                for h in 0..<heads {
                    let lo = UnsafeMutableRawPointer(x + h * headDim), hi = lo + half * 4
                    var i = 0
                    while i + 8 <= half { // the half-split layout makes both halves contiguous vectors
                        let x0 = lo.loadUnaligned(fromByteOffset: 4 * i, as: V8.self), x1 = hi.loadUnaligned(fromByteOffset: 4 * i, as: V8.self)
                        let ci = c.loadUnaligned(fromByteOffset: 4 * i, as: V8.self), si = sign * s.loadUnaligned(fromByteOffset: 4 * i, as: V8.self)
                        lo.storeBytes(of: x0 * ci - x1 * si, toByteOffset: 4 * i, as: V8.self)
                        hi.storeBytes(of: x0 * si + x1 * ci, toByteOffset: 4 * i, as: V8.self)
                        i += 8
                    }
                    let v = x + h * headDim, cs = cb.baseAddress! + pos * half, sn = sb.baseAddress! + pos * half
                    while i < half {
                        let x0 = v[i], x1 = v[i + half], si = sign * sn[i]
                        v[i] = x0 * cs[i] - x1 * si
                        v[i + half] = x0 * si + x1 * cs[i]
                        i += 1
                    }
                }
            }
        }
    }
}

/// Llama 3's rotary frequencies for long contexts ("rope_type": "llama3"): a frequency whose
/// wavelength is longer than the original context / `lowFreqFactor` is divided by `factor`, one
/// whose wavelength is shorter than the original context / `highFreqFactor` is kept, and those
/// between are blended linearly in original context / wavelength.
public struct RopeScaling: Equatable, Sendable, Codable {
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalContext: Int

    public init(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalContext: Int) {
        self.factor = factor; self.lowFreqFactor = lowFreqFactor; self.highFreqFactor = highFreqFactor; self.originalContext = originalContext
    }

    func validate() throws(EngineError) {
        for (name, v) in [("factor", factor), ("lowFreqFactor", lowFreqFactor), ("highFreqFactor", highFreqFactor)] where !(v.isFinite && v > 0) {
            throw .invalidConfig("rope scaling \(name) must be a positive finite number, found \(v)")
        }
        if !(lowFreqFactor < highFreqFactor) { throw .invalidConfig("rope scaling lowFreqFactor (\(lowFreqFactor)) must be below highFreqFactor (\(highFreqFactor))") }
        if originalContext <= 0 { throw .invalidConfig("rope scaling originalContext must be positive, found \(originalContext)") }
    }

    /// The frequency (radians per position) that replaces `f`.
    public func frequency(_ f: Double) -> Double {
        let context = Double(originalContext), wavelength = 2 * Double.pi / f
        if wavelength < context / highFreqFactor { return f }
        if wavelength > context / lowFreqFactor { return f / factor }
        let smooth = (context / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor)
        return (1 - smooth) * f / factor + smooth * f
    }
}
