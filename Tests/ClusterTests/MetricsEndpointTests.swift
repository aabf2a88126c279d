@testable import Alignment
@testable import Cluster
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Prometheus
import Telemetry
import XCTest

/// The /metrics and /healthz server over a real socket, and what the coordinator publishes into it.
final class MetricsEndpointTests: XCTestCase {
    /// GET over HTTP/1.1: status and body.
    static func get(_ url: String) throws -> (Int, String) {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var answer: (Int, String)?
        var request = URLRequest(url: URL(string: url)!)
        request.timeoutInterval = 10
        URLSession.shared.dataTask(with: request) { data, response, _ in
            answer = ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data ?? Data(), as: UTF8.self))
            done.signal()
        }.resume()
        done.wait()
        return answer ?? (0, "")
    }

    func testServesMetricsHealthAndRefusesTheRest() throws {
        let registry = PrometheusCollectorRegistry()
        registry.makeCounter(name: "charter_test_total", help: "A test counter.").increment(by: Int64(3))
        let liveness = Liveness(limit: 60, status: "iteration 2")
        let server = try MetricsServer(bind: "127.0.0.1:0", registry: registry) { liveness.health() }
        defer { server.close() }
        XCTAssertFalse(server.address.hasSuffix(":0"), "port 0 becomes the port the system chose: \(server.address)")
        let (status, body) = try Self.get("http://\(server.address)/metrics")
        XCTAssertEqual(status, 200)
        XCTAssertTrue(body.contains("# TYPE charter_test_total counter"), body)
        XCTAssertTrue(body.contains("charter_test_total 3"), body)
        XCTAssertEqual(try Self.get("http://\(server.address)/healthz").0, 200)
        XCTAssertEqual(try Self.get("http://\(server.address)/healthz").1, "ok: iteration 2\n")
        XCTAssertEqual(try Self.get("http://\(server.address)/nothing").0, 404)
    }

    func testAStuckLoopIsUnhealthy() throws {
        let liveness = Liveness(limit: 0.05, status: "iteration 7")
        usleep(100_000)
        let server = try MetricsServer(bind: "127.0.0.1:0", registry: PrometheusCollectorRegistry()) { liveness.health() }
        defer { server.close() }
        let (status, body) = try Self.get("http://\(server.address)/healthz")
        XCTAssertEqual(status, 503)
        XCTAssertTrue(body.hasPrefix("stuck: the loop has not gone round for"), body)
        XCTAssertTrue(body.contains("last: iteration 7"), body)
        liveness.tick()
        XCTAssertEqual(try Self.get("http://\(server.address)/healthz").0, 200)
    }

    func testBadBindAddressesGetOneLine() throws {
        for bad in ["9100", "localhost", ":9100", "127.0.0.1:port", "127.0.0.1:70000"] {
            XCTAssertThrowsError(try MetricsServer(bind: bad, registry: PrometheusCollectorRegistry()) { Health(ok: true, body: "") }) { error in
                XCTAssertEqual("\(error)", "--metrics-bind \(bad): expected HOST:PORT, as 127.0.0.1:9100 (port 0: any free port)")
            }
        }
        // A port someone else holds: the error names the address and the reason.
        let first = try MetricsServer(bind: "127.0.0.1:0", registry: PrometheusCollectorRegistry()) { Health(ok: true, body: "") }
        defer { first.close() }
        XCTAssertThrowsError(try MetricsServer(bind: first.address, registry: PrometheusCollectorRegistry()) { Health(ok: true, body: "") }) { error in
            XCTAssertTrue("\(error)".hasPrefix("--metrics-bind \(first.address): cannot listen there"), "\(error)")
            XCTAssertFalse("\(error)".contains("\n"))
        }
    }

    /// Counters go up by what changed since the last publish; figures of an iteration become gauges.
    func testPublishedFiguresFollowTheCoordinator() throws {
        var settings = Coordinator.Settings()
        settings.bind = "tcp://127.0.0.1:*"
        let coordinator = try Coordinator(settings: settings, configText: "", rollout: .init(), runId: "metrics-test", logger: .init(label: "t"))
        let metrics = CoordinatorMetrics(interval: 0)
        coordinator.metrics = metrics
        coordinator.counts.malformed = 2
        coordinator.tokensByWorker["w1"] = 40
        metrics.publish(coordinator, now: 1)
        coordinator.counts.malformed = 5
        coordinator.tokensByWorker["w1"] = 100
        metrics.publish(coordinator, now: 2)
        metrics.setStage("revise")
        let text = metrics.registry.emitToString()
        XCTAssertTrue(text.contains(#"charter_dropped_messages_total{kind="malformed"} 5"#), text)
        XCTAssertTrue(text.contains(#"charter_dropped_messages_total{kind="not_registered"} 0"#), text)
        XCTAssertTrue(text.contains(#"charter_worker_tokens_total{worker="w1"} 100"#), text)
        XCTAssertTrue(text.contains("charter_workers_alive 0"), text)
        XCTAssertTrue(text.contains(#"charter_tasks{state="queued"} 0"#), text)
        XCTAssertTrue(text.contains(#"charter_stage{name="revise"} 1"#), text)
        metrics.setStage(nil)
        XCTAssertFalse(metrics.registry.emitToString().contains("charter_stage{"))
        var m = IterationMetrics()
        m.kl = 0.25; m.rewardMean = 0.5; m.policyLoss = .nan; m.earlyStopped = true
        metrics.iterationFinished(m)
        let figures = metrics.registry.emitToString()
        XCTAssertTrue(figures.contains("charter_last_kl 0.25"), figures)
        XCTAssertTrue(figures.contains("charter_last_reward_mean 0.5"), figures)
        XCTAssertFalse(figures.contains("charter_last_policy_loss"), "a NaN is not a figure: \(figures)")
        XCTAssertFalse(figures.contains("charter_last_early_stopped"), "a boolean is not a figure: \(figures)")
        XCTAssertEqual(CoordinatorMetrics.metricName("rewardMean"), "reward_mean")
        XCTAssertEqual(CoordinatorMetrics.metricName("kl"), "kl")
        XCTAssertEqual(CoordinatorMetrics.metricName("a-b.c"), "a_b_c")
    }
}
