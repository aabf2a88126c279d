import NIOCore
import NIOHTTP1
import NIOPosix

public struct TelemetryError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// An HTTP/1 server on its own event-loop threads: SwiftNIO parses the requests, and each
/// connection gets a handler of its own from `handler`.
public final class HTTPListener: Sendable {
    /// host:port as bound (a port of 0 becomes the one the system chose).
    public let address: String
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel

    /// `option` names the setting in errors ("--metrics-bind 1.2.3.4:99: cannot listen there ...").
    public init(bind: String, option: String, handler: @escaping @Sendable () -> any ChannelHandler) throws {
        let (host, port) = try Self.parse(bind, option: option)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(handler())
                }
            }
        do {
            channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw TelemetryError("\(option) \(bind): cannot listen there (\(error))")
        }
        self.group = group
        address = "\(host.contains(":") ? "[\(host)]" : host):\(channel.localAddress?.port ?? port)"
    }

    public func close() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }

    /// "HOST:PORT" ("[::1]:9100" for IPv6); port 0 picks a free one.
    static func parse(_ bind: String, option: String) throws -> (String, Int) {
        let bad = TelemetryError("\(option) \(bind): expected HOST:PORT, as 127.0.0.1:9100 (port 0: any free port)")
        guard let colon = bind.lastIndex(of: ":") else { throw bad }
        var host = String(bind[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(bind[bind.index(after: colon)...]), (0...65535).contains(port) else { throw bad }
        return (host, port)
    }
}

extension ChannelHandlerContext {
    /// Writes a whole response with a body; closes the connection after it unless the client keeps it.
    public func respond(_ request: HTTPRequestHead, status: HTTPResponseStatus, type: String, body: [UInt8], keepAlive: Bool? = nil) {
        let keep = keepAlive ?? request.isKeepAlive
        var headers = HTTPHeaders([("Content-Type", type), ("Content-Length", String(body.count))])
        headers.add(name: "Connection", value: keep ? "keep-alive" : "close")
        write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(channel.allocator.buffer(bytes: body)))), promise: nil)
        let context = self
        writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in
            if !keep { context.close(promise: nil) }
        }
    }
}
