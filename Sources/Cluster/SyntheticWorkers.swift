import Foundation
import Wire
import ZeroMQ

/// Many simulated workers in one process, for measuring the coordinator alone: each has its own
/// connection and id, registers, heartbeats and pulls tasks like a real worker, but answers every
/// task at once with made-up samples (no model) and claims every announced version without
/// fetching it. `charter worker --synthetic N`; `charter bench dispatch` starts one.
public final class SyntheticWorkers {
    struct Peer {
        let id: String
        let socket: ZMQSocket
        var waiting = false, retryAt = 0.0, lastHeartbeat = 0.0
    }

    let context = ZMQContext()
    var peers: [Peer] = []
    var heartbeatInterval = 1.0
    public private(set) var tasksDone = 0

    public init(connect: String, count: Int, prefix: String = "synthetic") throws {
        for i in 0..<count {
            let s = try ZMQSocket(context, .dealer)
            try s.set(.routingId("\(prefix)-\(i)"))
            try s.connect(connect)
            peers.append(Peer(id: "\(prefix)-\(i)", socket: s))
        }
    }

    deinit { for p in peers { p.socket.close() } }

    static func send(_ body: Message, on s: ZMQSocket) { _ = try? s.send([.data(Wire.header(body))], wait: false) }

    /// Runs until the coordinator says goodbye to all of them.
    public func run() throws {
        for p in peers {
            var r = Charter_V1_Register()
            r.workerID = p.id
            r.capabilities = ["synthetic"]
            Self.send(.register(r), on: p.socket)
        }
        var gone = Set<Int>()
        while gone.count < peers.count {
            let readable = try ZMQPoll.readable(peers.map(\.socket), timeoutMilliseconds: 20)
            let now = Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
            for i in peers.indices where !gone.contains(i) {
                if readable[i] {
                    while let frames = try peers[i].socket.receive(wait: false) {
                        if !handle(frames, peer: i, now: now) { gone.insert(i) }
                    }
                }
                if now - peers[i].lastHeartbeat >= heartbeatInterval {
                    Self.send(.heartbeat(Charter_V1_Heartbeat()), on: peers[i].socket)
                    peers[i].lastHeartbeat = now
                }
                if !peers[i].waiting && peers[i].retryAt > 0 && now >= peers[i].retryAt { request(i) }
            }
        }
    }

    func request(_ i: Int) {
        var r = Charter_V1_TaskRequest()
        r.slots = 1
        Self.send(.taskRequest(r), on: peers[i].socket)
        peers[i].waiting = true
        peers[i].retryAt = 0
    }

    /// Returns false on goodbye.
    func handle(_ frames: [Data], peer i: Int, now: Double) -> Bool {
        guard let message = try? Wire.decode(frames).message else { return true }
        switch message {
        case .welcome(let w):
            heartbeatInterval = Double(max(w.heartbeatIntervalMs, 10)) / 1000
            request(i)
        case .modelAnnounce(let a):
            var ready = Charter_V1_ModelReady()
            ready.model = a.model
            ready.version = a.version
            Self.send(.modelReady(ready), on: peers[i].socket)
        case .task(let t):
            Self.send(.taskResult(Self.result(for: t)), on: peers[i].socket)
            tasksDone += 1
            request(i)
        case .noTask(let n):
            peers[i].waiting = false
            peers[i].retryAt = now + Double(n.retryAfterMs) / 1000
        case .goodbye:
            return false
        default:
            break
        }
        return true
    }

    /// Samples of the right shape: max_new_tokens tokens each, with log-probs and a rule reward;
    /// for a stage task, one short answer per item.
    static func result(for t: Charter_V1_Task) -> Charter_V1_TaskResult {
        var result = Charter_V1_TaskResult()
        result.taskID = t.taskID
        result.iteration = t.iteration
        result.policyVersion = t.policyVersion
        result.items = t.items.map { item in
            var r = Charter_V1_ItemResult()
            r.itemID = item.itemID; r.texts = ["a synthetic answer"]; r.truncated = [false]
            return r
        }
        let n = Int(max(t.sampling.maxNewTokens, 1))
        for p in t.prompts {
            for k in 0..<t.samplesPerPrompt {
                var s = Charter_V1_SampleRecord()
                s.promptID = p.promptID
                s.index = k
                s.response = (0..<n).map { Int32(($0 + Int(k)) % 100) }
                s.logprobs = Array(repeating: -1, count: n)
                s.referenceLogprobs = Array(repeating: -1, count: n)
                s.ruleReward = Float(k % 2)
                result.samples.append(s)
            }
        }
        return result
    }
}
