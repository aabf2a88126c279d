import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest

/// What an operator sees: TensorBoard event files read by the `tensorboard` package, and Debian's
/// Prometheus scraping a coordinator and a worker (tools installed by scripts/setup-ops.sh).
extension CLITests {
    static let opsPython = root.appendingPathComponent(".ops/venv/bin/python").path

    /// The scalars `tensorboard` itself reads under `folder`: run -> tag -> [(step, value)].
    func tensorboardScalars(_ folder: String) throws -> [String: [String: [[Double]]]] {
        guard FileManager.default.isExecutableFile(atPath: Self.opsPython) else { throw XCTSkip("no \(Self.opsPython): run scripts/setup-ops.sh") }
        let r = try tool(Self.opsPython, [Self.root.path + "/scripts/read-tfevents.py", folder])
        XCTAssertEqual(r.status, 0, r.err)
        return try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: [String: [[Double]]]] ?? [:]
    }

    func testTensorBoardReadsEveryMetricOfRLAndSFTRuns() throws {
        let (dir, tiny) = try tinyModelFolder("tensorboard")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 3, seed: 2, prompts: 4)
        let r = try charter("rl", "--config", path)
        XCTAssertEqual(r.status, 0, r.err)
        let rl = try tensorboardScalars(dir.path + "/run")
        XCTAssertEqual(Array(rl.keys), ["tensorboard"], "one run, in RUN/tensorboard")
        let lines = try jsonLines(dir.path + "/run/metrics.jsonl")
        for key in ["kl", "reward_mean", "policy_loss", "response_tokens_mean", "learning_rate"] {
            let points = rl["tensorboard"]?[key] ?? []
            XCTAssertEqual(points.map { Int($0[0]) }, [0, 1, 2], "\(key): a point per iteration")
            for (point, line) in zip(points, lines) {
                XCTAssertEqual(point[1], (line[key] as? Double) ?? .nan, accuracy: 1e-6 * max(1, abs(point[1])), key) // stored as float32
            }
        }
        XCTAssertNil(rl["tensorboard"]?["time"], "text is not a scalar")

        // sft writes its events with each checkpoint (the folder is replaced then).
        let out = dir.appendingPathComponent("sft").path
        let s = try charter("sft", "--model", tiny, "--data", "examples/sft-sample.jsonl", "--out", out, "--epochs", "1",
                            "--batch-size", "4", "--micro-batch-size", "2", "--eval-fraction", "0.2")
        XCTAssertEqual(s.status, 0, s.err)
        let sft = try tensorboardScalars(out)["tensorboard"] ?? [:]
        let losses = try jsonLines(out + "/metrics.jsonl").compactMap { l in (l["loss"] as? Double).map { [Double(l["step"] as! Int), $0] } }
        XCTAssertEqual(sft["loss"]?.count, losses.count)
        XCTAssertFalse(losses.isEmpty)
        for (a, b) in zip(sft["loss"] ?? [], losses) {
            XCTAssertEqual(a[0], b[0]); XCTAssertEqual(a[1], b[1], accuracy: 1e-5)
        }
        XCTAssertEqual(sft["eval_loss"]?.count, 1)
    }
}

