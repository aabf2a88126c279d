import Alignment
import Buffers
import Engine
import Foundation
import Logging
import Tokenizer
import Wire
import ZeroMQ

/// The coordinator's side of the protocol, as a rollout source: each iteration's prompts become
/// tasks that workers pull; their scored samples come back. One thread owns the sockets; it serves
/// them whenever an iteration is gathering (training happens between calls, and workers' messages
/// wait in the socket queues meanwhile).
public final class Coordinator: RolloutSource {
    public struct Settings: Sendable {
        public var bind = "tcp://127.0.0.1:5555"
        /// nil: about two tasks per live worker, so each batch is large (decode is much faster at
        /// batch 16 than at 4) and a slow or lost worker still leaves work for the others.
        public var promptsPerTask: Int?
        /// Workers known to be on their way (`charter local`), counted when sizing the first tasks.
        public var expectedWorkers = 0
        public var heartbeatIntervalMs = ProtocolTiming.heartbeatIntervalMilliseconds
        public var heartbeatTimeoutMs = ProtocolTiming.heartbeatTimeoutMilliseconds
        public var chunkSize = 4 << 20
        /// Where the chunk server binds; nil: a free port on the control endpoint's host.
        public var chunkBind: String?
        /// CURVE: the coordinator's secret key and the workers' public keys it admits.
        public var curveSecretKey: String?
        public var allowedKeys: [String] = []
        /// run.mixed_kernels: admit workers whose projection kernel is not the coordinator's
        /// (results then differ in the last bits from worker to worker).
        public var mixedKernels = false
        public init() {}
    }

    public struct Counters: Sendable, Codable {
        public var malformed = 0, versionMismatch = 0, kernelMismatch = 0, unknownMessage = 0, bytesBroadcast = 0, curveRefused = 0
        /// Results whose samples were not exactly their task's (prompt, sample index) pairs.
        public var mismatchedResults = 0
        /// Results with a sample no honest worker sends (SampleCheck); their workers are quarantined.
        public var invalidResults = 0
        /// Messages from peers that had not registered, answered NOT_REGISTERED.
        public var notRegistered = 0
        /// Log lines about peers' messages held back by the rate limit.
        public var logLinesHeldBack = 0
    }

    /// Log lines about what peers send, rate-limited per peer and kind.
    var logLimiter = LogLimiter()

    func warn(_ peer: String, _ kind: String, _ line: @autoclosure () -> String, level: Logger.Level = .warning) {
        if logLimiter.allow(peer: peer, kind: kind, now: Self.now()) { logger.log(level: level, "\(line())") }
    }

    public let settings: Settings
    public let configText: String
    /// The absolute folder the configuration's relative paths are read against, told to workers.
    public var configFolder = ""
    public let runId: String
    let rollout: RolloutSettings
    let context = ZMQContext()
    let control: ZMQSocket
    let chunkServer: ZMQSocket
    public let controlEndpoint: String
    public let chunkEndpoint: String
    public let scheduler: Scheduler
    var counts = Counters()
    public var counters: Counters {
        var c = counts
        c.curveRefused = zap?.refused ?? 0
        c.logLinesHeldBack = logLimiter.suppressed
        return c
    }
    let zap: ZAPHandler?
    public internal(set) var logger: Logger
    /// What `--metrics-bind` serves; the loop publishes into it.
    public var metrics: CoordinatorMetrics?
    /// Tokens generated in accepted results, by worker.
    var tokensByWorker: [String: Int] = [:]

    /// A model's current version and, after version 0, its chunks as the workers fetch them.
    struct Published {
        var version = 0
        var manifest: WeightManifest?
        var buffer: SharedBuffer?
        var lora = false
    }
    var published: [String: Published] = [ModelName.policy: Published()]
    var held: [String: [String: Int]] = [:]      // worker -> model -> version it confirmed holding
    var chunkEndpoints: [String: String] = [:]    // worker -> where it serves chunks to peers
    /// The policy's version.
    var version: Int { published[ModelName.policy]?.version ?? 0 }
    /// What a rollout sample must hold under the run's configuration; nil: unchecked (the dispatch
    /// benchmark's synthetic workers send made-up tokens).
    public var sampleCheck: SampleCheck?
    /// While a stage runs: builds its tasks (else tasks are rollouts).
    var stageTask: ((Scheduler.TaskSpec) -> Charter_V1_Task)?

