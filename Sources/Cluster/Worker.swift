import Alignment
import CZeroMQ
import Engine
import Foundation
import Formats
import Wire
import ZeroMQ

/// A worker process: registers with the coordinator, keeps the current policy version, pulls
/// tasks, generates, scores and computes reference log-probs, and returns the samples. One
/// thread owns its sockets; heartbeats go out between decode steps, so a long generation does not
/// look like a dead worker.
public final class Worker {
    public struct Options: Sendable {
        public var connect: String
        public var id: String
        public var curve: (serverKey: String, keys: CurveKeyPair)?
        /// Fault injection for tests: after this many tasks, take the next one and never answer.
        public var stallAfterTasks: Int?
        public init(connect: String, id: String) { self.connect = connect; self.id = id }
    }

    /// Where the worker is in its life.
    enum State {
        case registering(since: Double, attempt: Int)
        case fetching(WeightAssembler, inFlight: Set<Int>, lastProgress: Double)
        case ready
    }

    let options: Options
    let context = ZMQContext()
    var control: ZMQSocket
    var chunks: ZMQSocket?
    var chunkEndpoint: String?
    var state: State = .registering(since: 0, attempt: 0)
    var heartbeatInterval = 1.0, heartbeatTimeout = 5.0
    var lastHeartbeat = 0.0, lastHeard = 0.0
    var waitingForTask = false, retryAt = 0.0
    var log: (String) -> Void

    // What the run's configuration gives the worker.
    var config: RLConfig?
    var base: LoadedModel?
    var policy: ModelWeights?
    var version = 0
    var runId = ""
    var reference: Backprop?
    var scorer: RewardScorer?
    var rollout = RolloutSettings()
    var pendingTasks: [Charter_V1_Task] = []
    public private(set) var tasksDone = 0

