import Engine
import Foundation

/// A direct, unoptimised Llama forward in Double, written from the architecture's definition
/// (half-split rotary pairs, grouped-query attention, SwiGLU, tied output): the independent
/// reference for the engine's tiny-model tests.
struct NaiveLlama {
    let weights: ModelWeights
    var c: ModelConfig { weights.config }

    func w(_ name: String) -> [Double] { weights.view(name)!.map(Double.init) }

    /// out[o] = sum_i m[o * cols + i] * v[i]
    func matvec(_ m: [Double], _ v: [Double], rows: Int) -> [Double] {
        let cols = v.count
        return (0..<rows).map { o in (0..<cols).reduce(0.0) { $0 + m[o * cols + $1] * v[$1] } }
    }

    func rmsNorm(_ x: [Double], _ g: [Double]) -> [Double] {
        let inv = 1 / (x.reduce(0) { $0 + $1 * $1 } / Double(x.count) + Double(c.rmsEps)).squareRoot()
        return zip(x, g).map { $0 * inv * $1 }
    }

    func rotate(_ v: [Double], pos: Int) -> [Double] {
        let D = c.headDim, half = D / 2
        var out = v
        for h in 0..<v.count / D {
            for i in 0..<half {
                let angle = Double(pos) * pow(Double(c.ropeTheta), -2 * Double(i) / Double(D))
                let a = v[h * D + i], b = v[h * D + i + half]
                out[h * D + i] = a * cos(angle) - b * sin(angle)
                out[h * D + i + half] = a * sin(angle) + b * cos(angle)
            }
        }
        return out
    }

    /// Logits (T * V) for every position.
    func logits(_ tokens: [Int32]) -> [Double] {
        let C = c.width, D = c.headDim, H = c.heads, K = c.kvHeads, F = c.ffnWidth
        let embed = w("embed")
        var xs = tokens.map { Array(embed[Int($0) * C ..< (Int($0) + 1) * C]) }
        for l in 0..<c.layers {
            let p = "layers.\(l)."
            let normed = xs.map { rmsNorm($0, w(p + "attn_norm")) }
            let q = normed.enumerated().map { rotate(matvec(w(p + "wq"), $1, rows: H * D), pos: $0) }
            let k = normed.enumerated().map { rotate(matvec(w(p + "wk"), $1, rows: K * D), pos: $0) }
            let v = normed.map { matvec(w(p + "wv"), $0, rows: K * D) }
            for t in 0..<tokens.count {
                var att = [Double](repeating: 0, count: H * D)
                for h in 0..<H {
                    let g = h / (H / K)
                    let scores = (0...t).map { s in (0..<D).reduce(0.0) { $0 + q[t][h * D + $1] * k[s][g * D + $1] } / Double(D).squareRoot() }
                    let m = scores.max()!, e = scores.map { exp($0 - m) }, z = e.reduce(0, +)
                    for s in 0...t { for d in 0..<D { att[h * D + d] += e[s] / z * v[s][g * D + d] } }
                }
                let o = matvec(w(p + "wo"), att, rows: C)
                xs[t] = zip(xs[t], o).map(+)
            }
            for t in 0..<tokens.count {
                let n = rmsNorm(xs[t], w(p + "ffn_norm"))
                let gate = matvec(w(p + "w_gate"), n, rows: F), up = matvec(w(p + "w_up"), n, rows: F)
                let hidden = zip(gate, up).map { $0 / (1 + exp(-$0)) * $1 }
                xs[t] = zip(xs[t], matvec(w(p + "w_down"), hidden, rows: C)).map(+)
            }
        }
        return xs.flatMap { matvec(embed, rmsNorm($0, w("final_norm")), rows: c.vocab) }
    }
}
