import CZeroMQ

/// The socket options Charter sets, typed, so that no module but this one needs libzmq's header.
public enum SocketOption: Sendable {
    /// The identity a ROUTER peer sees for this socket.
    case routingId(String)
    /// A ROUTER fails a send to an unknown peer instead of dropping it.
    case routerMandatory(Bool)
    /// A ROUTER gives a routing id that connects again to the new connection.
    case routerHandover(Bool)
    /// ZMTP heartbeats: how often a ping goes out, and how long without traffic ends the connection.
    case heartbeatIntervalMilliseconds(Int32)
    case heartbeatTimeoutMilliseconds(Int32)
    /// How soon a lost connection is redialled, backing off up to the maximum.
    case reconnectIntervalMilliseconds(Int32)
    case reconnectIntervalMaxMilliseconds(Int32)
    /// Messages queued for sending before a send blocks or fails.
    case sendHighWaterMark(Int32)
    /// How long closing waits to deliver messages still queued (ZMQ_LINGER; 0 from the start).
    case lingerMilliseconds(Int32)
}

extension ZMQSocket {
    public func set(_ option: SocketOption) throws(ZMQError) {
        switch option {
        case .routingId(let id): try set(ZMQ_ROUTING_ID, id)
        case .routerMandatory(let on): try set(ZMQ_ROUTER_MANDATORY, on ? 1 : 0)
        case .routerHandover(let on): try set(ZMQ_ROUTER_HANDOVER, on ? 1 : 0)
        case .heartbeatIntervalMilliseconds(let ms): try set(ZMQ_HEARTBEAT_IVL, ms)
        case .heartbeatTimeoutMilliseconds(let ms): try set(ZMQ_HEARTBEAT_TIMEOUT, ms)
        case .reconnectIntervalMilliseconds(let ms): try set(ZMQ_RECONNECT_IVL, ms)
        case .reconnectIntervalMaxMilliseconds(let ms): try set(ZMQ_RECONNECT_IVL_MAX, ms)
        case .sendHighWaterMark(let n): try set(ZMQ_SNDHWM, n)
        case .lingerMilliseconds(let ms): try set(ZMQ_LINGER, ms)
        }
    }
}

/// Connection events a monitor socket reports (`ZMQSocket.monitor`).
public struct MonitorEvents: OptionSet, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public static let disconnected = MonitorEvents(rawValue: ZMQ_EVENT_DISCONNECTED)
    public static let handshakeFailedAuth = MonitorEvents(rawValue: ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
    public static let handshakeFailedProtocol = MonitorEvents(rawValue: ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
    public static let handshakeFailedNoDetail = MonitorEvents(rawValue: ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    public static let handshakeSucceeded = MonitorEvents(rawValue: ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
}
