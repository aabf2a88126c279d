import Buffers
import CZeroMQ
import Foundation

/// One frame of a multipart message.
public enum Frame: Sendable {
    /// Copied into the message (small headers).
    case data(Data)
    /// Handed to libzmq without a copy (bulk tensor data): `count` bytes from `offset`.
    case shared(SharedBuffer, offset: Int = 0, count: Int)

    public init(_ string: String) { self = .data(Data(string.utf8)) }
}

/// libzmq's free callback for zero-copy frames: drops the retain taken at send.
private let releaseSharedBuffer: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void = { _, hint in
    if let hint { Unmanaged<SharedBuffer>.fromOpaque(hint).release() }
}

/// A ZeroMQ socket. Not thread-safe: one thread owns it. Linger is 0 from the start, so closing
/// never waits for undelivered messages.
public final class ZMQSocket {
    public enum Kind: Int32, Sendable {
        case pair = 0, pub = 1, sub = 2, req = 3, rep = 4, dealer = 5, router = 6, pull = 7, push = 8, xpub = 9, xsub = 10
    }

    let handle: UnsafeMutableRawPointer
    public let kind: Kind
    private var closed = false
    /// Held so the context (whose end waits for every socket) outlives its sockets, whatever order
    /// their owners release them in.
    private let context: ZMQContext

    public init(_ context: ZMQContext, _ kind: Kind) throws(ZMQError) {
        guard let h = zmq_socket(context.handle, kind.rawValue) else { throw ZMQError(code: zmq_errno(), operation: "socket") }
        handle = h
        self.kind = kind
        self.context = context
        try set(ZMQ_LINGER, 0)
    }

    deinit { close() }

    public func close() {
        if closed { return }
        closed = true
        zmq_close(handle)
    }

    // MARK: options (libzmq's int options take a 4-byte Int32; 64-bit ones an Int64)

    func set(_ option: Int32, _ value: Int32) throws(ZMQError) {
        var v = value
        _ = try call("setsockopt \(option)") { zmq_setsockopt(handle, option, &v, 4) }
    }

    func set(_ option: Int32, int64 value: Int64) throws(ZMQError) {
        var v = value
        _ = try call("setsockopt \(option)") { zmq_setsockopt(handle, option, &v, 8) }
    }

    func set(_ option: Int32, _ value: String) throws(ZMQError) {
        _ = try call("setsockopt \(option)") { value.withCString { zmq_setsockopt(handle, option, $0, strlen($0)) } }
    }

