import Foundation
import Prometheus
import Telemetry
import Wire

/// What an operator scrapes from a worker (`--metrics-bind`): its tasks, tokens and speed, and the
/// model versions it holds. Updated by the worker's own thread; served from the server's.
public final class WorkerMetrics {
    public let registry = PrometheusCollectorRegistry()
    /// The loop goes round between generation passes too (heartbeats), so minutes of silence mean stuck.
    public let liveness = Liveness(limit: 300)
    let tasks: Counter, tokens: Counter, tokensPerSecond: Gauge, registered: Gauge
    var lastPublished = -Double.infinity

    public init() {
        tasks = registry.makeCounter(name: "charter_worker_tasks_total", help: "Tasks this worker finished and sent.")
        tokens = registry.makeCounter(name: "charter_worker_tokens_total", help: "Tokens this worker generated in finished tasks.")
        tokensPerSecond = registry.makeGauge(name: "charter_worker_tokens_per_second", help: "Tokens generated per second in the last task.")
        registered = registry.makeGauge(name: "charter_worker_registered", help: "1 once the coordinator welcomed this worker, 0 while it registers.")
    }

    /// A task's result went out after `seconds`.
    func finished(_ result: Charter_V1_TaskResult, seconds: Double) {
        let n = result.samples.reduce(0) { $0 + $1.response.count } + result.items.reduce(0) { $0 + $1.textTokens.reduce(0) { $0 + Int($1) } }
        tasks.increment()
        tokens.increment(by: Int64(n))
        tokensPerSecond.set(seconds > 0 ? Double(n) / seconds : 0)
    }

    /// Each loop round: /healthz's clock; at most twice a second, the status it shows, the
    /// registration state and the versions held.
    func tick(registered isRegistered: Bool, versions: [String: Int], tasksDone: Int, now: Double) {
        guard now - lastPublished >= 0.5 else { return liveness.tick() }
        lastPublished = now
        liveness.tick(isRegistered ? "registered, \(tasksDone) tasks done" : "registering")
        registered.set(Int64(isRegistered ? 1 : 0))
        for (model, v) in versions {
            registry.makeGauge(name: "charter_worker_model_version", labels: [("model", model)], help: "The version of each model this worker holds.").set(Int64(v))
        }
    }
}
