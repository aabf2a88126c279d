/// A linear head from the final-normed hidden state to one number: score = h . w + b. Reward and
/// value models put it on the Llama trunk. Its parameters live in a flat buffer of their own,
/// (C + 1): w then b.
public final class ScalarHead: @unchecked Sendable {
    public let width: Int
    public let storage: UnsafeMutableBufferPointer<Float> // (C + 1)

    public init(width: Int) {
        self.width = width
        storage = .allocate(capacity: width + 1)
        storage.initialize(repeating: 0)
    }

    /// Small random weights, zero bias.
    public static func random(width: Int, seed: UInt64, std: Float = 0.02) -> ScalarHead {
        let h = ScalarHead(width: width)
        var rng = SplitMix64(seed: seed)
        for i in 0..<width { h.storage[i] = std * rng.nextNormal() }
        return h
    }

    deinit { storage.deallocate() }

    /// scores (R) from xn (R, C)
    public func forward(_ xn: UnsafePointer<Float>, rows: Int) -> [Float] {
        (0..<rows).map { VectorMath.dot(xn + $0 * width, storage.baseAddress!, width) + storage[width] }
    }

    /// dXn (R, C) = dScore * w; gradient of (w, b) added to `grads` (C + 1).
    public func backward(dXn: UnsafeMutablePointer<Float>, dScores: [Float], xn: UnsafePointer<Float>, grads: UnsafeMutablePointer<Float>) {
        for (r, d) in dScores.enumerated() {
            let row = dXn + r * width
            for i in 0..<width { row[i] = d * storage[i] }
            VectorMath.axpy(d, xn + r * width, grads, width)
            grads[width] += d
        }
    }
}

extension ForwardPass {
    /// Scores of a scalar head at `rows` (default: each sequence's last token).
    public func scores(_ head: ScalarHead, rows: [Int]? = nil) -> [Float] {
        let rows = rows ?? lastRows
        let xn = finalNormed(rows: rows, inv: nil)
        defer { xn.deallocate() }
        return head.forward(xn, rows: rows.count)
    }

    /// Given d loss / d score at `rows`, adds the head's gradient to `headGrads` (C + 1) and the final
    /// norm's to `grads`; returns d loss / d final hidden (N, C) for `backward` (caller deallocates).
    public func scoreBackward(_ head: ScalarHead, dScores: [Float], rows: [Int]? = nil, headGrads: UnsafeMutablePointer<Float>,
                              grads: ModelWeights?) -> UnsafeMutablePointer<Float> {
        let rows = rows ?? lastRows, C = config.width
        let inv = UnsafeMutablePointer<Float>.allocate(capacity: max(rows.count, 1))
        let dXn = UnsafeMutablePointer<Float>.allocate(capacity: max(rows.count * C, 1))
        defer { inv.deallocate(); dXn.deallocate() }
        let xn = finalNormed(rows: rows, inv: inv)
        defer { xn.deallocate() }
        head.backward(dXn: dXn, dScores: dScores, xn: xn, grads: headGrads)
        let dx = zeroGradient()
        finalNormBackward(rows: rows, dXn: dXn, inv: inv, dx: dx, grads: grads)
        return dx
    }
}
