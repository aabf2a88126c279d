import Dispatch

public enum Parallel {
    /// Runs body(0..<count) across the cores. The caller guarantees that iterations touch
    /// disjoint memory, which Swift's checker cannot see through raw pointers.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        if count < 2 { for i in 0..<count { body(i) }; return }
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: count) { body($0) }
        }
    }
}
