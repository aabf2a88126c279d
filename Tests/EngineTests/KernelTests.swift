import Engine
import Foundation
import XCTest

final class KernelTests: XCTestCase {
    func randomArray(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in rng.nextNormal() }
    }

    func naive(_ x: [Float], _ w: [Float], m: Int, n: Int, k: Int) -> [Double] {
        (0..<m * n).map { e in (0..<k).reduce(0.0) { $0 + Double(x[e / n * k + $1]) * Double(w[e % n * k + $1]) } }
    }

    /// Shapes with every kind of remainder: rows not a multiple of the tile, K not a multiple of 8
    /// or 16; for each kernel this CPU runs (AVX-512 only where it has AVX-512F).
    func testProjectionMatchesDoubleReferenceOnRaggedShapes() {
        print("kernels tested: \(Kernel.runnable.map(\.rawValue))")
        for kernel in Kernel.runnable {
            for (m, n, k) in [(1, 1, 1), (5, 7, 13), (4, 48, 64), (9, 50, 100), (3, 97, 8), (2, 5, 17), (33, 130, 576)] {
                let x = randomArray(m * k, seed: 1), w = randomArray(n * k, seed: 2)
                var out = [Float](repeating: 0, count: m * n)
                MatMul.linear(out: &out, x: x, m: m, w: w, n: n, k: k, kernel: kernel)
                let ref = naive(x, w, m: m, n: n, k: k)
                let worst = zip(out, ref).map { abs(Double($0) - $1) / max(1, abs($1)) }.max()!
                XCTAssertLessThanOrEqual(worst, 1e-5, "\(kernel), shape \(m)x\(n)x\(k): max relative error \(worst)")

                var acc = [Float](repeating: 1, count: m * n)
                MatMul.linear(out: &acc, x: x, m: m, w: w, n: n, k: k, accumulate: true, kernel: kernel)
                let accWorst = zip(acc, ref).map { abs(Double($0) - ($1 + 1)) / max(1, abs($1)) }.max()!
                XCTAssertLessThanOrEqual(accWorst, 1e-5, "\(kernel), accumulate, shape \(m)x\(n)x\(k)")
            }
        }
    }

    func testProjectionRowIsBitwiseIndependentOfOtherRows() {
        let n = 101, k = 77
        let w = randomArray(n * k, seed: 3), x = randomArray(13 * k, seed: 4)
        for kernel in Kernel.runnable {
            var all = [Float](repeating: 0, count: 13 * n)
            MatMul.linear(out: &all, x: x, m: 13, w: w, n: n, k: k, kernel: kernel)
            for r in 0..<13 {
                var one = [Float](repeating: 0, count: n)
                MatMul.linear(out: &one, x: Array(x[r * k ..< (r + 1) * k]), m: 1, w: w, n: n, k: k, kernel: kernel)
                XCTAssertEqual(one, Array(all[r * n ..< (r + 1) * n]), "\(kernel), row \(r)")
            }
        }
    }

    /// CHARTER_KERNEL may name any kernel this CPU runs, and nothing else.
    func testKernelChoiceFromTheEnvironment() throws {
        XCTAssertNil(try Kernel.fromEnvironment([:]))
        XCTAssertEqual(try Kernel.fromEnvironment(["CHARTER_KERNEL": "avx2"]), .avx2)
        XCTAssertThrowsError(try Kernel.fromEnvironment(["CHARTER_KERNEL": "AVX2"])) {
            XCTAssertEqual("\($0)", "CHARTER_KERNEL=AVX2: expected one of avx2, avx512, avx512bf16")
        }
        for (kernel, feature) in [(Kernel.avx512, "AVX-512F, BW and VL"), (.avx512bf16, "AVX512-BF16")] {
            if Kernel.runnable.contains(kernel) {
                XCTAssertEqual(try Kernel.fromEnvironment(["CHARTER_KERNEL": kernel.rawValue]), kernel)
            } else {
                XCTAssertThrowsError(try Kernel.fromEnvironment(["CHARTER_KERNEL": kernel.rawValue])) {
                    XCTAssertEqual("\($0)", "CHARTER_KERNEL=\(kernel.rawValue): this CPU has no \(feature)")
                }
            }
        }
        let flags = ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "").split(separator: "\n")
            .first { $0.hasPrefix("flags") }.map { Set($0.split(separator: " ").map(String.init)) } ?? []
        let expected: [Kernel] = [.avx2] + (flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl"]) ? [.avx512] : [])
            + (flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512_bf16"]) ? [.avx512bf16] : [])
        XCTAssertEqual(Kernel.runnable, expected)
    }

    /// VDPBF16PS multiplies bfloat16 numbers exactly and sums in float32: the kernel's result is the
    /// double-precision product of x rounded to bfloat16 (as BFloat16 rounds) and the weights, within
    /// float32 summation error, on shapes with every remainder of the 32-wide chunk and the 4x3 tile;
    /// and a row's result does not depend on the other rows.
    func testBFloat16DotKernelMatchesDoubleReferenceAndIsBatchInvariant() throws {
        try XCTSkipUnless(Kernel.runnable.contains(.avx512bf16), "this CPU has no AVX512-BF16")
        for (m, n, k) in [(1, 1, 1), (5, 7, 13), (4, 48, 64), (9, 50, 100), (3, 97, 31), (2, 5, 33), (33, 130, 576)] {
            let x = randomArray(m * k, seed: 11), w = randomArray(n * k, seed: 12).map(BFloat16.init)
            var out = [Float](repeating: 0.5, count: m * n)
            MatMul.linear(out: &out, x: x, m: m, w: w, n: n, k: k, accumulate: true, kernel: .avx512bf16)
            let ref = naive(x.map { BFloat16($0).float }, w.map(\.float), m: m, n: n, k: k)
            let worst = zip(out, ref).map { abs(Double($0) - ($1 + 0.5)) / max(1, abs($1)) }.max()!
            XCTAssertLessThanOrEqual(worst, 1e-5, "shape \(m)x\(n)x\(k): max relative error \(worst)")
            for r in [0, m - 1] {
                var one = [Float](repeating: 0, count: n)
                MatMul.linear(out: &one, x: Array(x[r * k ..< (r + 1) * k]), m: 1, w: w, n: n, k: k, kernel: .avx512bf16)
                var all = [Float](repeating: 0, count: m * n)
                MatMul.linear(out: &all, x: x, m: m, w: w, n: n, k: k, kernel: .avx512bf16)
                XCTAssertEqual(one, Array(all[r * n ..< (r + 1) * n]), "shape \(m)x\(n)x\(k), row \(r)")
            }
        }
    }

    /// Float32 to bfloat16 rounds to nearest, ties to even, on hand-worked bit patterns.
    func testBFloat16RoundsToNearestEven() {
        let cases: [(UInt32, UInt16)] = [
            (0x3F80_0000, 0x3F80), // 1
            (0xC020_0000, 0xC020), // -2.5
            (0x3F80_8000, 0x3F80), // 1 + 2^-8: a tie, the even neighbour is below
            (0x3F81_8000, 0x3F82), // 1 + 3 * 2^-8: a tie, the even neighbour is above
            (0x3F80_8001, 0x3F81), // just past the tie
            (0x3F80_7FFF, 0x3F80), // just short of it
            (0x7F7F_FFFF, 0x7F80), // the largest float rounds to infinity
            (0x0000_0001, 0x0000), // the smallest subnormal rounds to zero
        ]
        for (input, expected) in cases {
            XCTAssertEqual(BFloat16(Float(bitPattern: input)).bits, expected, String(input, radix: 16))
        }
        XCTAssertTrue(BFloat16(.nan).float.isNaN)
        XCTAssertEqual(BFloat16(-.infinity).float, -.infinity)
    }

    /// The widening bfloat16 paths (avx2, avx512) are their float32 kernel on the widened weights,
    /// bit for bit, on ragged shapes.
    func testBFloat16WeightsGiveTheFloat32ResultOfTheirWidenedValues() {
        for kernel in Kernel.runnable where kernel != .avx512bf16 {
            for (m, n, k) in [(1, 1, 1), (5, 7, 13), (9, 50, 100), (33, 130, 576)] {
                let x = randomArray(m * k, seed: 7)
                let half = randomArray(n * k, seed: 8).map(BFloat16.init)
                var viaHalf = [Float](repeating: 0.5, count: m * n), viaFloat = viaHalf
                MatMul.linear(out: &viaHalf, x: x, m: m, w: half, n: n, k: k, accumulate: true, kernel: kernel)
                MatMul.linear(out: &viaFloat, x: x, m: m, w: half.map(\.float), n: n, k: k, accumulate: true, kernel: kernel)
                XCTAssertEqual(viaHalf, viaFloat, "\(kernel), shape \(m)x\(n)x\(k)")
            }
        }
    }

    func testBLASGemmMatchesDoubleReference() {
        let (m, n, k) = (7, 9, 11)
        let x = randomArray(m * k, seed: 5), w = randomArray(n * k, seed: 6)
        var out = [Float](repeating: 0, count: m * n)
        out.withUnsafeMutableBufferPointer { o in
            BLAS.gemm(m: m, n: n, k: k, a: x, lda: k, b: w, ldb: k, transB: true, c: o.baseAddress!, ldc: n)
        }
        let worst = zip(out, naive(x, w, m: m, n: n, k: k)).map { abs(Double($0) - $1) }.max()!
        XCTAssertLessThanOrEqual(worst, 1e-5)
    }

    /// OpenBLAS must not run its generic fallback kernel on a CPU with AVX2 (about 3-6x slower).
    func testOpenBLASRunsAnOptimisedKernel() throws {
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        try XCTSkipUnless(flags.contains(" avx2"), "no AVX2 on this CPU")
        print("BLAS: \(BLAS.summary)")
        XCTAssertFalse(BLAS.fallbackKernels.contains(BLAS.kernel), "OpenBLAS runs \(BLAS.kernel)")
    }

    func testVectorExpIsAccurate() {
        var worst: Float = 0
        for i in stride(from: -80.0, through: 80.0, by: 0.37) {
            let input = Float(i)
            let ours = VectorMath.exp(input), ref = Foundation.exp(Double(input))
            worst = max(worst, Float(abs(Double(ours) - ref) / ref))
        }
        XCTAssertLessThanOrEqual(worst, 1e-6, "max relative error \(worst)")
        XCTAssertLessThan(VectorMath.exp(-Float.infinity), 1e-37)
    }

    func testSoftmaxAndLogSumExpAgainstHandValues() {
        var x: [Float] = [0, Float(log(2.0)), Float(log(3.0)), 0, 0, 0, 0, 0, 0] // 9: exercises the tail
        let lse = x.withUnsafeBufferPointer { VectorMath.logSumExp($0.baseAddress!, 9) }
        XCTAssertEqual(lse, Float(log(12.0)), accuracy: 1e-6)
        x.withUnsafeMutableBufferPointer { VectorMath.softmax($0.baseAddress!, 9) }
        XCTAssertEqual(x[1], 2 / 12, accuracy: 1e-7)
        XCTAssertEqual(x[2], 3 / 12, accuracy: 1e-7)
        XCTAssertEqual(x.reduce(0, +), 1, accuracy: 1e-6)
    }
}
