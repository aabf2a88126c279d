import ArgumentParser
import Cluster
import Logging
import Prometheus
import Telemetry

/// `--metrics-bind`: where a coordinator or worker serves /metrics (Prometheus) and /healthz.
struct MetricsOptions: ParsableArguments {
    @Option(help: "Serve /metrics (Prometheus) and /healthz on HOST:PORT, as 127.0.0.1:9100 (port 0: any free port).")
    var metricsBind: String?

    /// The server, started and said in the log; nil without --metrics-bind.
    func serve(_ registry: PrometheusCollectorRegistry, _ liveness: Liveness, logger: Logger) throws -> MetricsServer? {
        guard let metricsBind else { return nil }
        let server = try MetricsServer(bind: metricsBind, registry: registry) { liveness.health() }
        logger.info("metrics on http://\(server.address)/metrics, health on http://\(server.address)/healthz")
        return server
    }

    /// Serves what `coordinator` publishes; nil without --metrics-bind.
    func serve(_ coordinator: Coordinator, logger: Logger) throws -> MetricsServer? {
        guard metricsBind != nil else { return nil }
        let telemetry = CoordinatorMetrics()
        coordinator.metrics = telemetry
        return try serve(telemetry.registry, telemetry.liveness, logger: logger)
    }
}