    public init(settings: Settings, configText: String, rollout: RolloutSettings, runId: String,
                logger: Logger = Logger(label: "coordinator")) throws {
        self.settings = settings; self.configText = configText; self.rollout = rollout; self.runId = runId
        var withRun = logger
        withRun[metadataKey: "run"] = .string(runId)
        self.logger = withRun
        let zapLogger = withRun
        scheduler = Scheduler(heartbeatTimeout: Double(settings.heartbeatTimeoutMs) / 1000)
        // The ZAP handler comes first: a CURVE socket bound without one admits any key.
        zap = settings.curveSecretKey == nil ? nil : try ZAPHandler(context: context, allowedKeys: settings.allowedKeys) {
            zapLogger.warning("\($0)") // on the ZAP thread: a copy of the logger
        }
        control = try ZMQSocket(context, .router)
        chunkServer = try ZMQSocket(context, .router)
        for s in [control, chunkServer] {
            try s.set(.routerMandatory(true))
            try s.set(.routerHandover(true))
            if let key = settings.curveSecretKey { try s.makeCurveServer(secretKey: key) }
        }
        controlEndpoint = try control.bind(settings.bind)
        let host = controlEndpoint.split(separator: ":").dropLast().joined(separator: ":")
        chunkEndpoint = try chunkServer.bind(settings.chunkBind ?? "\(host):*")
    }

    deinit {
        if !finished { finish(reason: "the coordinator stopped before the run ended; see its log") }
        // Sockets first: the context cannot end while one is open.
        control.close()
        chunkServer.close()
        zap?.stop() // after the CURVE sockets: no handshake goes unchecked
    }

    public var scoresSamples: Bool { true }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

    /// `peer` is the routing id exactly as the ROUTER gave it (workers set theirs to their id).
    func send(_ body: Message, to peer: Data, bulk: [Frame] = [], on socket: ZMQSocket? = nil) {
        do {
            try (socket ?? control).send([.data(peer), .data(Wire.header(body))] + bulk, wait: false)
        } catch {
            warn(String(decoding: peer, as: UTF8.self), "send", "could not send to \(String(decoding: peer, as: UTF8.self)): \(error)") // a gone worker stops heartbeating too
        }
    }

    func send(_ body: Message, to worker: String) { send(body, to: Data(worker.utf8)) }

    /// With LoRA, the run's adapters: only they travel after an update.
    public var adapters: LoRAAdapters?

    /// Seconds from publishing the last version until every live worker held it (or, if sooner,
    /// until that iteration's samples were all in); 0 when the iteration published nothing.
    public private(set) var broadcastSeconds = 0.0
    var broadcastStarted: Double?

