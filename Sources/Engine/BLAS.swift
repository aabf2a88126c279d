#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The one door to OpenBLAS.
///
/// OpenBLAS chooses its kernels in a constructor that runs when the library loads, from the
/// environment variable OPENBLAS_CORETYPE or its own CPU detection. Debian's 0.3.21 build mistakes
/// recent AVX-512 CPUs for a Prescott and runs about 6x slower. Linking the library would run that
/// constructor before `main`, so instead we open it with `dlopen` on first use, after setting the
/// core type from the CPU flags when the user has not set it. Every process (the `charter` binary,
/// the test runner) then gets the fast kernels with nothing to set by hand.
public enum BLAS {
    /// Kernel names that mean OpenBLAS fell back to a generic x86 path.
    public static let fallbackKernels: Set<String> = ["Prescott", "Core2", "Katmai", "Coppermine", "Northwood", "Banias", "Atom", "Nano", "Dunnington", "Penryn", "generic", "unknown"]

    typealias SgemmFn = @convention(c) (
        Int32, Int32, Int32, Int32, Int32, Int32, Float,
        UnsafePointer<Float>?, Int32, UnsafePointer<Float>?, Int32, Float,
        UnsafeMutablePointer<Float>?, Int32) -> Void
    typealias CorenameFn = @convention(c) () -> UnsafeMutablePointer<CChar>?
    typealias SetThreadsFn = @convention(c) (Int32) -> Void
    typealias GetThreadsFn = @convention(c) () -> Int32

    struct Library: @unchecked Sendable {
        let sgemm: SgemmFn
        let corename: String
        let setThreads: SetThreadsFn
        let getThreads: GetThreadsFn
        let chosenCoreType: String?
    }

    /// Loaded once; a process without OpenBLAS stops here with a message saying how to install it.
    static let library: Library = load()

    /// The kernel OpenBLAS runs ("Haswell", "SkylakeX", ...).
    public static var kernel: String { library.corename }
    /// What Charter set OPENBLAS_CORETYPE to, or nil when it was already set or left to detection.
    public static var chosenCoreType: String? { library.chosenCoreType }
    public static var threads: Int { Int(library.getThreads()) }
    public static func setThreads(_ n: Int) { library.setThreads(Int32(n)) }

    /// One line for `--version` and benchmark headers.
    public static var summary: String {
        let how = chosenCoreType.map { "OPENBLAS_CORETYPE=\($0) set by charter" }
            ?? (ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"].map { "OPENBLAS_CORETYPE=\($0) from the environment" } ?? "detected by OpenBLAS")
        return "OpenBLAS kernel \(kernel) (\(how)), \(threads) threads"
    }

    /// The core type to ask for, from /proc/cpuinfo flags; nil leaves the choice to OpenBLAS.
    static func coreType(forCPUFlags flags: Set<String>) -> String? {
        if flags.contains("avx512f") && flags.contains("avx512bw") && flags.contains("avx512vl") {
            return flags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX"
        }
        if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
        return nil
    }

    static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }

    private static func load() -> Library {
        var chosen: String? = nil
        if ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
           let type = coreType(forCPUFlags: cpuFlags()) {
            setenv("OPENBLAS_CORETYPE", type, 1)
            chosen = type
        }
        // Idle OpenBLAS threads spin for a long while by default, stealing a core from the engine's
        // own vector loops between products; let them sleep soon instead.
        if ProcessInfo.processInfo.environment["OPENBLAS_THREAD_TIMEOUT"] == nil { setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1) }
        let names = ["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"]
        guard let handle = names.lazy.compactMap({ dlopen($0, RTLD_NOW | RTLD_GLOBAL) }).first else {
            fatalError("charter: cannot load OpenBLAS (\(String(cString: dlerror()))); install it with: apt-get install libopenblas-dev")
        }
        func symbol<T>(_ name: String, as: T.Type) -> T {
            guard let p = dlsym(handle, name) else { fatalError("charter: OpenBLAS lacks \(name)") }
            return unsafeBitCast(p, to: T.self)
        }
        let corename = symbol("openblas_get_corename", as: CorenameFn.self)
        return Library(
            sgemm: symbol("cblas_sgemm", as: SgemmFn.self),
            corename: corename().map { String(cString: $0) } ?? "unknown",
            setThreads: symbol("openblas_set_num_threads", as: SetThreadsFn.self),
            getThreads: symbol("openblas_get_num_threads", as: GetThreadsFn.self),
            chosenCoreType: chosen)
    }

    private static let rowMajor: Int32 = 101, noTrans: Int32 = 111, trans: Int32 = 112

    /// C (M, N) = alpha * A (M, K) * op(B) + beta * C, row-major.
    /// With `transB` B is stored (N, K) (a PyTorch weight), otherwise (K, N).
    @inline(__always)
    public static func gemm(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, transA: Bool = false,
        b: UnsafePointer<Float>, ldb: Int, transB: Bool,
        c: UnsafeMutablePointer<Float>, ldc: Int,
        alpha: Float = 1, beta: Float = 0
    ) {
        if m == 0 || n == 0 { return }
        library.sgemm(rowMajor, transA ? trans : noTrans, transB ? trans : noTrans,
                      Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}
