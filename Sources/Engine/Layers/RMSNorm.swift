/// y = x / rms(x) * g, row by row, with rms(x) = sqrt(mean(x^2) + eps).
public enum RMSNorm {
    typealias V8 = SIMD8<Float>

    /// out (rows, n); `inv` (rows), if given, receives 1 / rms(x) per row for the backward pass.
    public static func forward(_ out: UnsafeMutablePointer<Float>, inv: UnsafeMutablePointer<Float>?, _ x: UnsafePointer<Float>,
                               _ gain: UnsafePointer<Float>, rows: Int, n: Int, eps: Float) {
        for r in 0..<rows {
            let xr = x + r * n, o = out + r * n
            let s = 1 / (VectorMath.dot(xr, xr, n) / Float(n) + eps).squareRoot()
            inv?[r] = s
            var i = 0
            let sv = V8(repeating: s)
            while i + 8 <= n { VectorMath.store(VectorMath.load(xr + i) * sv * VectorMath.load(gain + i), o + i); i += 8 }
            while i < n { o[i] = xr[i] * s * gain[i]; i += 1 }
        }
    }

    /// dx += s * (dy * g) - x * s^3 / n * sum(dy * g * x);  dGain += sum over rows of dy * x * s.
    public static func backward(dx: UnsafeMutablePointer<Float>, dGain: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>,
                                _ x: UnsafePointer<Float>, _ gain: UnsafePointer<Float>, inv: UnsafePointer<Float>, rows: Int, n: Int) {
        for r in 0..<rows {
            let xr = x + r * n, dy = dOut + r * n, d = dx + r * n, s = inv[r]
            var dot: Float = 0
            for i in 0..<n { dot += dy[i] * gain[i] * xr[i] }
            let k = s * s * s / Float(n) * dot
            for i in 0..<n {
                d[i] += s * dy[i] * gain[i] - xr[i] * k
                dGain?[i] += dy[i] * xr[i] * s
            }
        }
    }
}
