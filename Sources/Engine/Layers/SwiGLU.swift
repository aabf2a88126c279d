/// h = silu(gate) * up, with silu(g) = g * sigmoid(g).
public enum SwiGLU {
    typealias V8 = SIMD8<Float>

    public static func forward(_ out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        let one = V8(repeating: 1)
        while i + 8 <= n {
            let g = VectorMath.load(gate + i)
            VectorMath.store(g / (one + VectorMath.exp(-g)) * VectorMath.load(up + i), out + i)
            i += 8
        }
        while i < n { let g = gate[i]; out[i] = g / (1 + VectorMath.exp(-g)) * up[i]; i += 1 }
    }

    /// dGate = dh * up * silu'(g), dUp = dh * silu(g), with silu'(g) = sig(g) * (1 + g * (1 - sig(g))).
    public static func backward(dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                                gate: UnsafePointer<Float>, up: UnsafePointer<Float>, _ n: Int) {
        let one = V8(repeating: 1)
        var i = 0
        while i + 8 <= n {
            let g = VectorMath.load(gate + i), d = VectorMath.load(dOut + i)
            let sig = one / (one + VectorMath.exp(-g))
            VectorMath.store(d * g * sig, dUp + i)
            VectorMath.store(d * VectorMath.load(up + i) * sig * (one + g * (one - sig)), dGate + i)
            i += 8
        }
        while i < n {
            let g = gate[i], sig = 1 / (1 + VectorMath.exp(-g))
            dUp[i] = dOut[i] * g * sig
            dGate[i] = dOut[i] * up[i] * sig * (1 + g * (1 - sig))
            i += 1
        }
    }
}
