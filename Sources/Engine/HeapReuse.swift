import CKernels
import Foundation

/// The engine allocates activations, logits and gradients afresh on every pass, many of them
/// megabytes. glibc serves blocks that large with mmap and hands them back with munmap, so every
/// pass faulted its pages in and the kernel zeroed them again: about a tenth of a PPO iteration went
/// to that (BENCHMARKS.md, "Freed memory kept for the next pass"). Taking every block from the heap
/// and never trimming it reuses the same pages pass after pass: the peak stays what it was, but the
/// process holds on to it until it exits.
public enum HeapReuse {
    /// Whether `enable` changed glibc's settings; a user's MALLOC_MMAP_MAX_ or
    /// MALLOC_TRIM_THRESHOLD_ in the environment is left in charge.
    public private(set) static nonisolated(unsafe) var enabled = false

    public static func enable() {
        let env = ProcessInfo.processInfo.environment
        guard env["MALLOC_MMAP_MAX_"] == nil && env["MALLOC_TRIM_THRESHOLD_"] == nil else { return }
        enabled = charter_heap_reuse() == 1
    }

    /// The main heap's bytes, the bytes in blocks mapped on their own, and the heap's free bytes.
    public static var figures: (heap: Int, mapped: Int, free: Int) {
        let f = charter_heap_figures()
        return (Int(f.heap), Int(f.mapped), Int(f.free))
    }
}
