import Engine
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import Telemetry
import Tokenizer

/// What every connection of `charter serve` shares.
public struct ServeContext: Sendable {
    public let queue: EngineQueue
    public let tokenizer: BPETokenizer
    public let stopTokens: Set<Int32>
    public let context: Int
    /// The name `/v1/models` lists and answers carry.
    public let modelName: String
    let counter = Counter()

    public init(queue: EngineQueue, tokenizer: BPETokenizer, stopTokens: Set<Int32>, context: Int, modelName: String) {
        self.queue = queue; self.tokenizer = tokenizer; self.stopTokens = stopTokens; self.context = context; self.modelName = modelName
    }

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
        func next() -> Int { value.add(1, ordering: .relaxed).newValue }
    }
}

/// One connection of the OpenAI-compatible API: `GET /v1/models`, `POST /v1/completions`,
/// `POST /v1/chat/completions` (JSON, or server-sent events with `"stream": true`).
final class OpenAIHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Bodies above this are refused (a prompt is at most the model's context, far less).
    static let maxBody = 8 << 20

    let shared: ServeContext
    var request: HTTPRequestHead?
    var body = ByteBuffer()
    var tooLarge = false
    /// Set when the client goes: its answer ends at the next token.
    let gone = Gone()

    final class Gone: Sendable {
        let flag = Atomic<Bool>(false)
    }

    init(_ shared: ServeContext) { self.shared = shared }

    func channelInactive(context: ChannelHandlerContext) {
        gone.flag.store(true, ordering: .relaxed)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head; body.clear(); tooLarge = false
        case .body(var part):
            if body.readableBytes + part.readableBytes > Self.maxBody { tooLarge = true } else { body.writeBuffer(&part) }
        case .end:
            guard let head = request else { return }
            request = nil
            route(head, context: context)
        }
    }

    func route(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        switch (head.method, path) {
        case (.GET, "/v1/models"):
            let models: [String: Any] = ["object": "list", "data": [["id": shared.modelName, "object": "model", "created": 0, "owned_by": "charter"]]]
            context.respond(head, status: .ok, type: "application/json", body: Array(json(models).utf8))
        case (.POST, "/v1/completions"): generate(head, api: .completions, context: context)
        case (.POST, "/v1/chat/completions"): generate(head, api: .chat, context: context)
        case (_, "/v1/models"), (_, "/v1/completions"), (_, "/v1/chat/completions"):
            fail(head, .methodNotAllowed, "\(head.method) is not served on \(path)", context: context)
        default:
            fail(head, .notFound, "no such path: \(path) (served: /v1/models, /v1/completions, /v1/chat/completions)", context: context)
        }
    }

    func generate(_ head: HTTPRequestHead, api: ServeRequest.API, context: ChannelHandlerContext) {
        if tooLarge { return fail(head, .payloadTooLarge, "the body is larger than \(Self.maxBody) bytes", context: context) }
        let parsed: ServeRequest
        do {
            parsed = try ServeRequest.parse(Data(body.readableBytesView), api: api, tokenizer: shared.tokenizer,
                                            stopTokens: shared.stopTokens, context: shared.context)
        } catch {
            return fail(head, .badRequest, error.description, context: context)
        }
        let reply = OpenAIReply(request: parsed, tokenizer: shared.tokenizer, model: shared.modelName,
                                id: (api == .chat ? "chatcmpl-" : "cmpl-") + String(shared.counter.next()))
        let loop = context.eventLoop, bound = NIOLoopBound(context, eventLoop: loop), gone = self.gone
        func send(_ text: String, end: Bool) {
            loop.execute {
                let context = bound.value
                var buffer = context.channel.allocator.buffer(capacity: text.utf8.count)
                buffer.writeString(text)
                context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer))), promise: nil)
                if end {
                    context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in
                        if !head.isKeepAlive { context.close(promise: nil) }
                    }
                } else {
                    context.flush()
                }
            }
        }
        if parsed.stream {
            var headers = HTTPHeaders([("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
            headers.add(name: "Connection", value: head.isKeepAlive ? "keep-alive" : "close")
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
            if let opening = reply.opening() { send(opening, end: false) }
        }
        shared.queue.submit(ServeJob(request: parsed, onToken: { t, top in
            if let event = reply.add(t, top: top) { send(event, end: false) }
        }, shouldEnd: {
            reply.stopped || gone.flag.load(ordering: .relaxed)
        }, onFinish: { result in
            switch result {
            case .success(let r) where parsed.stream: send(reply.finish(r), end: true)
            case .success(let r):
                let text = reply.finish(r)
                loop.execute { bound.value.respond(head, status: .ok, type: "application/json", body: Array(text.utf8)) }
            case .failure(let error) where parsed.stream:
                send("data: " + json(Self.errorBody("\(error)", type: "server_error")) + "\n\ndata: [DONE]\n\n", end: true)
            case .failure(let error):
                loop.execute {
                    bound.value.respond(head, status: .internalServerError, type: "application/json",
                                        body: Array(json(Self.errorBody("\(error)", type: "server_error")).utf8))
                }
            }
        }))
    }

    func fail(_ head: HTTPRequestHead, _ status: HTTPResponseStatus, _ message: String, context: ChannelHandlerContext) {
        context.respond(head, status: status, type: "application/json",
                        body: Array(json(Self.errorBody(message, type: "invalid_request_error")).utf8))
    }

    static func errorBody(_ message: String, type: String) -> [String: Any] { ["error": ["message": message, "type": type]] }
}

/// `charter serve`'s listener.
public final class OpenAIServer: Sendable {
    let listener: HTTPListener
    public var address: String { listener.address }

    public init(bind: String, shared: ServeContext) throws {
        listener = try HTTPListener(bind: bind, option: "--bind") { OpenAIHandler(shared) }
    }

    public func close() { listener.close() }
}
