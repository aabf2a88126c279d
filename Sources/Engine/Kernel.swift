import CKernels
import Foundation

/// The projection kernel this process runs: `avx2` (8-lane FMAs, MatMul.swift) unless
/// `CHARTER_KERNEL=avx512` asks for the 16-lane one (CKernels/linear_avx512.c) on a CPU with
/// AVX-512F. The AVX2 one is the default everywhere because it measured faster where it counts
/// (batch 32 decode; BENCHMARKS.md). The two sum in different orders, so their results differ in
/// the last bits: the workers of a run must run the coordinator's.
public enum Kernel: String, CaseIterable, Sendable {
    case avx2, avx512

    public static let active: Kernel = (try? fromEnvironment()) ?? .avx2

    /// Every kernel this CPU runs.
    public static var runnable: [Kernel] { charter_cpu_has_avx512f() == 1 ? [.avx2, .avx512] : [.avx2] }

    /// CHARTER_KERNEL's choice, if set; an unknown name, or one this CPU cannot run, is an error.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Kernel? {
        guard let name = environment["CHARTER_KERNEL"] else { return nil }
        guard let kernel = Kernel(rawValue: name) else {
            throw KernelError("CHARTER_KERNEL=\(name): expected one of \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if !runnable.contains(kernel) { throw KernelError("CHARTER_KERNEL=\(name): this CPU has no AVX-512F") }
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
