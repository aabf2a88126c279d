import CKernels

/// A weight element the AVX2 kernel widens to float32 as it loads: Float itself, or BFloat16.
public protocol ProjectionWeight {
    static func load8(_ p: UnsafePointer<Self>) -> SIMD8<Float>
    var float: Float { get }
}

extension Float: ProjectionWeight {
    @inline(__always) public static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    @inline(__always) public var float: Float { self }
}

extension BFloat16: ProjectionWeight {
    @inline(__always) public static func load8(_ p: UnsafePointer<BFloat16>) -> SIMD8<Float> {
        let half = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<UInt16>.self)
        return unsafeBitCast(SIMD8<UInt32>(truncatingIfNeeded: half) &<< 16, to: SIMD8<Float>.self)
    }
}

/// The inference projection: out (M, N) = x (M, K) * W (N, K)^T, optionally added to out, with
/// the kernel chosen at start (Kernel.swift): the AVX2 one below or CKernels' AVX-512 ones.
///
/// Why not BLAS here: OpenBLAS packs the weight matrix on every call (a full copy of the model per
/// decode step) and its M = 1 path runs at a tenth of memory speed. This kernel streams W once per
/// call and keeps the rows of x in cache, so decode at batch 1 is bound by memory and at batch 32
/// by arithmetic. It also gives batch invariance by construction: every output element is the same
/// sequence of float operations (8-lane FMAs over K in order, a fixed horizontal sum, a scalar
/// tail) whatever M is and wherever the row sits, so a sequence's logits are bitwise the same
/// alone or in any batch.
public enum MatMul {
    typealias V8 = SIMD8<Float>

    /// Rows of W per parallel work item: a multiple of the tile's 3 that splits N = 576 into 12
    /// items for two cores, and whose 48 x K floats (110 KB at K = 576) stay in L2.
    static let rowsPerTask = 48

    public static func linear(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, m: Int,
                              w: UnsafePointer<Float>, n: Int, k: Int, accumulate: Bool = false, kernel: Kernel = .active) {
        if kernel == .avx2 {
            avx2(out: out, x: x, m: m, w: w, n: n, k: k, accumulate: accumulate)
        } else {
            Parallel.forEach((n + rowsPerTask - 1) / rowsPerTask) { t in
                charter_linear_avx512(out, x, m, w, t * rowsPerTask, min(n, (t + 1) * rowsPerTask), n, k, accumulate ? 1 : 0)
            }
        }
    }

    /// The same product with bfloat16 weights. `avx2` and `avx512` widen the weights as they load,
    /// so their results are those of float32 weights equal to the bfloat16 ones; `avx512bf16`
    /// rounds x to bfloat16 and multiplies bfloat16 pairs.
    public static func linear(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, m: Int,
                              w: UnsafePointer<BFloat16>, n: Int, k: Int, accumulate: Bool = false, kernel: Kernel = .active) {
        if kernel == .avx2 { return avx2(out: out, x: x, m: m, w: w, n: n, k: k, accumulate: accumulate) }
        let rounded = kernel == .avx512bf16 ? UnsafeMutablePointer<UInt16>.allocate(capacity: m * k) : nil
        defer { rounded?.deallocate() }
        if let rounded { charter_round_to_bf16(rounded, x, m * k) }
        w.withMemoryRebound(to: UInt16.self, capacity: n * k) { w in
            Parallel.forEach((n + rowsPerTask - 1) / rowsPerTask) { t in
                let n0 = t * rowsPerTask, n1 = min(n, n0 + rowsPerTask)
                if let rounded { charter_linear_avx512bf16(out, rounded, m, w, n0, n1, n, k, accumulate ? 1 : 0) }
                else { charter_linear_avx512_widen(out, x, m, w, n0, n1, n, k, accumulate ? 1 : 0) }
            }
        }
    }

    @inline(__always) static func avx2<W: ProjectionWeight>(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, m: Int,
                                                          w: UnsafePointer<W>, n: Int, k: Int, accumulate: Bool) {
        let tasks = (n + rowsPerTask - 1) / rowsPerTask
        Parallel.forEach(tasks) { t in
            let n0 = t * rowsPerTask, n1 = min(n, n0 + rowsPerTask)
            let whole = n0 + (n1 - n0) / 3 * 3
            // Four rows of x stay in L1 while the task's rows of W come from L2.
            var i = 0
            while i < m {
                let rows = min(4, m - i)
                var j = n0
                while j < whole {
                    if rows == 4 { tile4x3(out, x, i, w, j, n, k, accumulate) }
                    else { for r in i..<i + rows { tile1x3(out, x, r, w, j, n, k, accumulate) } }
                    j += 3
                }
                for jj in whole..<n1 { for r in i..<i + rows { single(out, x, r, w, jj, n, k, accumulate) } }
                i += rows
            }
        }
    }

