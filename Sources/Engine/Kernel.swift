import CKernels
import Foundation

/// The projection kernel this process runs: `avx2` (8-lane FMAs, MatMul.swift) unless
/// CHARTER_KERNEL names another this CPU runs: `avx512` (16-lane FMAs, CKernels/linear_avx512.c) or
/// `avx512bf16`, which is `avx512` for float32 weights and, for bfloat16 weights, rounds the
/// activations to bfloat16 and multiplies pairs with VDPBF16PS (CKernels/linear_avx512bf16.c).
/// `avx2` and `avx512` widen bfloat16 weights to float32 as they load them. The AVX2 one is the
/// default everywhere because it measured faster where it counts (batch 32 decode; BENCHMARKS.md).
/// The kernels sum in different orders, so their results differ in the last bits: the workers of a
/// run must run the coordinator's.
public enum Kernel: String, CaseIterable, Sendable {
    case avx2, avx512, avx512bf16

    public static let active: Kernel = (try? fromEnvironment()) ?? .avx2

    /// Every kernel this CPU runs.
    public static var runnable: [Kernel] {
        [.avx2] + (charter_cpu_has_avx512f() == 1 ? [.avx512] : []) + (charter_cpu_has_avx512bf16() == 1 ? [.avx512bf16] : [])
    }

    /// CHARTER_KERNEL's choice, if set; an unknown name, or one this CPU cannot run, is an error.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Kernel? {
        guard let name = environment["CHARTER_KERNEL"] else { return nil }
        guard let kernel = Kernel(rawValue: name) else {
            throw KernelError("CHARTER_KERNEL=\(name): expected one of \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if !runnable.contains(kernel) { throw KernelError("CHARTER_KERNEL=\(name): this CPU has no \(kernel == .avx512 ? "AVX-512F, BW and VL" : "AVX512-BF16")") }
        return kernel
    }

    /// This process's projection kernel, for `--version`, benchmark headers and run logs.
    public static var summary: String {
        "projection kernel \(active.rawValue) (\(ProcessInfo.processInfo.environment["CHARTER_KERNEL"] != nil ? "CHARTER_KERNEL" : "default"))"
    }

    /// Both kernels this process computes with: the projection one and OpenBLAS's.
    public static var withBLAS: String { "\(summary), \(BLAS.summary)" }
}

public struct KernelError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
