import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// What `/healthz` answers: 200 with `body` when `ok`, else 503.
public struct Health: Sendable {
    public var ok: Bool
    public var body: String
    public init(ok: Bool, body: String) { self.ok = ok; self.body = body }
}

public struct TelemetryError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Serves `GET /metrics` (Prometheus's text format, from `registry`) and `GET /healthz` on its own
/// event-loop thread, so a scrape is answered while the process's own loop is busy training.
public final class MetricsServer: Sendable {
    /// host:port as bound (a port of 0 becomes the one the system chose).
    public let address: String
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel

    public init(bind: String, registry: PrometheusCollectorRegistry, health: @escaping @Sendable () -> Health) throws {
        let (host, port) = try Self.parse(bind)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(Responder(registry: registry, health: health))
                }
            }
        do {
            channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw TelemetryError("--metrics-bind \(bind): cannot listen there (\(error))")
        }
        self.group = group
        address = "\(host.contains(":") ? "[\(host)]" : host):\(channel.localAddress?.port ?? port)"
    }

    public func close() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }

    /// "HOST:PORT" ("[::1]:9100" for IPv6); port 0 picks a free one.
    static func parse(_ bind: String) throws -> (String, Int) {
        let bad = TelemetryError("--metrics-bind \(bind): expected HOST:PORT, as 127.0.0.1:9100 (port 0: any free port)")
        guard let colon = bind.lastIndex(of: ":") else { throw bad }
        var host = String(bind[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(bind[bind.index(after: colon)...]), (0...65535).contains(port) else { throw bad }
        return (host, port)
    }
}

/// One HTTP/1 connection: answers each request when its end arrives; keeps the connection when the
/// client asked to (Prometheus does).
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
            var headers = HTTPHeaders([("Content-Type", type), ("Content-Length", String(body.count))])
            headers.add(name: "Connection", value: head.isKeepAlive ? "keep-alive" : "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
            let keep = head.isKeepAlive
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [context] _ in
                if !keep { context.close(promise: nil) }
            }
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