    @inline(__always) static func load<W: ProjectionWeight>(_ p: UnsafePointer<W>) -> V8 { W.load8(p) }

    /// The fixed reduction order shared by every tile shape.
    @inline(__always) static func finish<W: ProjectionWeight>(_ acc: V8, _ a: UnsafePointer<Float>, _ b: UnsafePointer<W>, _ k: Int,
                                                             _ o: UnsafeMutablePointer<Float>, _ accumulate: Bool) {
        let h = acc.lowHalf + acc.highHalf
        var s = (h[0] + h[2]) + (h[1] + h[3])
        var t = k & ~7
        while t < k { s = s.addingProduct(a[t], b[t].float); t += 1 }
        o.pointee = accumulate ? o.pointee + s : s
    }

    @inline(__always) static func tile4x3<W: ProjectionWeight>(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int,
                                          _ w: UnsafePointer<W>, _ j: Int, _ n: Int, _ k: Int, _ accumulate: Bool) {
        let x0 = x + i * k, x1 = x0 + k, x2 = x1 + k, x3 = x2 + k
        let w0 = w + j * k, w1 = w0 + k, w2 = w1 + k
        var a00 = V8(), a01 = V8(), a02 = V8(), a10 = V8(), a11 = V8(), a12 = V8()
        var a20 = V8(), a21 = V8(), a22 = V8(), a30 = V8(), a31 = V8(), a32 = V8()
        var t = 0
        while t + 8 <= k {
            let v0 = load(w0 + t), v1 = load(w1 + t), v2 = load(w2 + t)
            var u = load(x0 + t)
            a00 = a00.addingProduct(u, v0); a01 = a01.addingProduct(u, v1); a02 = a02.addingProduct(u, v2)
            u = load(x1 + t)
            a10 = a10.addingProduct(u, v0); a11 = a11.addingProduct(u, v1); a12 = a12.addingProduct(u, v2)
            u = load(x2 + t)
            a20 = a20.addingProduct(u, v0); a21 = a21.addingProduct(u, v1); a22 = a22.addingProduct(u, v2)
            u = load(x3 + t)
            a30 = a30.addingProduct(u, v0); a31 = a31.addingProduct(u, v1); a32 = a32.addingProduct(u, v2)
            t += 8
        }
        let o0 = out + i * n + j, o1 = o0 + n, o2 = o1 + n, o3 = o2 + n
        finish(a00, x0, w0, k, o0, accumulate); finish(a01, x0, w1, k, o0 + 1, accumulate); finish(a02, x0, w2, k, o0 + 2, accumulate)
        finish(a10, x1, w0, k, o1, accumulate); finish(a11, x1, w1, k, o1 + 1, accumulate); finish(a12, x1, w2, k, o1 + 2, accumulate)
        finish(a20, x2, w0, k, o2, accumulate); finish(a21, x2, w1, k, o2 + 1, accumulate); finish(a22, x2, w2, k, o2 + 2, accumulate)
        finish(a30, x3, w0, k, o3, accumulate); finish(a31, x3, w1, k, o3 + 1, accumulate); finish(a32, x3, w2, k, o3 + 2, accumulate)
    }

    @inline(__always) static func tile1x3<W: ProjectionWeight>(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int,
                                          _ w: UnsafePointer<W>, _ j: Int, _ n: Int, _ k: Int, _ accumulate: Bool) {
        let x0 = x + i * k
        let w0 = w + j * k, w1 = w0 + k, w2 = w1 + k
        var a0 = V8(), a1 = V8(), a2 = V8()
        var t = 0
        while t + 8 <= k {
            let u = load(x0 + t)
            a0 = a0.addingProduct(u, load(w0 + t)); a1 = a1.addingProduct(u, load(w1 + t)); a2 = a2.addingProduct(u, load(w2 + t))
            t += 8
        }
        let o = out + i * n + j
        finish(a0, x0, w0, k, o, accumulate); finish(a1, x0, w1, k, o + 1, accumulate); finish(a2, x0, w2, k, o + 2, accumulate)
    }

    @inline(__always) static func single<W: ProjectionWeight>(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int,
                                         _ w: UnsafePointer<W>, _ j: Int, _ n: Int, _ k: Int, _ accumulate: Bool) {
        let x0 = x + i * k, w0 = w + j * k
        var a = V8()
        var t = 0
        while t + 8 <= k { a = a.addingProduct(load(x0 + t), load(w0 + t)); t += 8 }
        finish(a, x0, w0, k, out + i * n + j, accumulate)
    }
}
