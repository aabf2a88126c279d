import Alignment
import Formats
import Foundation
import Prometheus
import Telemetry

/// What an operator scrapes from a coordinator (`--metrics-bind`). The coordinator's loop copies its
/// figures into the registry at most every `interval` seconds; the server answers scrapes from its
/// own thread, so a scrape during a training step gets the last figures at once.
public final class CoordinatorMetrics {
    public let registry = PrometheusCollectorRegistry()
    /// A training step runs between polls of the loop: PPO on a large model takes minutes.
    public let liveness = Liveness(limit: 900)
    let interval: Double
    var lastPublished = -Double.infinity
    /// Each counter's value as last published: Prometheus counters only go up, by the difference.
    var published: [String: Int] = [:]
    var stage: (name: String, gauge: Gauge)?

    public init(interval: Double = 0.5) { self.interval = interval }

    /// Copies `c`'s figures into the registry, unless it did less than `interval` seconds ago.
    func publish(_ c: Coordinator, now: Double) {
        guard now - lastPublished >= interval else { return }
        lastPublished = now
        let s = c.scheduler, tasks = s.taskCounts
        gauge("charter_iteration", "The iteration being gathered (-1 before the first).").set(Int64(s.iteration))
        gauge("charter_policy_version", "The policy version workers generate with.").set(Int64(c.version))
        gauge("charter_workers_alive", "Registered workers that heartbeat.").set(Int64(s.aliveWorkers.count))
        gauge("charter_workers_quarantined", "Workers that sent an invalid result: registered, given no task.").set(Int64(s.quarantined.count))
        for (state, n) in [("queued", tasks.queued), ("leased", tasks.leased), ("done", tasks.done)] {
            registry.makeGauge(name: "charter_tasks", labels: [("state", state)], help: "Tasks of the current iteration or stage.").set(Int64(n))
        }
        let k = c.counters, sk = s.counters
        count("charter_redispatched_total", "Tasks given out again (lost worker, refused result).", sk.redispatched)
        count("charter_speculative_copies_total", "Copies of straggling tasks given to idle workers.", sk.speculative)
        count("charter_items_dispatched_total", "Stage items handed to workers, re-dispatches included.", sk.itemsDispatched)
        count("charter_broadcast_bytes_total", "Weight chunk bytes the coordinator sent.", k.bytesBroadcast)
        let dropped = [("malformed", k.malformed), ("version_mismatch", k.versionMismatch), ("kernel_mismatch", k.kernelMismatch),
                       ("unknown_message", k.unknownMessage), ("not_registered", k.notRegistered), ("curve_refused", k.curveRefused),
                       ("mismatched_result", k.mismatchedResults), ("invalid_result", k.invalidResults), ("duplicate_result", sk.duplicates),
                       ("stale_result", sk.stale), ("unknown_result", sk.unknown), ("quarantined_result", sk.fromQuarantined)]
        for (kind, n) in dropped {
            count("charter_dropped_messages_total", "Messages and results dropped, by why.", n, labels: [("kind", kind)])
        }
        for (worker, n) in c.tokensByWorker {
            count("charter_worker_tokens_total", "Tokens generated in accepted results, by worker (rate() gives tokens/s).", n, labels: [("worker", worker)])
        }
        liveness.tick("iteration \(s.iteration), \(s.aliveWorkers.count) workers alive, \(tasks.queued) tasks queued")
    }

    /// The stage the coordinator runs (`charter_stage{name=...} 1`); nil: rollouts of an RL run.
    func setStage(_ name: String?) {
        if let stage, stage.name != name { registry.unregisterGauge(stage.gauge); self.stage = nil }
        guard let name, stage == nil else { return }
        let g = registry.makeGauge(name: "charter_stage", labels: [("name", name)], help: "The stage running now (1).")
        g.set(Int64(1))
        stage = (name, g)
    }

    /// The figures of the last finished iteration (reward, KL, ...), each as `charter_last_<name>`.
    public func iterationFinished(_ m: IterationMetrics) {
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard let data = try? encoder.encode(m), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return }
        for (name, value) in object {
            guard let n = JSONValue.number(value) else { continue } // a diverged figure ("nan") keeps its last value
            gauge("charter_last_" + Self.metricName(name), "\(name) of the last finished iteration (metrics.jsonl).").set(n)
        }
    }

    func gauge(_ name: String, _ help: String) -> Gauge { registry.makeGauge(name: name, help: help) }

    func count(_ name: String, _ help: String, _ value: Int, labels: [(String, String)] = []) {
        let key = name + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        let delta = value - published[key, default: 0]
        guard delta > 0 || published[key] == nil else { return }
        registry.makeCounter(name: name, labels: labels, help: help).increment(by: Int64(max(delta, 0)))
        published[key] = value
    }

    /// rewardMean -> reward_mean; anything outside [a-zA-Z0-9_] becomes _.
    static func metricName(_ key: String) -> String {
        var out = ""
        for ch in key {
            if ch.isUppercase, !out.isEmpty { out += "_" }
            out += ch.isASCII && (ch.isLetter || ch.isNumber) ? ch.lowercased() : "_"
        }
        return out
    }
}
