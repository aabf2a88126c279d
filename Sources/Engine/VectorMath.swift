#if canImport(Glibc)
import Glibc
#endif

/// Vector loops for the per-element work of the forward pass. Everything here runs on SIMD8
/// lanes with a scalar tail; nothing allocates.
public enum VectorMath {
    public typealias V8 = SIMD8<Float>

    @inline(__always) public static func load(_ p: UnsafePointer<Float>) -> V8 {
        UnsafeRawPointer(p).loadUnaligned(as: V8.self)
    }

    @inline(__always) public static func store(_ v: V8, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: V8.self)
    }

    /// exp on 8 lanes: Cephes' expf polynomial with the exponent rebuilt in the bits.
    /// Relative error about 2e-7 on [-87, 88]; inputs outside are clamped (exp(-inf) gives ~1e-38).
    @inline(__always) public static func exp(_ x: V8) -> V8 {
        let x = x.clamped(lowerBound: V8(repeating: -87), upperBound: V8(repeating: 88))
        let magic = V8(repeating: 12_582_912) // 1.5 * 2^23: adding it rounds to an integer
        let t = x * 1.442_695_040_888_963_4 + magic
        let n = t - magic
        let r = x - n * 0.693_359_375 - n * -2.121_944_400_5e-4
        var p = V8(repeating: 1.987_569_150_0e-4)
        p = p * r + 1.398_199_950_7e-3
        p = p * r + 8.333_451_907_3e-3
        p = p * r + 4.166_579_589_4e-2
        p = p * r + 1.666_666_545_9e-1
        p = p * r + 5.000_000_120_1e-1
        p = p * r * r + r + 1
        let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
        return p * unsafeBitCast((ni &+ 127) &<< 23, to: V8.self)
    }

    @inline(__always) public static func exp(_ x: Float) -> Float { exp(V8(repeating: x))[0] }

    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = V8(), s1 = V8()
        var i = 0
        while i + 16 <= n {
            s0 += load(a + i) * load(b + i)
            s1 += load(a + i + 8) * load(b + i + 8)
            i += 16
        }
        if i + 8 <= n { s0 += load(a + i) * load(b + i); i += 8 }
        var s = (s0 + s1).sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// y += alpha * x
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        let a = V8(repeating: alpha)
        var i = 0
        while i + 8 <= n { store(load(y + i) + a * load(x + i), y + i); i += 8 }
        while i < n { y[i] += alpha * x[i]; i += 1 }
    }

    /// x *= alpha
    public static func scale(_ x: UnsafeMutablePointer<Float>, _ alpha: Float, _ n: Int) {
        var i = 0
        while i + 8 <= n { store(load(x + i) * alpha, x + i); i += 8 }
        while i < n { x[i] *= alpha; i += 1 }
    }

    public static func max(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var m = V8(repeating: -.infinity)
        var i = 0
        while i + 8 <= n { m = pointwiseMax(m, load(x + i)); i += 8 }
        var r = m.max()
        while i < n { r = Swift.max(r, x[i]); i += 1 }
        return r
    }

    /// x = exp(x - shift) in place; returns the sum of the results.
    @discardableResult
    public static func expShifted(_ x: UnsafeMutablePointer<Float>, _ shift: Float, _ n: Int) -> Float {
        var s = V8()
        let sh = V8(repeating: shift)
        var i = 0
        while i + 8 <= n { let e = exp(load(x + i) - sh); store(e, x + i); s += e; i += 8 }
        var total = s.sum()
        while i < n { let e = exp(x[i] - shift); x[i] = e; total += e; i += 1 }
        return total
    }

    /// log(sum(exp(x))) without changing x.
    public static func logSumExp(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        let m = max(x, n)
        var s = V8()
        let sh = V8(repeating: m)
        var i = 0
        while i + 8 <= n { s += exp(load(x + i) - sh); i += 8 }
        var total = s.sum()
        while i < n { total += exp(x[i] - m); i += 1 }
        return m + logf(total)
    }

    /// Softmax in place.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        let total = expShifted(x, max(x, n), n)
        scale(x, 1 / total, n)
    }
}
