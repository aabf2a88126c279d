import NIOCore
import NIOHTTP1
import Prometheus

/// What `/healthz` answers: 200 with `body` when `ok`, else 503.
public struct Health: Sendable {
    public var ok: Bool
    public var body: String
    public init(ok: Bool, body: String) { self.ok = ok; self.body = body }
}

/// Serves `GET /metrics` (Prometheus's text format, from `registry`) and `GET /healthz` on its own
/// event-loop thread, so a scrape is answered while the process's own loop is busy training.
public final class MetricsServer: Sendable {
    let listener: HTTPListener
    /// host:port as bound (a port of 0 becomes the one the system chose).
    public var address: String { listener.address }

    public init(bind: String, registry: PrometheusCollectorRegistry, health: @escaping @Sendable () -> Health) throws {
        listener = try HTTPListener(bind: bind, option: "--metrics-bind") { Responder(registry: registry, health: health) }
    }

    public func close() { listener.close() }
}

/// One HTTP/1 connection: answers each request when its end arrives.
final class Responder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: PrometheusCollectorRegistry
    let health: @Sendable () -> Health
    var request: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry, health: @escaping @Sendable () -> Health) {
        self.registry = registry; self.health = health
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): request = head
        case .body: break
        case .end:
            guard let head = request else { return }
            request = nil
            let (status, type, body) = answer(head)
            context.respond(head, status: status, type: type, body: body)
        }
    }

    func answer(_ head: HTTPRequestHead) -> (HTTPResponseStatus, String, [UInt8]) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard head.method == .GET else { return (.methodNotAllowed, "text/plain", Array("GET only\n".utf8)) }
        switch path {
        case "/metrics": return (.ok, "text/plain; version=0.0.4; charset=utf-8", registry.emitToBuffer())
        case "/healthz":
            let h = health()
            return (h.ok ? .ok : .serviceUnavailable, "text/plain", Array((h.body + "\n").utf8))
        default: return (.notFound, "text/plain", Array("not found: /metrics and /healthz are served here\n".utf8))
        }
    }
}
