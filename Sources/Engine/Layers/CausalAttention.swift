/// Causal grouped-query attention over packed sequences, for training: whole sequences at once,
/// through BLAS, with the probabilities recomputed in the backward pass instead of stored.
///
/// qkv (N, (H + 2K) * D) holds each token's rotated queries, rotated keys and values; sequence s
/// owns rows starts[s] ..< starts[s] + lengths[s]. out and dOut are (N, H * D).
public struct CausalAttention {
    public let heads: Int, kvHeads: Int, headDim: Int
    var width: Int { (heads + 2 * kvHeads) * headDim }
    var scale: Float { 1 / Float(headDim).squareRoot() }

    public init(heads: Int, kvHeads: Int, headDim: Int) {
        self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
    }

    /// P (T, T) = causal softmax(Q_h K_g^T * scale) of one sequence and head.
    private func probabilities(_ p: UnsafeMutablePointer<Float>, _ qkv: UnsafePointer<Float>, start: Int, length t: Int, head h: Int) {
        let D = headDim, g = h / (heads / kvHeads)
        let rows = qkv + start * width
        BLAS.gemm(m: t, n: t, k: D, a: rows + h * D, lda: width, b: rows + (heads + g) * D, ldb: width, transB: true,
                  c: p, ldc: t, alpha: scale)
        for i in 0..<t {
            VectorMath.softmax(p + i * t, i + 1)
            (p + i * t + i + 1).update(repeating: 0, count: t - i - 1)
        }
    }

    public func forward(_ out: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>, starts: [Int], lengths: [Int]) {
        let D = headDim, maxT = lengths.max() ?? 0
        let p = UnsafeMutablePointer<Float>.allocate(capacity: maxT * maxT)
        defer { p.deallocate() }
        for (start, t) in zip(starts, lengths) {
            for h in 0..<heads {
                let g = h / (heads / kvHeads)
                probabilities(p, qkv, start: start, length: t, head: h)
                BLAS.gemm(m: t, n: D, k: t, a: p, lda: t, b: qkv + start * width + (heads + kvHeads + g) * D, ldb: width,
                          transB: false, c: out + start * heads * D + h * D, ldc: heads * D)
            }
        }
    }

    /// dqkv (N, (H + 2K) * D) receives dQ, dK, dV (overwritten, not accumulated).
    public func backward(dqkv: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
                         starts: [Int], lengths: [Int]) {
        let D = headDim, HD = heads * D, maxT = lengths.max() ?? 0
        let p = UnsafeMutablePointer<Float>.allocate(capacity: maxT * maxT)
        let dp = UnsafeMutablePointer<Float>.allocate(capacity: maxT * maxT)
        defer { p.deallocate(); dp.deallocate() }
        for (start, t) in zip(starts, lengths) {
            let rows = qkv + start * width, dRows = dqkv + start * width
            for r in 0..<t { (dRows + r * width + heads * D).update(repeating: 0, count: 2 * kvHeads * D) }
            for h in 0..<heads {
                let g = h / (heads / kvHeads)
                let q = rows + h * D, k = rows + (heads + g) * D, v = rows + (heads + kvHeads + g) * D
                let dO = dOut + start * HD + h * D
                probabilities(p, qkv, start: start, length: t, head: h)
                // dV += P^T dO;  dP = dO V^T
                BLAS.gemm(m: t, n: D, k: t, a: p, lda: t, transA: true, b: dO, ldb: HD, transB: false,
                          c: dRows + (heads + kvHeads + g) * D, ldc: width, beta: 1)
                BLAS.gemm(m: t, n: t, k: D, a: dO, lda: HD, b: v, ldb: width, transB: true, c: dp, ldc: t)
                // dS = P * (dP - rowsum(P * dP)), only on the causal triangle (P is 0 above it).
                for i in 0..<t {
                    let pr = p + i * t, dr = dp + i * t
                    let dot = VectorMath.dot(pr, dr, i + 1)
                    for j in 0...i { dr[j] = pr[j] * (dr[j] - dot) }
                    (dr + i + 1).update(repeating: 0, count: t - i - 1)
                }
                // dQ = dS K * scale;  dK += dS^T Q * scale
                BLAS.gemm(m: t, n: D, k: t, a: dp, lda: t, b: k, ldb: width, transB: false, c: dRows + h * D, ldc: width, alpha: scale)
                BLAS.gemm(m: t, n: D, k: t, a: dp, lda: t, transA: true, b: q, ldb: width, transB: false,
                          c: dRows + (heads + g) * D, ldc: width, alpha: scale, beta: 1)
            }
        }
    }
}
