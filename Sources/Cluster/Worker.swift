import Alignment
import Buffers
import Endpoint
import Engine
import Formats
import Foundation
import Logging
import Synchronization
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
        /// Where this worker serves the chunks it holds to peers (its endpoint goes in `Register`);
        /// nil: it does not relay. Not used with CURVE (peers could not authenticate it).
        public var chunkBind: String? = "tcp://127.0.0.1:*"
        /// Faults for tests; none by default.
        public var faults = WorkerFaults()
        /// Seconds of registering without an answer after which the worker gives up (nil: never).
        public var giveUpAfter: Double?
        /// The process that started this worker (`charter local`): when it is gone, the worker exits.
        public var parent: pid_t?
        public init(connect: String, id: String) { self.connect = connect; self.id = id }
    }

    /// Where the worker is in its life.
    enum State {
        case registering(since: Double, attempt: Int)
        case fetching(ChunkFetch)
        case ready
    }

    let options: Options
    let context = ZMQContext()
    let control: ZMQSocket
    /// Events of the control connection: failed handshakes (the only sign a CURVE coordinator
    /// refused us) and lost connections (a coordinator that died or went away).
    let handshakes: ZMQSocket
    var saidRefused = false
    /// Whether the current connection finished its handshake: one dropped before that is a failed
    /// handshake (a plain worker and a CURVE coordinator may see only the drop), not a lost coordinator.
    var handshaken = false
    /// When the worker last said it has no coordinator (nil: it has one, or has not said yet).
    var saidNoCoordinator: Double?
    /// When the current registration began (reset by each Welcome), for --give-up-after.
    var registeringSince: Double?
    /// Serves chunks to peers; `sourceSockets` fetch them, one per source endpoint.
    let chunkServer: ZMQSocket?
    var chunkServerEndpoint = ""
    var sourceSockets: [String: ZMQSocket] = [:]
    var state: State = .registering(since: 0, attempt: 0)
    var heartbeatInterval = Double(ProtocolTiming.heartbeatIntervalMilliseconds) / 1000 // until Welcome says
    var lastHeartbeat = 0.0
    var waitingForTask = false, retryAt = 0.0
    var logger: Logger

    // What the run's configuration gives the worker.
    var config: RLConfig?
    var configText = ""
    var configFolder = ""
    var base: LoadedModel?
    /// The weights that generate: the base model's own buffer, or with LoRA a copy with the adapters merged in.
    var policy: ModelWeights?
    var adapters: LoRAAdapters?
    /// PPO's value head on the policy trunk (critic: head), as the coordinator last published it.
    var valueHead: ScalarHead?
    /// Per model, the version held (absent: 0) and its chunk list (served to peers).
    var versions: [String: Int] = [:]
    var heldManifests: [String: WeightManifest] = [:]
    /// Per model, the last fetch's buffer: served to peers, and reused by the next fetch.
    var spareBuffers: [String: SharedBuffer] = [:]
    /// Announces that arrived during another model's fetch.
    var waitingAnnounces: [String: Charter_V1_ModelAnnounce] = [:]
    var version: Int { versions[ModelName.policy] ?? 0 }
    var runId = ""
    var reference: Transformer?
    /// The judge of options tasks (model.feedback, or the base policy), loaded at its first task.
    var feedback: Transformer?
    var scorer: RewardScorer?
    var rollout = RolloutSettings()
    var pendingTasks: [Charter_V1_Task] = []
    public private(set) var tasksDone = 0
    var faults: WorkerFaults
    /// What `--metrics-bind` serves; the loop updates it.
    public var metrics: WorkerMetrics?

    public init(options: Options) throws {
        self.options = options
        self.faults = options.faults
        logger = Logger(label: "worker \(options.id)")
        control = try ZMQSocket(context, .dealer)
        if let bind = options.chunkBind, options.curve == nil {
            let server = try ZMQSocket(context, .router)
            chunkServerEndpoint = try server.bind(bind)
            chunkServer = server
        } else {
            chunkServer = nil
        }
        handshakes = try control.monitor(events: [.handshakeFailedAuth, .handshakeFailedProtocol, .handshakeFailedNoDetail, .handshakeSucceeded, .disconnected])
        try configure(control)
    }

    deinit {
        // Sockets first: the context cannot end while one is open.
        control.close()
        handshakes.close()
        chunkServer?.close()
        for s in sourceSockets.values { s.close() }
    }

    /// The coordinator's silence says nothing (it trains between iterations without reading), so the
    /// connection's liveness is left to ZMTP heartbeats, which its I/O thread answers while it trains:
    /// a dead connection is dropped and redialled with backoff, and the first message to a new
    /// coordinator process gets NOT_REGISTERED, upon which the worker registers again.
    func configure(_ s: ZMQSocket) throws {
        try s.set(.routingId(options.id))
        try s.set(.heartbeatIntervalMilliseconds(ProtocolTiming.zmtpHeartbeatIntervalMilliseconds))
        try s.set(.heartbeatTimeoutMilliseconds(ProtocolTiming.zmtpHeartbeatTimeoutMilliseconds))
        try s.set(.reconnectIntervalMilliseconds(ProtocolTiming.reconnectIntervalMilliseconds))
        try s.set(.reconnectIntervalMaxMilliseconds(ProtocolTiming.reconnectIntervalMaxMilliseconds))
        if let curve = options.curve { try s.makeCurveClient(serverKey: curve.serverKey, keys: curve.keys) }
        try s.connect(options.connect)
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

    func send(_ body: Message) throws {
        try control.send([.data(Wire.header(body))], wait: false)
    }

    func register() throws {
        var r = Charter_V1_Register()
        r.workerID = options.id
        r.threads = UInt32(ProcessInfo.processInfo.activeProcessorCount)
        r.capabilities = ["generate", "score", "reference"]
        r.policyVersionHeld = UInt64(version)
        r.chunkEndpoint = chunkServerEndpoint
        r.kernel = Kernel.active.rawValue
        try send(.register(r))
    }

    /// An endpoint judge's answers are cached for this process only (workers share no folder), and
    /// the file goes with it.
    var judgeCache: String { FileManager.default.temporaryDirectory.appendingPathComponent("charter-judge-\(options.id)-\(getpid()).jsonl").path }

    /// Runs until the coordinator says goodbye; throws on a fatal protocol error.
    public func run() throws {
        defer { unlink(judgeCache) }
        let start = Self.now()
        state = .registering(since: start, attempt: 0)
        try register()
        while true {
            let sources = Array(sourceSockets.values)
            let readable = try ZMQPoll.readable([control, handshakes] + sources + (chunkServer.map { [$0] } ?? []), timeoutMilliseconds: ProtocolTiming.workerPollMilliseconds)
            if readable[0], let frames = try control.receive(wait: false) {
                if try handleControl(frames) == false { return }
            }
            if readable[1] { noteFailedHandshakes() }
            for (i, socket) in sources.enumerated() where readable[2 + i] {
                while let frames = try socket.receive(wait: false) { try handleChunkReply(frames) }
            }
            serveChunkRequests()
            try tick(now: Self.now())
            if let metrics {
                var registering = false
                if case .registering = state { registering = true }
                metrics.tick(registered: !registering, versions: versions, tasksDone: tasksDone, now: Self.now())
            }
        }
    }

    /// libzmq retries a refused handshake and redials a lost coordinator by itself; the worker says
    /// why nothing happens (a refusal once, a lost connection each time).
    func noteFailedHandshakes() {
        while let event = (try? handshakes.receive(wait: false)).flatMap({ $0 }).flatMap(ZMQSocket.monitorEvent) {
            if event == .handshakeSucceeded { handshaken = true; continue }
            if event == .disconnected && handshaken {
                handshaken = false
                logger.warning("lost the connection to the coordinator at \(options.connect); redialling")
                continue
            }
            guard !saidRefused else { continue }
            saidRefused = true
            logger.error(event == .handshakeFailedAuth
                ? "the coordinator refused this worker's CURVE key (is it on the allow-list?); still trying"
                : "the handshake with the coordinator failed (do both sides use CURVE, with the right server key?); still trying")
        }
    }

    /// The signal that asked this process to stop (0: none yet); see `leaveOnSignals`.
    static let signalled = Atomic<Int32>(0)

    /// SIGTERM and SIGINT make the worker leave at its next step, telling the coordinator, so its
    /// tasks go back to the queue at once rather than after the heartbeat timeout. A second
    /// signal ends it at once.
    public static func leaveOnSignals() {
        for sig in [SIGTERM, SIGINT] {
            signal(sig) { sig in
                if Worker.signalled.exchange(sig, ordering: .relaxed) != 0 { _exit(128 + sig) }
            }
        }
    }

    /// Ends this process if a signal asked it to: Goodbye to the coordinator first (given at most
    /// a second to go out), and the exit status of a process the signal ended.
    func leaveIfSignalled() {
        let sig = Self.signalled.load(ordering: .relaxed)
        guard sig != 0 else { return }
        var g = Charter_V1_Goodbye()
        g.reason = "stopped by signal \(sig)"
        try? control.set(.lingerMilliseconds(1000))
        try? send(.goodbye(g))
        logger.info("stopped by signal \(sig); told the coordinator; \(tasksDone) tasks done")
        unlink(judgeCache)
        for socket in [handshakes, control] + Array(sourceSockets.values) + (chunkServer.map { [$0] } ?? []) { socket.close() }
        _ = context.terminate(waitingAtMost: 1.5)
        _exit(128 + sig)
    }

    /// Ends this process if the parent it was started with is gone (its pid is then another's).
    func exitIfOrphaned() {
        guard let parent = options.parent, getppid() != parent else { return }
        logger.warning("the process that started it is gone; exiting")
        unlink(judgeCache)
        _exit(0) // at once: nothing of the run lives here, and the sockets' threads need no goodbye
    }

    /// Timers: registration retries with backoff, heartbeats, task requests.
    func tick(now: Double) throws {
        exitIfOrphaned()
        leaveIfSignalled()
        switch state {
        case .registering(let since, let attempt):
            // A Register lost with a broken connection is sent again. Always on the same socket: a
            // fresh one would leave the old connection's queued messages to arrive under a stray id.
            let backoff = min(ProtocolTiming.registerRetryFirstSeconds * pow(2, Double(attempt)), ProtocolTiming.registerRetryMaxSeconds)
            let began = registeringSince ?? now
            registeringSince = began
            if let limit = options.giveUpAfter, now - began > limit {
                throw WorkerError("no coordinator answered at \(options.connect) for \(Int(limit)) s; giving up (--give-up-after)")
            }
            // Silence is not a state a person can read: say so after a few tries, then every 30 s.
            if attempt >= 5, now - (saidNoCoordinator ?? -.infinity) >= 30 {
                logger.warning("no coordinator answers at \(options.connect) yet; retrying")
                saidNoCoordinator = now
            }
            if now - since > backoff {
                try register()
                state = .registering(since: now, attempt: attempt + 1)
            }
            return
        case .fetching, .ready: break
        }
        if now - lastHeartbeat >= heartbeatInterval { try heartbeat(now) }
        if case .fetching(let fetch) = state { try requestChunks(fetch, now: now) }
        if case .ready = state, !waitingForTask, now >= retryAt {
            if let task = pendingTasks.first(where: holdsModels) {
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
            logger.warning("dropped a message from the coordinator: \(error)")
            return true
        }
        switch message {
        case .welcome(let w):
            if saidNoCoordinator != nil { logger.info("the coordinator at \(options.connect) answered") }
            saidNoCoordinator = nil
            registeringSince = nil
            heartbeatInterval = Double(max(w.heartbeatIntervalMs, 10)) / 1000
            if w.runID != runId {
                // Versions are numbered per run: weights or settings of another run are not this
                // run's version 0, so the worker starts again from the configuration it is sent.
                logger[metadataKey: "run"] = .string(w.runID)
                if config == nil || versions.values.contains(where: { $0 != 0 }) || w.configYaml != configText || w.configDir != configFolder {
                    do { try load(configText: w.configYaml, folder: w.configDir) } catch {
                        // The coordinator would otherwise only see the heartbeats stop.
                        var e = Charter_V1_Error(); e.code = .loadFailed; e.message = "cannot load the run's configuration: \(error)"
                        try? send(.error(e))
                        usleep(500_000) // sockets close with linger 0: give libzmq time to deliver it
                        throw WorkerError("worker \(options.id): \(e.message)")
                    }
                }
                runId = w.runID
                versions = [:]
                heldManifests = [:]
                waitingAnnounces = [:]
                pendingTasks = []
            }
            waitingForTask = false
            // A ModelAnnounce follows for each model whose version this worker lacks; a repeated Welcome
            // (answering a repeated Register) leaves a fetch in progress alone.
            if case .registering = state { state = .ready }
        case .modelAnnounce(let a):
            try startFetch(a)
        case .task(let t):
            waitingForTask = false
            if holdsModels(t) { try work(t) } else { pendingTasks.append(t) }
        case .noTask(let n):
            waitingForTask = false
            retryAt = Self.now() + Double(n.retryAfterMs) / 1000
        case .goodbye(let g):
            logger.info("coordinator said goodbye (\(g.reason)); \(tasksDone) tasks done")
            return false
        case .error(let e):
            if e.code == .versionMismatch || e.code == .kernelMismatch { throw WorkerError("coordinator refused us: \(e.message)") }
            if e.code == .notRegistered {
                // Every message sent before the Register in flight gets this answer too (in order,
                // before the Welcome): register once, not once per answer.
                if case .registering = state { return true }
                state = .registering(since: 0, attempt: 0)
                logger.warning("the coordinator does not know this worker (it restarted, or declared the worker dead); registering again")
                return true
            }
            logger.warning("coordinator error \(e.code): \(e.message)")
        default:
            logger.warning("unexpected message from the coordinator")
        }
        return true
    }

    /// `folder`: what the configuration's relative paths are read against ("": this worker's working folder).
    func load(configText text: String, folder: String) throws {
        let c = try RLConfig.parse(text, name: "run configuration", forRun: false, folder: folder.isEmpty ? nil : folder)
        let model = try ModelLoader.load(c.policy)
        config = c
        configText = text
        configFolder = folder
        base = model
        if let lora = c.lora {
            // The coordinator's adapters start with B = 0, so version 0 generates with the base weights.
            adapters = try LoRAAdapters(config: lora, model: model.config)
            policy = model.weights.copy()
        } else {
            policy = model.weights
        }
        feedback = nil
        reference = try Transformer(weights: try c.reference.map { try ModelLoader.load($0).weights } ?? model.weights.copy())
        scorer = try c.makeScorer(tokenizer: model.tokenizer, base: model.weights, judgeCache: judgeCache)
        valueHead = nil
        if c.algorithm == "ppo" && c.ppo.critic == .head {
            // Version 0 is where the coordinator's head starts (RLDriver.learner): a reward model's head, else zeros.
            let head = ScalarHead(width: model.config.width)
            if let rm = scorer?.models?.helpfulness ?? scorer?.models?.safety { _ = head.storage.update(from: rm.head.storage) }
            valueHead = head
        }
        rollout = c.rolloutSettings(tokenizer: model.tokenizer)
        logger.info("loaded \(c.policy)")
    }

    // MARK: work

    /// Called between steps of a long task: heartbeats keep the worker alive at the coordinator, and
    /// its peers still get their chunks.
    func stayInTouch() {
        exitIfOrphaned()
        leaveIfSignalled()
        let now = Self.now()
        if now - lastHeartbeat >= heartbeatInterval { try? heartbeat(now) }
        serveChunkRequests()
        metrics?.liveness.tick()
    }

    /// Whether this worker holds what `task` is computed with: a rollout's policy version, or the
    /// version of each model a stage task names. Otherwise the task waits for a fetch to finish.
    func holdsModels(_ task: Charter_V1_Task) -> Bool {
        if task.kind == .rollout { return Int(clamping: task.policyVersion) == version }
        return task.models.allSatisfy { Int(clamping: $0.version) == versions[$0.name] ?? 0 }
    }

    func work(_ task: Charter_V1_Task) throws {
        guard faults.allows(task.taskID, tasksDone: tasksDone, log: { logger.info("\($0)") }) else { return }
        let began = Self.now()
        let result = task.kind == .rollout ? try rolloutResult(task) : try stageResult(task)
        try send(.taskResult(result))
        tasksDone += 1
        metrics?.finished(result, seconds: Self.now() - began)
    }

    /// A rollout task's samples, scored, with reference log-probs (and values, holding the value head).
    func rolloutResult(_ task: Charter_V1_Task) throws -> Charter_V1_TaskResult {
        guard let policy, let reference, let scorer else { throw WorkerError("a task arrived before the run configuration") }
        let prompts = task.prompts.map { Prompt(id: Int(clamping: $0.promptID), text: $0.text, tokens: $0.tokens, unsafe: $0.unsafe) }
        var settings = rollout
        settings.samplesPerPrompt = Int(clamping: task.samplesPerPrompt)
        settings.temperature = task.sampling.temperature
        settings.topK = Int(task.sampling.topK)
        settings.topP = task.sampling.topP
        settings.maxNewTokens = Int(task.sampling.maxNewTokens)
        settings.stopTokens = task.sampling.stopTokens
        let source = InProcessRollouts(settings: settings, runSeed: task.runSeed)
        // Values only with the head of this very policy version.
        let head = (versions[ModelName.valueHead] ?? 0) == Int(clamping: task.policyVersion) ? valueHead : nil
        let samples = try source.rollouts(iteration: Int(clamping: task.iteration), prompts: prompts, policy: policy, valueHead: head,
                                          policyVersion: Int(clamping: task.policyVersion)) { [self] in stayInTouch() }
        // Raw scores only: combining them (whitening above all) needs the whole iteration.
        let scores = try scorer.raw(samples, conversations: Dictionary(prompts.map { ($0.id, $0.conversation) }, uniquingKeysWith: { a, _ in a })) { stayInTouch() }
        var result = Charter_V1_TaskResult()
        result.taskID = task.taskID
        result.iteration = task.iteration
        result.policyVersion = task.policyVersion
        let references = try ReferenceLogprobs.compute(reference, samples: samples, temperature: referenceTemperature(settings)) { stayInTouch() }
        for (i, s) in samples.enumerated() {
            var r = Charter_V1_SampleRecord()
            r.promptID = UInt64(s.promptId)
            r.index = UInt32(s.index)
            r.response = s.response
            r.logprobs = s.logprobs
            r.referenceLogprobs = references[i]
            r.values = s.values ?? []
            if let h = scores[i].helpfulness { r.helpfulnessScore = h }
            if let v = scores[i].safety { r.safetyScore = v }
            if let v = scores[i].judgeRating { r.judgeRating = v }
            r.ruleReward = scores[i].rules
            r.truncated = s.finishReason == .length
            r.seed = s.seed
            result.samples.append(r)
        }
        return result
    }
}

/// The temperature reference log-probs are taken at: the sampling one, or 1 for greedy decoding
/// (which only rejection sampling allows, and which uses no log-probs).
func referenceTemperature(_ settings: RolloutSettings) -> Float { settings.temperature > 0 ? settings.temperature : 1 }

public struct WorkerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
