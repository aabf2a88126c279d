import Foundation
import Synchronization

/// When a process's own loop last went round, and what it was doing, for `/healthz`: a loop stuck
/// for longer than `limit` seconds is reported unhealthy, so a supervisor (Kubernetes' liveness
/// probe, say) restarts it.
public final class Liveness: Sendable {
    public let limit: Double
    private let last: Mutex<(time: Double, status: String)>

    public init(limit: Double, status: String = "starting") {
        self.limit = limit
        last = Mutex((Self.now(), status))
    }

    /// The loop went round; `status` (iteration, workers) replaces the last one when given.
    public func tick(_ status: String? = nil) {
        last.withLock { $0 = (Self.now(), status ?? $0.status) }
    }

    public func health() -> Health {
        let (time, status) = last.withLock { $0 }
        let quiet = Self.now() - time
        if quiet <= limit { return Health(ok: true, body: "ok: \(status)") }
        return Health(ok: false, body: "stuck: the loop has not gone round for \(Int(quiet)) s (limit \(Int(limit)) s); last: \(status)")
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }
}