    func set(_ option: Int32, bytes: Data) throws(ZMQError) {
        _ = try call("setsockopt \(option)") { bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) } }
    }

    func getInt(_ option: Int32) throws(ZMQError) -> Int32 {
        var v: Int32 = 0, size = 4
        _ = try call("getsockopt \(option)") { zmq_getsockopt(handle, option, &v, &size) }
        return v
    }

    /// CURVE server: clients must know `publicKey(for: secretKey)` to connect.
    public func makeCurveServer(secretKey: String) throws(ZMQError) {
        try set(ZMQ_CURVE_SERVER, 1)
        try set(ZMQ_CURVE_SECRETKEY, secretKey)
    }

    /// CURVE client of a server whose public key is `serverKey`.
    public func makeCurveClient(serverKey: String, keys: CurveKeyPair) throws(ZMQError) {
        try set(ZMQ_CURVE_SERVERKEY, serverKey)
        try set(ZMQ_CURVE_PUBLICKEY, keys.publicKey)
        try set(ZMQ_CURVE_SECRETKEY, keys.secretKey)
    }

    // MARK: endpoints

    /// Binds and returns the endpoint actually bound (the port chosen for "tcp://127.0.0.1:*").
    @discardableResult
    public func bind(_ endpoint: String) throws(ZMQError) -> String {
        _ = try call("bind \(endpoint)") { zmq_bind(handle, endpoint) }
        var buffer = [CChar](repeating: 0, count: 256), size = 256
        _ = try call("getsockopt last_endpoint") { zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) }
        return String(cString: buffer)
    }

    public func connect(_ endpoint: String) throws(ZMQError) {
        _ = try call("connect \(endpoint)") { zmq_connect(handle, endpoint) }
    }

    public func disconnect(_ endpoint: String) throws(ZMQError) {
        _ = try call("disconnect \(endpoint)") { zmq_disconnect(handle, endpoint) }
    }

    /// A PAIR socket that receives this socket's `events`; read them with `ZMQSocket.monitorEvent`.
    public func monitor(events: MonitorEvents) throws(ZMQError) -> ZMQSocket {
        let endpoint = "inproc://monitor-\(UInt(bitPattern: handle))"
        _ = try call("socket_monitor") { zmq_socket_monitor(handle, endpoint, events.rawValue) }
        let pair = try ZMQSocket(context, .pair)
        try pair.connect(endpoint)
        return pair
    }

    /// The event number of a message from a monitor socket (first frame: 16-bit event, 32-bit value).
    public static func monitorEvent(_ frames: [Data]) -> MonitorEvents? {
        guard let first = frames.first, first.count >= 2 else { return nil }
        return MonitorEvents(rawValue: Int32(first.withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) }))
    }

    // MARK: messages

    /// Sends a multipart message. With `wait` false, returns false instead of blocking (EAGAIN);
    /// nothing is sent then. Shared frames go without a copy.
    @discardableResult
    public func send(_ frames: [Frame], wait: Bool = true) throws(ZMQError) -> Bool {
        precondition(!frames.isEmpty, "a message has at least one frame")
        for (i, frame) in frames.enumerated() {
            var flags: Int32 = i < frames.count - 1 ? ZMQ_SNDMORE : 0
            if !wait { flags |= ZMQ_DONTWAIT }
            var msg = zmq_msg_t()
            switch frame {
            case .data(let d):
                _ = try call("msg_init_size") { zmq_msg_init_size(&msg, d.count) }
                d.withUnsafeBytes { if let src = $0.baseAddress { zmq_msg_data(&msg).copyMemory(from: src, byteCount: d.count) } }
            case .shared(let buffer, let offset, let count):
                precondition(offset >= 0 && offset + count <= buffer.bytes.count, "frame outside its buffer")
                let hint = Unmanaged.passRetained(buffer).toOpaque()
                let rc = zmq_msg_init_data(&msg, buffer.bytes.baseAddress! + offset, count, releaseSharedBuffer, hint)
                if rc != 0 { Unmanaged<SharedBuffer>.fromOpaque(hint).release(); throw ZMQError(code: zmq_errno(), operation: "msg_init_data") }
            }
            do {
                _ = try call("send") { zmq_msg_send(&msg, handle, flags) }
            } catch {
                zmq_msg_close(&msg) // after a failed send the message is still ours
                // EAGAIN can only happen on the first frame: a multipart message is queued whole.
                if error.isAgain && i == 0 { return false }
                throw error
            }
        }
        return true
    }

    /// Receives a whole multipart message, or nil when `wait` is false and nothing is queued.
    /// Frames of at least `noCopyThreshold` bytes are handed over without a copy.
    public func receive(wait: Bool = true, noCopyThreshold: Int = 1 << 16) throws(ZMQError) -> [Data]? {
        var frames: [Data] = []
        while true {
            let msg = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
            zmq_msg_init(msg)
            do {
                _ = try call("recv") { zmq_msg_recv(msg, handle, wait || !frames.isEmpty ? 0 : ZMQ_DONTWAIT) }
            } catch {
                zmq_msg_close(msg); msg.deallocate()
                if error.isAgain && frames.isEmpty { return nil }
                throw error
            }
            let size = zmq_msg_size(msg)
            if size >= noCopyThreshold {
                frames.append(Data(bytesNoCopy: zmq_msg_data(msg), count: size, deallocator: .custom { _, _ in
                    zmq_msg_close(msg); msg.deallocate()
                }))
            } else {
                frames.append(Data(bytes: zmq_msg_data(msg), count: size))
                zmq_msg_close(msg); msg.deallocate()
            }
            if try getInt(ZMQ_RCVMORE) == 0 { return frames }
        }
    }
}

/// zmq_poll over several sockets.
public enum ZMQPoll {
    /// Which of `sockets` have a message to read within `timeoutMilliseconds` (-1: forever).
    public static func readable(_ sockets: [ZMQSocket], timeoutMilliseconds: Int) throws(ZMQError) -> [Bool] {
        var items = sockets.map { zmq_pollitem_t(socket: $0.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        _ = try call("poll") { zmq_poll(&items, Int32(items.count), timeoutMilliseconds) }
        return items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
    }
}
