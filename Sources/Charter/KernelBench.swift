import ArgumentParser
import Engine
import Foundation

struct KernelBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels", abstract: "GFLOP/s of the engine's projection kernels beside OpenBLAS sgemm, on SmolLM2's shapes.")

    @Option(help: "Comma-separated row counts M (tokens in a step).") var rows = "1,8,32,256"
    @Option(help: "Seconds per measurement.") var seconds = 0.5

    func run() throws {
        print("charter bench kernels: \(Kernel.withBLAS); every kernel this CPU runs is measured")
        let shapes = [(960, 576, "qkv"), (3072, 576, "gate+up"), (576, 1536, "down"), (49152, 576, "lm head")]
        for m in rows.split(separator: ",").compactMap({ Int($0) }) {
            for (n, k, name) in shapes {
                var rng = SplitMix64(seed: 1)
                let x = (0..<m * k).map { _ in rng.nextNormal() }, w = (0..<n * k).map { _ in rng.nextNormal() }
                var out = [Float](repeating: 0, count: m * n)
                let flops = 2.0 * Double(m * n * k)
                // Every kernel this CPU runs, so they are compared in one run.
                let ours = Kernel.runnable.map { kernel in
                    String(format: "%@ %6.1f", kernel.rawValue, measure(flops) { MatMul.linear(out: &out, x: x, m: m, w: w, n: n, k: k, kernel: kernel) })
                }
                // bfloat16 weights: widened as they load (avx2, avx512) or multiplied by VDPBF16PS.
                let half = w.map(BFloat16.init)
                let halves = Kernel.runnable.map { kernel in
                    String(format: "%@ %6.1f", kernel.rawValue, measure(flops) { MatMul.linear(out: &out, x: x, m: m, w: half, n: n, k: k, kernel: kernel) })
                }
                let blas = measure(flops) {
                    out.withUnsafeMutableBufferPointer { o in
                        BLAS.gemm(m: m, n: n, k: k, a: x, lda: k, b: w, ldb: k, transB: true, c: o.baseAddress!, ldc: n)
                    }
                }
                print(String(format: "M %4d  %-8@ N %5d K %4d: GFLOP/s charter %@; bf16 weights %@; OpenBLAS %6.1f", m, name, n, k,
                             ours.joined(separator: ", "), halves.joined(separator: ", "), blas))
            }
        }
    }

    func measure(_ flops: Double, _ body: () -> Void) -> Double {
        body()
        let start = ContinuousClock.now
        var count = 0
        while (ContinuousClock.now - start).seconds < seconds { body(); count += 1 }
        return flops * Double(count) / (ContinuousClock.now - start).seconds / 1e9
    }
}