    /// The samples of one iteration from the workers, in (prompt, sample) order. A value head
    /// travels with each policy version after 0, and the workers score their samples' values with it.
    public func rollouts(iteration: Int, prompts: [Prompt], policy: ModelWeights, valueHead: ScalarHead?, policyVersion: Int) throws -> [Sample] {
        broadcastSeconds = 0
        if let valueHead, policyVersion > 0, published[ModelName.valueHead]?.version != policyVersion {
            publish(ModelName.valueHead, buffers: [valueHead.storage], version: policyVersion)
        }
        if policyVersion != version || (policyVersion > 0 && published[ModelName.policy]?.manifest == nil) { publish(policy, version: policyVersion) }
        defer { if let s = broadcastStarted { broadcastSeconds = Self.now() - s; broadcastStarted = nil } }
        let live = max(scheduler.aliveWorkers.count, settings.expectedWorkers, 1)
        let perTask = settings.promptsPerTask ?? max(1, (prompts.count + 2 * live - 1) / (2 * live))
        scheduler.startIteration(iteration, policyVersion: policyVersion, promptIds: prompts.map(\.id), promptsPerTask: perTask)
        let byId = Dictionary(prompts.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var samples: [Sample] = []
        while !scheduler.isIterationComplete {
            if let problem = noHonestWorker { throw DataError(problem) }
            try serve(timeoutMilliseconds: ProtocolTiming.coordinatorPollMilliseconds) { worker, result in
                // A result must hold each (prompt, sample) of its task once: one cut differently (by an
                // earlier coordinator process, say) is dropped and counted, and the task is queued again.
                if let spec = self.scheduler.task(result.taskID) {
                    let expected = Set(spec.promptIds.flatMap { p in (0..<self.rollout.samplesPerPrompt).map { "\(p)/\($0)" } })
                    let got = result.samples.map { "\($0.promptID)/\($0.index)" }
                    guard got.count == expected.count, Set(got) == expected else {
                        self.counts.mismatchedResults += 1
                        self.warn(worker, "mismatched result", "result for task \(result.taskID) from \(worker) does not match the task; dropped, task queued again")
                        self.scheduler.requeue(result.taskID)
                        return
                    }
                }
                if let check = self.sampleCheck, let (r, problem) = result.samples.lazy
                    .compactMap({ r in check.problem(r, vocab: policy.config.vocab, rollout: self.rollout).map { (r, $0) } }).first {
                    self.refuse(result, from: worker, because: "sample \(r.promptID)/\(r.index): \(problem)")
                    return
                }
                guard self.scheduler.complete(result.taskID, from: worker, policyVersion: Int(clamping: result.policyVersion)) == .accepted else { return }
                self.tokensByWorker[worker, default: 0] += result.samples.reduce(0) { $0 + $1.response.count }
                for r in result.samples {
                    guard let prompt = byId[Int(clamping: r.promptID)] else { continue }
                    var s = Sample(promptId: prompt.id, index: Int(clamping: r.index), prompt: prompt.tokens, response: r.response,
                                   logprobs: r.logprobs, policyVersion: Int(clamping: result.policyVersion), seed: r.seed,
                                   finishReason: r.truncated ? .length : .stop)
                    s.scores = RawScores(helpfulness: r.hasHelpfulnessScore ? r.helpfulnessScore : nil,
                                         safety: r.hasSafetyScore ? r.safetyScore : nil,
                                         judgeRating: r.hasJudgeRating ? r.judgeRating : nil, rules: r.ruleReward)
                    s.referenceLogprobs = r.referenceLogprobs
                    if !r.values.isEmpty { s.values = r.values }
                    samples.append(s)
                }
            }
        }
        // In the iteration's prompt order, as the in-process loop has them: the update then sees
        // the same samples in the same order, however many workers there were.
        let position = Dictionary(prompts.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { a, _ in a })
        return samples.sorted { (position[$0.promptId]!, $0.index) < (position[$1.promptId]!, $1.index) }
    }

    /// Drops a result no honest worker sends and quarantines its worker; its tasks go to others.
    func refuse(_ result: Charter_V1_TaskResult, from worker: String, because problem: String) {
        counts.invalidResults += 1
        scheduler.quarantine(worker) // its leases, this task's among them if it held it, go on without it
        warn(worker, "invalid result", "result for task \(result.taskID) from \(worker) refused, \(problem); the worker gets no more tasks")
        if scheduler.aliveWorkers.allSatisfy(scheduler.quarantined.contains) {
            noHonestWorker = "every live worker sent results no honest worker sends (the last: \(problem)); see the coordinator's log"
        }
    }

    /// Set when every live worker is quarantined: the work cannot go on, and waiting would hang.
    var noHonestWorker: String?

    /// Cuts the policy's new version (the model's weights, or only the LoRA adapters) into chunks
    /// and tells every worker.
    func publish(_ policy: ModelWeights, version v: Int) {
        publish(ModelName.policy, buffers: [adapters?.storage ?? policy.storage], version: v, lora: adapters != nil)
    }

    /// Makes `buffers` (laid end to end) version `v` of `model` and tells every worker. The workers
    /// form a chain: each fetches from the one before it and the first from the coordinator, which
    /// so sends about one copy however many workers there are. Version 0 is what each process
    /// loads from the configuration: nothing travels.
    public func publish(_ model: String, buffers: [UnsafeMutableBufferPointer<Float>], version v: Int, lora: Bool = false) {
        var p = Published(version: v, lora: lora)
        guard v > 0 else { published[model] = p; return }
        broadcastStarted = Self.now()
        let bytes = buffers.byteCount
        let buffer = SharedBuffer.reclaim(&published[model, default: Published()].buffer, count: bytes) ?? SharedBuffer(count: bytes)
        p.buffer = buffer
        if buffers.count == 1 {
            p.manifest = WeightManifest(version: v, copying: UnsafeRawBufferPointer(buffers[0]), into: buffer.bytes, chunkSize: settings.chunkSize)
        } else {
            buffers.gather(into: buffer.bytes)
            p.manifest = WeightManifest(version: v, buffer: UnsafeRawBufferPointer(rebasing: buffer.bytes[0 ..< bytes]), chunkSize: settings.chunkSize)
        }
        published[model] = p
        var previous: String?
        for w in scheduler.aliveWorkers.sorted() {
            announce(model, to: w, from: previous.flatMap { chunkEndpoints[$0] })
            if chunkEndpoints[w] != nil { previous = w }
        }
    }

    /// Whether `worker` holds the current version of every model (so it may take any task).
    func holdsCurrentModels(_ worker: String) -> Bool {
        published.allSatisfy { name, p in p.version == 0 || held[worker]?[name] == p.version }
    }

    /// Tells a worker about the current version of `model`; `peer` is a chunk endpoint to try before the coordinator's.
    func announce(_ model: String, to worker: String, from peer: String?) {
        guard let p = published[model], let manifest = p.manifest else { return }
        var a = Charter_V1_ModelAnnounce()
        a.model = model
        a.version = UInt64(manifest.version)
        a.totalBytes = UInt64(manifest.totalBytes)
        a.chunks = manifest.chunks.map {
            var c = Charter_V1_ChunkInfo()
            c.index = UInt32($0.index); c.offset = UInt64($0.offset); c.size = UInt32($0.size); c.crc32C = $0.crc32c
            return c
        }
        a.manifestCrc32C = manifest.checksum
        a.lora = p.lora
        a.sources = (peer.map { [$0] } ?? []) + [chunkEndpoint]
        send(.modelAnnounce(a), to: worker)
    }

    /// One round of the poll loop: every queued message, then the liveness check.
    func serve(timeoutMilliseconds: Int, onResult: (String, Charter_V1_TaskResult) -> Void) throws {
        let readable = try ZMQPoll.readable([control, chunkServer], timeoutMilliseconds: timeoutMilliseconds)
        if readable[0] { while let frames = try control.receive(wait: false) { handleControl(frames, onResult: onResult) } }
        if readable[1] { while let frames = try chunkServer.receive(wait: false) { handleChunkRequest(frames) } }
        for dead in scheduler.expire(now: Self.now()) {
            held[dead] = nil
            chunkEndpoints[dead] = nil
            logger.warning("worker \(dead) stopped heartbeating; its tasks go back to the queue")
        }
        for c in logLimiter.closed(now: Self.now()) {
            logger.warning("\(c.held) more \"\(c.kind)\" lines about \(c.peer) held back in the last \(Int(logLimiter.window)) s")
        }
        metrics?.publish(self, now: Self.now())
    }

    func handleControl(_ frames: [Data], onResult: (String, Charter_V1_TaskResult) -> Void) {
        guard frames.count >= 2 else { counts.malformed += 1; return }
        let worker = String(decoding: frames[0], as: UTF8.self), now = Self.now()
        func send(_ body: Message) { self.send(body, to: frames[0]) }
        let message: Message
        do { message = try Wire.decode(Array(frames.dropFirst())).message } catch {
            switch error {
            case .versionMismatch: counts.versionMismatch += 1
            case .unknownMessage: counts.unknownMessage += 1
            default: counts.malformed += 1
            }
            warn(worker, "bad message", "from \(worker): \(error)")
            send(.error(error.reply))
            return
        }
        // Results are keyed by task, so one is taken from whoever brings it (a worker that timed out
        // and came back, or a connection the ROUTER renamed); anything else needs a registration.
        let needsRegistration: Bool
        switch message {
        case .register, .taskResult: needsRegistration = false
        default: needsRegistration = true
        }
        if needsRegistration && !scheduler.isAlive(worker) {
            counts.notRegistered += 1
            var e = Charter_V1_Error(); e.code = .notRegistered; e.message = "register first"
            send(.error(e))
            return
        }
        switch message {
        case .register(let r) where r.workerID != worker:
            // Workers route as their id. Another id is a misconfigured peer, or messages that were
            // still queued on a connection the same worker replaced (the ROUTER renames those).
            counts.malformed += 1
            var e = Charter_V1_Error(); e.code = .malformed; e.message = "routing id must be the worker id \"\(r.workerID)\""
            send(.error(e))
        case .register(let r) where !settings.mixedKernels && !r.kernel.isEmpty && r.kernel != Kernel.active.rawValue:
            counts.kernelMismatch += 1
            let why = "worker \(worker) runs the \(r.kernel) projection kernel and this run \(Kernel.active.rawValue): results would differ in the last bits"
                + " from worker to worker; start it with CHARTER_KERNEL=\(Kernel.active.rawValue), or set run.mixed_kernels: true"
            warn(worker, "kernel", why)
            var e = Charter_V1_Error(); e.code = .kernelMismatch; e.message = why
            send(.error(e))
        case .register(let r):
            scheduler.register(worker, now: now)
            // What it held may come from another run (a coordinator restarted): it confirms with ModelReady.
            held[worker] = [:]
            chunkEndpoints[worker] = r.chunkEndpoint.isEmpty ? nil : r.chunkEndpoint
            var w = Charter_V1_Welcome()
            w.runID = runId; w.policyVersion = UInt64(version)
            w.heartbeatIntervalMs = settings.heartbeatIntervalMs; w.heartbeatTimeoutMs = settings.heartbeatTimeoutMs
            w.configYaml = configText
            w.configDir = configFolder
            send(.welcome(w))
            // A late joiner fetches each model from a worker that holds its version, if there is one.
            for (model, p) in published.sorted(by: { $0.key < $1.key }) where p.version > 0 {
                let holder = held.filter { $0.value[model] == p.version && $0.key != worker }.keys.sorted().first { chunkEndpoints[$0] != nil }
                announce(model, to: worker, from: holder.flatMap { chunkEndpoints[$0] })
            }
            logger.info("worker \(worker) registered (holds version \(r.policyVersionHeld))")
        case .heartbeat:
            scheduler.heartbeat(worker, now: now)
        case .modelReady(let r):
            held[worker, default: [:]][r.model] = Int(clamping: r.version)
            scheduler.heartbeat(worker, now: now)
            if let s = broadcastStarted, scheduler.aliveWorkers.allSatisfy(holdsCurrentModels) {
                broadcastSeconds = now - s
                broadcastStarted = nil
            }
        case .taskRequest:
            scheduler.heartbeat(worker, now: now)
            if holdsCurrentModels(worker), let t = scheduler.nextTask(for: worker, now: now) {
                send(.task(stageTask?(t) ?? task(t)))
            } else {
                var n = Charter_V1_NoTask(); n.retryAfterMs = ProtocolTiming.noTaskRetryMilliseconds
                send(.noTask(n))
            }
        case .taskResult(let r):
            scheduler.heartbeat(worker, now: now)
            onResult(worker, r)
        case .error(let e):
            warn(worker, "report", "worker \(worker) reports: \(shown(e.message, limit: 300))", level: .error)
            if e.code == .loadFailed {
                // It is leaving: its tasks go back to the queue now, not after the heartbeat timeout.
                forget(worker)
            }
        case .goodbye(let g):
            warn(worker, "goodbye", "worker \(worker) left: \(shown(g.reason, limit: 200))", level: .info)
            forget(worker)
        default:
            counts.unknownMessage += 1
            var e = Charter_V1_Error(); e.code = .unknownMessage; e.message = "not a message the coordinator takes"
            send(.error(e))
        }
    }

    /// A worker that left: its tasks go back to the queue, and it is no longer a holder or a chunk source.
    func forget(_ worker: String) {
        scheduler.remove(worker)
        held[worker] = nil
        chunkEndpoints[worker] = nil
    }

    func task(_ t: Scheduler.TaskSpec) -> Charter_V1_Task {
        var task = Charter_V1_Task()
        task.taskID = t.id; task.iteration = UInt64(t.iteration); task.policyVersion = UInt64(t.policyVersion)
        task.samplesPerPrompt = UInt32(rollout.samplesPerPrompt); task.runSeed = runSeed
        task.sampling.temperature = rollout.temperature; task.sampling.topK = UInt32(rollout.topK)
        task.sampling.topP = rollout.topP; task.sampling.maxNewTokens = UInt32(rollout.maxNewTokens)
        task.sampling.stopTokens = rollout.stopTokens
        task.prompts = t.promptIds.map { id in
            var p = Charter_V1_PromptWork()
            p.promptID = UInt64(id)
            p.tokens = promptsById[id]?.tokens ?? []
            p.unsafe = promptsById[id]?.unsafe ?? false
            p.text = promptsById[id]?.text ?? ""
            return p
        }
        return task
    }

    /// The run's prompts by id, and the run seed: set by the run before the first iteration.
    public var promptsById: [Int: Prompt] = [:]
    public var runSeed: UInt64 = 0

    func handleChunkRequest(_ frames: [Data]) {
        guard frames.count >= 2 else { counts.malformed += 1; return }
        let peer = frames[0]
        guard let decoded = try? Wire.decode(Array(frames.dropFirst())), case .chunkRequest(let r) = decoded.message else {
            counts.malformed += 1
            return
        }
        var reply = Charter_V1_ChunkReply()
        reply.model = r.model; reply.version = r.version; reply.index = r.index
        guard let p = published[r.model], let manifest = p.manifest, let buffer = p.buffer, Int(clamping: r.version) == manifest.version,
              manifest.chunks.indices.contains(Int(clamping: r.index)) else {
            reply.missing = true
            send(.chunkReply(reply), to: peer, on: chunkServer)
            return
        }
        let c = manifest.chunks[Int(clamping: r.index)]
        reply.crc32C = c.crc32c
        send(.chunkReply(reply), to: peer, bulk: [.shared(buffer, offset: c.offset, count: c.size)], on: chunkServer)
        counts.bytesBroadcast += c.size
    }

    /// Serves (registrations, heartbeats, broadcasts) until `count` workers are alive and hold the
    /// current version of every model; false on timeout.
    public func waitForWorkers(_ count: Int, seconds: Double) throws -> Bool {
        let deadline = Self.now() + seconds
        func ready() -> Int { scheduler.aliveWorkers.filter(holdsCurrentModels).count }
        while ready() < count && Self.now() < deadline { try serve(timeoutMilliseconds: ProtocolTiming.coordinatorPollMilliseconds) { _, _ in } }
        return ready() >= count
    }

    /// Publishes `weights` as `version` and serves until every live worker holds it: the seconds
    /// that took and the bytes the coordinator sent. For benchmarks; a run publishes through `rollouts`.
    public func broadcast(_ weights: ModelWeights, version v: Int, seconds: Double) throws -> (seconds: Double, bytesOut: Int) {
        let bytes0 = counts.bytesBroadcast, began = Self.now()
        publish(weights, version: v)
        while broadcastStarted != nil && Self.now() - began < seconds { try serve(timeoutMilliseconds: ProtocolTiming.coordinatorPollMilliseconds) { _, _ in } }
        guard broadcastStarted == nil else { throw WorkerError("version \(v) did not reach every worker within \(Int(seconds)) s") }
        return (Self.now() - began, counts.bytesBroadcast - bytes0)
    }

    /// Tells every worker the run is over. A coordinator released without it (its run failed) says
    /// so to them as it goes, so workers leave instead of redialling a coordinator that is gone.
    public func finish(reason: String = "run finished") {
        finished = true
        var g = Charter_V1_Goodbye()
        g.reason = reason
        for w in scheduler.aliveWorkers { send(.goodbye(g), to: w) }
        // Sockets linger 0: the goodbyes still queued would be dropped when the socket closes.
        try? control.set(.lingerMilliseconds(1000))
    }

    private var finished = false
}
