/// Weighted next-token cross-entropy on selected rows, and its backward, through the output
/// projection W (V, C) (the embedding when tied).
public enum CrossEntropy {
    /// xn (R, C): final-normed hidden states of the rows that predict `targets`.
    /// Adds coef[r] * -log p(target r) to the returned loss, writes dXn (R, C), adds into dW (V, C);
    /// without dXn it only evaluates; without dW the output projection is frozen.
    /// `logits` (R, V) is scratch; on return it holds the logits divided by `temperature`.
    /// `logprobs` (R) receives log p(target r) under softmax(logits / temperature): the distribution
    /// a sampler at that temperature drew from (PPO's ratios and KL must use the same one).
    public static func forwardBackward(xn: UnsafePointer<Float>, rows: Int, targets: [Int32], coefs: [Float],
                                       w: UnsafePointer<Float>, vocab V: Int, width C: Int, temperature: Float = 1,
                                       logits: UnsafeMutablePointer<Float>, logprobs: UnsafeMutablePointer<Float>,
                                       entropies: UnsafeMutablePointer<Float>? = nil,
                                       dXn: UnsafeMutablePointer<Float>?, dW: UnsafeMutablePointer<Float>?) -> Double {
        if rows == 0 { return 0 }
        // z / T in the product itself; the chain rule then scales d loss / d (z / T) by 1 / T below.
        BLAS.gemm(m: rows, n: V, k: C, a: xn, lda: C, b: w, ldb: C, transB: true, c: logits, ldc: V, alpha: 1 / temperature)
        let grad = UnsafeMutablePointer<Float>.allocate(capacity: rows * V) // (R, V) d loss / d logits
        defer { grad.deallocate() }
        var loss = 0.0
        for r in 0..<rows {
            let row = logits + r * V, g = grad + r * V, t = Int(targets[r])
            let lse = VectorMath.logSumExp(row, V)
            logprobs[r] = row[t] - lse
            loss += Double(coefs[r]) * Double(lse - row[t])
            if dXn == nil && entropies == nil { continue }
            g.update(from: row, count: V)
            VectorMath.expShifted(g, lse, V) // softmax
            if let entropies { entropies[r] = lse - VectorMath.dot(g, row, V) } // H = lse - sum p * logit
            if dXn == nil { continue }
            // d/dlogits of coef * (lse - logit_t) = coef * (softmax - onehot), times 1 / T for the raw logits
            let c = coefs[r] / temperature
            VectorMath.scale(g, c, V)
            g[t] -= c
        }
        guard let dXn else { return loss }
        BLAS.gemm(m: rows, n: C, k: V, a: grad, lda: V, b: w, ldb: C, transB: false, c: dXn, ldc: C)
        if let dW { BLAS.gemm(m: V, n: C, k: rows, a: grad, lda: V, transA: true, b: xn, ldb: C, transB: false, c: dW, ldc: C, beta: 1) }
        return loss
    }
}
