import CZeroMQ
import Foundation
import Synchronization

/// The one door to libzmq: every call's return code becomes a Swift error here; EINTR is retried,
/// EAGAIN is returned as "not now" by the callers that expect it.
public struct ZMQError: Error, CustomStringConvertible, Equatable {
    public let code: Int32
    public let operation: String
    public var description: String { "zmq \(operation): \(String(cString: zmq_strerror(code))) (errno \(code))" }

    public var isAgain: Bool { code == EAGAIN }
    /// The context was shut down: close the socket and leave.
    public var isTerminated: Bool { code == ETERM }
    /// A ROUTER with ROUTER_MANDATORY could not reach the peer.
    public var isUnreachable: Bool { code == EHOSTUNREACH }
}

@inline(__always) func call(_ operation: String, _ body: () -> Int32) throws(ZMQError) -> Int32 {
    while true {
        let rc = body()
        if rc >= 0 { return rc }
        let e = zmq_errno()
        if e == EINTR { continue }
        throw ZMQError(code: e, operation: operation)
    }
}

/// A ZeroMQ context. Thread-safe; sockets are not.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    public init(ioThreads: Int32 = 1) {
        handle = zmq_ctx_new()
        zmq_ctx_set(handle, ZMQ_IO_THREADS, ioThreads)
    }

    /// Makes blocking calls in every thread fail with ETERM, so owners close their sockets.
    public func shutdown() { zmq_ctx_shutdown(handle) }

    private let terminated = Atomic<Bool>(false)

    /// Ends the context once its sockets are closed and their lingering messages sent, waiting at
    /// most `seconds` for that (a process about to exit uses it to get its last message out).
    /// True if it ended in time.
    public func terminate(waitingAtMost seconds: Double) -> Bool {
        guard !terminated.exchange(true, ordering: .relaxed) else { return true }
        let done = DispatchSemaphore(value: 0)
        let handle = UInt(bitPattern: handle)
        Thread.detachNewThread {
            while zmq_ctx_term(UnsafeMutableRawPointer(bitPattern: handle)) != 0 && zmq_errno() == EINTR {}
            done.signal()
        }
        return done.wait(timeout: .now() + seconds) == .success
    }

    /// Terminates once every socket is closed (sockets linger 0, so this does not hang on unsent messages).
    deinit { if !terminated.load(ordering: .relaxed) { while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {} } }
}

/// Z85-encoded CURVE keys (40 characters each).
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String

    public init(publicKey: String, secretKey: String) { self.publicKey = publicKey; self.secretKey = secretKey }

    public static func generate() throws(ZMQError) -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        _ = try call("curve_keypair") { zmq_curve_keypair(&pub, &sec) }
        return CurveKeyPair(publicKey: String(cString: pub), secretKey: String(cString: sec))
    }

    /// The public key that belongs to a secret key.
    public static func publicKey(for secret: String) throws(ZMQError) -> String {
        var pub = [CChar](repeating: 0, count: 41)
        _ = try call("curve_public") { zmq_curve_public(&pub, secret) }
        return String(cString: pub)
    }
}

/// What libzmq is: version and whether CURVE is built in.
public enum ZMQ {
    public static var version: String {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return "\(major).\(minor).\(patch)"
    }

    public static var hasCurve: Bool { zmq_has("curve") != 0 }
}