    public init(options: Options, log: @escaping (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws {
        self.options = options
        self.log = log
        control = try ZMQSocket(context, .dealer)
        try configure(control)
    }

    deinit {
        // Sockets first: the context cannot end while one is open.
        control.close()
        chunks?.close()
    }

    func configure(_ s: ZMQSocket) throws {
        try s.set(ZMQ_ROUTING_ID, options.id)
        if let curve = options.curve { try s.makeCurveClient(serverKey: curve.serverKey, keys: curve.keys) }
        try s.connect(options.connect)
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

    func send(_ body: Message, on socket: ZMQSocket? = nil) throws {
        try (socket ?? control).send([.data(Wire.header(body))], wait: false)
    }

    func register() throws {
        var r = Charter_V1_Register()
        r.workerID = options.id
        r.threads = UInt32(ProcessInfo.processInfo.activeProcessorCount)
        r.capabilities = ["generate", "score", "reference"]
        r.policyVersionHeld = UInt64(version)
        try send(.register(r))
    }

    /// Runs until the coordinator says goodbye; throws on a fatal protocol error.
    public func run() throws {
        let start = Self.now()
        state = .registering(since: start, attempt: 0)
        lastHeard = start
        try register()
        while true {
            let sockets = [control] + (chunks.map { [$0] } ?? [])
            let readable = try ZMQPoll.readable(sockets, timeoutMilliseconds: 50)
            if readable[0], let frames = try control.receive(wait: false) {
                lastHeard = Self.now()
                if try handleControl(frames) == false { return }
            }
            if readable.count > 1, readable[1], let frames = try chunks?.receive(wait: false) {
                lastHeard = Self.now() // the coordinator's chunk server is alive too
                try handleChunk(frames)
            }
            try tick(now: Self.now())
        }
    }

    /// Timers: registration retries with backoff, heartbeats, task requests.
    func tick(now: Double) throws {
        switch state {
        case .registering(let since, let attempt):
            let backoff = min(0.1 * pow(2, Double(attempt)), 5)
            if now - since > backoff {
                // The coordinator may have gone: start over on a fresh connection.
                control.close()
                control = try ZMQSocket(context, .dealer)
                try configure(control)
                try register()
                state = .registering(since: now, attempt: attempt + 1)
            }
            return
        case .fetching, .ready: break
        }
        if now - lastHeartbeat >= heartbeatInterval { try heartbeat(now) }
        if case .fetching = state { try requestChunks() }
        if now - lastHeard > 3 * heartbeatTimeout {
            log("worker \(options.id): coordinator silent for \(Int(now - lastHeard)) s; reconnecting")
            state = .registering(since: 0, attempt: 0)
            return
        }
        if case .ready = state, !waitingForTask, now >= retryAt {
            if let task = pendingTasks.first(where: { Int($0.policyVersion) == version }) {
                pendingTasks.removeAll { $0.taskID == task.taskID }
                try work(task)
            } else {
                var request = Charter_V1_TaskRequest()
                request.slots = 1
                try send(.taskRequest(request))
                waitingForTask = true
            }
        }
    }

    func heartbeat(_ now: Double) throws {
        var h = Charter_V1_Heartbeat()
        h.policyVersionHeld = UInt64(version)
        try send(.heartbeat(h))
        lastHeartbeat = now
    }

    /// Returns false when the run is over.
    func handleControl(_ frames: [Data]) throws -> Bool {
        let message: Message
        do { message = try Wire.decode(frames).message } catch {
            log("worker \(options.id): dropped a message from the coordinator: \(error)")
            return true
        }
        switch message {
        case .welcome(let w):
            heartbeatInterval = Double(max(w.heartbeatIntervalMs, 10)) / 1000
            heartbeatTimeout = Double(max(w.heartbeatTimeoutMs, 100)) / 1000
            if config == nil { try load(configText: w.configYaml) }
            if w.runID != runId {
                // Versions are numbered per run: what this worker holds from another run counts for nothing.
                runId = w.runID
                version = 0
            }
            waitingForTask = false
            state = .ready // a PolicyAnnounce follows if this worker lacks the current version
        case .policyAnnounce(let a):
            try startFetch(a)
        case .task(let t):
            waitingForTask = false
            if Int(t.policyVersion) == version { try work(t) } else { pendingTasks.append(t) }
        case .noTask(let n):
            waitingForTask = false
            retryAt = Self.now() + Double(n.retryAfterMs) / 1000
        case .goodbye(let g):
            log("worker \(options.id): coordinator said goodbye (\(g.reason)); \(tasksDone) tasks done")
            return false
        case .error(let e):
            if e.code == .versionMismatch { throw WorkerError("coordinator refused us: \(e.message)") }
            if e.code == .notRegistered { state = .registering(since: 0, attempt: 0) }
            log("worker \(options.id): coordinator error \(e.code): \(e.message)")
        default:
            log("worker \(options.id): unexpected message from the coordinator")
        }
        return true
    }

    func load(configText: String) throws {
        let c = try RLConfig.parse(configText, name: "run configuration")
        let model = try ModelLoader.load(c.policy)
        config = c
        base = model
        policy = model.weights
        reference = try Backprop(weights: try c.reference.map { try ModelLoader.load($0).weights } ?? {
            let copy = ModelWeights(config: model.config)
            copy.storage.update(from: model.weights.storage)
            return copy
        }())
        scorer = try c.makeScorer(tokenizer: model.tokenizer)
        rollout = c.rolloutSettings(tokenizer: model.tokenizer)
        log("worker \(options.id): loaded \(c.policy)")
    }

    // MARK: weight broadcast

    func startFetch(_ a: Charter_V1_PolicyAnnounce) throws {
        guard let policy else { return }
        if Int(a.policyVersion) == version { return try sendReady() }
        guard Int(a.policyVersion) > version else { return }
        guard Int(a.totalBytes) == policy.storage.count * 4, !a.lora else {
            throw WorkerError("announced weights (\(a.totalBytes) bytes, lora \(a.lora)) do not fit this model")
        }
        let manifest = WeightManifest(version: Int(a.policyVersion), totalBytes: Int(a.totalBytes), chunks: a.chunks.map {
            WeightManifest.Chunk(index: Int($0.index), offset: Int($0.offset), size: Int($0.size), crc32c: $0.crc32C)
        })
        guard manifest.checksum == a.manifestCrc32C else { log("worker \(options.id): manifest checksum mismatch; waiting for the next announce"); return }
        guard let source = a.sources.first else { return }
        if chunkEndpoint != source {
            chunks?.close()
            let s = try ZMQSocket(context, .dealer)
            if let curve = options.curve { try s.makeCurveClient(serverKey: curve.serverKey, keys: curve.keys) }
            try s.connect(source)
            chunks = s
            chunkEndpoint = source
        }
        state = .fetching(WeightAssembler(manifest: manifest), inFlight: [], lastProgress: Self.now())
        try requestChunks()
    }

    /// Keeps a window of 4 chunk requests in flight; a chunk that failed its check, or whose reply
    /// is 2 s late, is asked for again.
    func requestChunks() throws {
        guard case .fetching(let assembler, var inFlight, let lastProgress) = state, let chunks else { return }
        if Self.now() - lastProgress > 2 { inFlight = [] }
        for index in assembler.missing where !inFlight.contains(index) && inFlight.count < 4 {
            var r = Charter_V1_ChunkRequest()
            r.policyVersion = UInt64(assembler.manifest.version)
            r.index = UInt32(index)
            try send(.chunkRequest(r), on: chunks)
            inFlight.insert(index)
        }
        state = .fetching(assembler, inFlight: inFlight, lastProgress: lastProgress)
    }

    func handleChunk(_ frames: [Data]) throws {
        guard case .fetching(let assembler, var inFlight, _) = state else { return }
        guard let decoded = try? Wire.decode(frames), case .chunkReply(let reply) = decoded.message,
              Int(reply.policyVersion) == assembler.manifest.version, let bytes = decoded.bulk.first else { return }
        let outcome = bytes.withUnsafeBytes { assembler.accept(index: Int(reply.index), bytes: $0) }
        inFlight.remove(Int(reply.index))
        if outcome == .badChecksum || outcome == .wrongSize {
            log("worker \(options.id): chunk \(reply.index) \(outcome); fetching it again")
        }
        guard assembler.isComplete else {
            state = .fetching(assembler, inFlight: inFlight, lastProgress: Self.now())
            return try requestChunks()
        }
        policy!.storage.withMemoryRebound(to: UInt8.self) { dst in
            _ = dst.initialize(from: UnsafeRawBufferPointer(start: assembler.buffer.baseAddress, count: assembler.manifest.totalBytes))
        }
        version = assembler.manifest.version
        state = .ready
        try sendReady()
        log("worker \(options.id): now at policy version \(version)")
    }

    func sendReady() throws {
        var ready = Charter_V1_PolicyReady()
        ready.policyVersion = UInt64(version)
        try send(.policyReady(ready))
    }

    // MARK: work

    func work(_ task: Charter_V1_Task) throws {
        guard let policy, let reference, let scorer else { throw WorkerError("a task arrived before the run configuration") }
        if let n = options.stallAfterTasks, tasksDone >= n {
            log("worker \(options.id): stalling on task \(task.taskID) (--stall-after-tasks)")
            while true { sleep(60) }
        }
        let prompts = task.prompts.map { Prompt(id: Int($0.promptID), text: "", tokens: $0.tokens, unsafe: $0.unsafe) }
        var settings = rollout
        settings.samplesPerPrompt = Int(task.samplesPerPrompt)
        settings.temperature = task.sampling.temperature
        settings.topK = Int(task.sampling.topK)
        settings.topP = task.sampling.topP
        settings.maxNewTokens = Int(task.sampling.maxNewTokens)
        settings.stopTokens = task.sampling.stopTokens
        let source = InProcessRollouts(settings: settings, runSeed: task.runSeed)
        var samples = try source.rollouts(iteration: Int(task.iteration), prompts: prompts, policy: policy,
                                          policyVersion: Int(task.policyVersion)) { [self] in
            let now = Self.now()
            if now - lastHeartbeat >= heartbeatInterval { try? heartbeat(now) }
        }
        let rewards = try scorer.score(samples, prompts: Dictionary(prompts.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }))
        var result = Charter_V1_TaskResult()
        result.taskID = task.taskID
        result.iteration = task.iteration
        result.policyVersion = task.policyVersion
        for i in samples.indices {
            samples[i].reward = rewards[i]
            // One sample per pass: its reference log-probs then do not depend on how tasks were cut.
            let (report, dx) = try reference.forward([samples[i].trainingSequence()]).languageModelLoss(grads: nil, backward: false)
            dx.deallocate()
            var r = Charter_V1_SampleRecord()
            r.promptID = UInt64(samples[i].promptId)
            r.index = UInt32(samples[i].index)
            r.response = samples[i].response
            r.logprobs = samples[i].logprobs
            r.referenceLogprobs = Array(report.logprobs[0][samples[i].prompt.count...])
            r.reward = rewards[i]
            r.seed = samples[i].seed
            result.samples.append(r)
        }
        try send(.taskResult(result))
        tasksDone += 1
    }
}

public struct WorkerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