extension CLITests {
    /// The address a process serves metrics on: its line "metrics on http://ADDRESS/metrics, ...".
    func metricsAddress(inLog log: String, of p: Child) throws -> String {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && p.isRunning {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let r = text.range(of: "metrics on http://"), let end = text[r.upperBound...].range(of: "/metrics") {
                return String(text[r.upperBound ..< end.lowerBound])
            }
            usleep(20_000)
        }
        XCTFail("no metrics address in \(log): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        throw CocoaError(.fileReadUnknown)
    }

    static func httpGet(_ url: String) -> (status: Int, body: String) { request(url, method: "GET") }

    /// An instant query of Prometheus's HTTP API: each series' instance and value.
    static func query(_ prometheus: String, _ expression: String) -> [(instance: String, value: Double)] {
        let q = expression.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? expression
        let (_, body) = httpGet("http://\(prometheus)/api/v1/query?query=\(q)")
        let object = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
        let result = ((object?["data"] as? [String: Any])?["result"] as? [[String: Any]]) ?? []
        return result.compactMap { r in
            guard let instance = (r["metric"] as? [String: Any])?["instance"] as? String, let v = r["value"] as? [Any],
                  let text = v.last as? String, let value = Double(text) else { return nil }
            return (instance, value)
        }
    }

    func testPrometheusScrapesTheCoordinatorAndAWorker() throws {
        guard let prometheus = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("no prometheus binary: run scripts/setup-ops.sh (Debian's prometheus)")
        }
        let (dir, tiny) = try tinyModelFolder("prometheus")
        let (path, _) = try runConfig(dir, model: tiny, iterations: 2, seed: 4, prompts: 4)
        func log(_ name: String) -> String { (try? String(contentsOfFile: "\(dir.path)/\(name).log", encoding: .utf8)) ?? "" }
        let (coordinator, endpoint) = try startCoordinator(["--config", path, "--prompts-per-task", "1", "--metrics-bind", "127.0.0.1:0"], log: dir.path + "/c.log")
        let coordinatorMetrics = try metricsAddress(inLog: dir.path + "/c.log", of: coordinator)
        // Does one task, then holds the next for ever: the run waits while Prometheus scrapes.
        let slow = try start(["worker", "--connect", endpoint, "--id", "slow", "--stall-after-tasks", "1", "--metrics-bind", "127.0.0.1:0"], log: dir.path + "/slow.log")
        defer { for p in [coordinator, slow] where p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let workerMetrics = try metricsAddress(inLog: dir.path + "/slow.log", of: slow)

        let port = try freeLoopbackPort(), api = "127.0.0.1:\(port)"
        let config = """
            global: {scrape_interval: 1s, evaluation_interval: 1s}
            scrape_configs:
              - job_name: charter
                static_configs: [{targets: ["\(coordinatorMetrics)", "\(workerMetrics)"]}]
            """
        try Data(config.utf8).write(to: dir.appendingPathComponent("prometheus.yml"))
        let server = try start(["--config.file=\(dir.path)/prometheus.yml", "--storage.tsdb.path=\(dir.path)/tsdb", "--web.listen-address=\(api)"],
                               log: dir.path + "/prometheus.log", executable: prometheus)
        defer { server.terminate(); server.waitUntilExit(seconds: 30) }

        // Both targets up, the worker's finished task and the coordinator's done task in the TSDB.
        let deadline = Date().addingTimeInterval(90)
        var up: [(instance: String, value: Double)] = [], tasks: [(instance: String, value: Double)] = [], done: [(instance: String, value: Double)] = []
        repeat {
            usleep(500_000)
            up = Self.query(api, #"up{job="charter"}"#)
            tasks = Self.query(api, "charter_worker_tasks_total")
            done = Self.query(api, #"charter_tasks{state="done"}"#)
        } while Date() < deadline && !(up.count == 2 && up.allSatisfy { $0.value == 1 } && tasks.first?.value == 1 && (done.first?.value ?? 0) >= 1)
        XCTAssertEqual(Set(up.filter { $0.value == 1 }.map(\.instance)), [coordinatorMetrics, workerMetrics], "both targets scraped: \(log("prometheus"))")
        XCTAssertEqual(tasks.map(\.instance), [workerMetrics]); XCTAssertEqual(tasks.first?.value, 1)
        XCTAssertEqual(done.map(\.instance), [coordinatorMetrics]); XCTAssertGreaterThanOrEqual(done.first?.value ?? 0, 1)
        XCTAssertEqual(Self.query(api, #"charter_dropped_messages_total{kind="malformed"}"#).first?.value, 0)
        XCTAssertGreaterThan(Self.query(api, #"charter_worker_tokens_total{job="charter",worker="slow"}"#).first?.value ?? 0, 0)
        let health = Self.httpGet("http://\(coordinatorMetrics)/healthz")
        XCTAssertEqual(health.status, 200); XCTAssertTrue(health.body.hasPrefix("ok: iteration 0"), health.body)

        // A healthy worker finishes the run.
        let helper = try start(["worker", "--connect", endpoint, "--id", "helper"], log: dir.path + "/helper.log")
        defer { if helper.isRunning { helper.terminate() } }
        XCTAssertEqual(exitStatus(coordinator, by: Date().addingTimeInterval(120)), 0, log("c"))
    }
}
