import CZeroMQ
import Foundation

/// A ZAP handler (ZeroMQ RFC 27) that admits CURVE clients whose public key is on an allow-list
/// and refuses every other handshake. It serves the context's `inproc://zeromq.zap.01` on a thread
/// of its own, so handshakes complete while the owner of the sockets is busy (training, say).
/// Start it before binding a CURVE server socket in the same context: without a handler libzmq
/// admits any key the server can decrypt.
public final class ZAPHandler: @unchecked Sendable {
    private let socket: ZMQSocket
    private let allowed: Set<Data>
    private let log: @Sendable (String) -> Void
    private let lock = NSLock()
    private var refusedCount = 0
    private var stopping = false
    private var loggedKeys: Set<Data> = []
    private let finished = DispatchSemaphore(value: 0)

    /// `allowedKeys`: Z85 public keys (40 characters each).
    public init(context: ZMQContext, allowedKeys: [String], log: @escaping @Sendable (String) -> Void) throws {
        var keys = Set<Data>()
        for key in allowedKeys {
            guard let binary = Self.decode(key) else { throw ZAPError(description: "allow-list key \"\(key)\" is not a 40-character Z85 key") }
            keys.insert(binary)
        }
        allowed = keys
        self.log = log
        socket = try ZMQSocket(context, .rep)
        try socket.bind("inproc://zeromq.zap.01")
        Thread.detachNewThread { [self] in serve() }
    }

    /// Handshakes refused so far.
    public var refused: Int { lock.withLock { refusedCount } }

    /// Stops the thread and closes the socket; call before the context ends.
    public func stop() {
        let wasStopping = lock.withLock { defer { stopping = true }; return stopping }
        if !wasStopping { finished.wait() }
    }

    static func decode(_ z85: String) -> Data? {
        guard z85.utf8.count == 40 else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
        return zmq_z85_decode(&out, z85) == nil ? nil : Data(out)
    }

    static func encode(_ key: Data) -> String {
        var out = [CChar](repeating: 0, count: 41)
        _ = key.withUnsafeBytes { zmq_z85_encode(&out, $0.bindMemory(to: UInt8.self).baseAddress, 32) }
        return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func serve() {
        defer { socket.close(); finished.signal() }
        while !lock.withLock({ stopping }) {
            let ready: Bool
            do { ready = try ZMQPoll.readable([socket], timeoutMilliseconds: 100) == [true] } catch {
                if error.isTerminated { return } // the context is ending: close and leave
                continue
            }
            guard ready, let request = try? socket.receive(wait: false) else { continue }
            // version, request id, domain, address, identity, mechanism, credentials...
            let field = { (i: Int) in request.count > i ? request[i] : Data() }
            let mechanism = String(decoding: field(5), as: UTF8.self)
            let key = field(6)
            let ok = mechanism == "CURVE" && allowed.contains(key)
            if !ok {
                lock.withLock { refusedCount += 1 }
                // A refused peer retries every reconnect interval: say so once per key.
                if loggedKeys.insert(key).inserted {
                    let who = key.count == 32 ? "key \(Self.encode(key))" : "mechanism \(mechanism)"
                    log("refused a connection from \(String(decoding: field(3), as: UTF8.self)): \(who) is not allowed (counted, not logged again)")
                }
            }
            let reply: [Frame] = [.data(Data("1.0".utf8)), .data(field(1)), .data(Data((ok ? "200" : "400").utf8)),
                                  .data(Data((ok ? "OK" : "key not allowed").utf8)), .data(Data()), .data(Data())]
            _ = try? socket.send(reply)
        }
    }
}

public struct ZAPError: Error, CustomStringConvertible {
    public let description: String
}
