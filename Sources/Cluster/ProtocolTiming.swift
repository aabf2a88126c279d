/// Every timeout and interval of PROTOCOL.md's table "Timeouts and intervals", in one place.
public enum ProtocolTiming {
    /// Worker heartbeats, and the silence after which the coordinator declares a worker dead
    /// (the coordinator's defaults; it sends them in `Welcome`).
    public static let heartbeatIntervalMilliseconds: UInt32 = 1000
    public static let heartbeatTimeoutMilliseconds: UInt32 = 5000
    /// The least time a lease runs before its task may be copied to an idle worker (Scheduler).
    public static let stragglerFloorSeconds = 5.0
    /// How long the coordinator's poll waits for a message before it checks liveness again.
    static let coordinatorPollMilliseconds = 100
    /// The same for a worker, which also times its heartbeats and fetches from its loop.
    static let workerPollMilliseconds = 50
    /// The `NoTask` retry hint.
    static let noTaskRetryMilliseconds: UInt32 = 200
    /// ZMTP heartbeats on a worker's control connection, answered by the coordinator's I/O thread
    /// even while it trains, and the silence after which the connection is dropped and redialled.
    static let zmtpHeartbeatIntervalMilliseconds: Int32 = 1000
    static let zmtpHeartbeatTimeoutMilliseconds: Int32 = 5000
    /// Redial backoff of a lost control connection (libzmq doubles it up to the maximum).
    static let reconnectIntervalMilliseconds: Int32 = 100
    static let reconnectIntervalMaxMilliseconds: Int32 = 5000
    /// `Register` is sent again until `Welcome` arrives: first after this, doubling up to the maximum.
    static let registerRetryFirstSeconds = 0.1
    static let registerRetryMaxSeconds = 5.0
    /// Chunk fetch: no chunk received for this long moves the fetch to the next source; a
    /// `missing` chunk is asked again after the retry; at most `window` requests in flight.
    static let chunkFetchTimeoutSeconds = 2.0
    static let chunkMissingRetrySeconds = 0.02
    static let chunkFetchWindow = 4
}
