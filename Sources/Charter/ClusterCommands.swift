import Alignment
import ArgumentParser
import Cluster
import Engine
import Foundation
import Logging
import Tokenizer

struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator", abstract: "Run the configuration with rollouts from workers that connect over ZeroMQ.")

    @Option(help: "The run configuration (YAML).") var config: String
    @Option(help: "Control endpoint to bind; the chunk server binds a free port on the same host.") var bind = "tcp://127.0.0.1:5555"
    @Option(help: "Where the chunk server binds (default: a free port on the --bind host); fix it for firewalls and services.")
    var chunkBind: String?
    @Option(help: "Prompts per task (default: about two tasks per live worker each iteration).") var promptsPerTask: Int?
    @Flag(help: "Continue from the run folder's last iteration checkpoint, if there is one.") var resume = false
    @Flag(help: "Empty a run folder that already holds a run, and start again.") var overwrite = false
    @Option(help: "CURVE: file with the coordinator's secret key (charter keys); needs --allow-keys.") var curveSecretKey: String?
    @Option(help: "CURVE: file with the public keys of the workers to admit, one per line.") var allowKeys: String?
    @OptionGroup var metrics: MetricsOptions
    @OptionGroup var logging: LogOptions

    func validate() throws {
        if let p = promptsPerTask, p < 1 { throw ValidationError("--prompts-per-task must be at least 1") }
        if (curveSecretKey == nil) != (allowKeys == nil) { throw ValidationError("--curve-secret-key and --allow-keys go together") }
    }

    func run() throws {
        logging.bootstrap()
        var curve: (String, [String])?
        switch (curveSecretKey, allowKeys) {
        case (nil, nil): curve = nil
        case (let secret?, let allowed?): curve = (try CurveKeys.secret(secret), try CurveKeys.read(allowed, what: "allow-list"))
        default: return // validate() refused it
        }
        try ClusterRun.coordinate(config: config, bind: bind, chunkBind: chunkBind, promptsPerTask: promptsPerTask,
                                  start: try RunStart(resume: resume, overwrite: overwrite), curve: curve, metrics: metrics) { _ in }
    }
}

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Join a coordinator: pull tasks, generate, score, return samples.")

    @Option(help: "The coordinator's control endpoint.") var connect: String
    @Option(help: "Worker id (default: host and process id).") var id: String?
    @Option(help: "Where to serve weight chunks to other workers (its port is announced); \"none\": do not relay.")
    var chunkBind = "tcp://127.0.0.1:*"
    @Option(help: "CURVE: file with the coordinator's public key; needs --curve-secret-key.") var curveServerKey: String?
    @Option(help: "CURVE: file with this worker's secret key (its public key must be on the coordinator's allow-list).")
    var curveSecretKey: String?
    @Option(help: .hidden) var stallAfterTasks: Int?
    @Option(help: .hidden) var pauseAfterTasks: Int?
    // The starting process's pid, given rather than read: a parent killed before this process reads
    // getppid() would otherwise leave it waiting for a coordinator forever.
    @Option(help: .hidden) var exitWithParent: Int32?
    @Option(help: "Simulate this many workers in this process: no model, made-up samples at once (for `bench dispatch`).")
    var synthetic: Int?

    @Option(help: "Exit non-zero after this many seconds without an answer to registration (default: keep trying).")
    var giveUpAfter: Double?
    @OptionGroup var metrics: MetricsOptions
    @OptionGroup var logging: LogOptions

    func validate() throws {
        if !connect.contains("://") { throw ValidationError("--connect \(connect): give a ZeroMQ address such as tcp://127.0.0.1:5555") }
        if (curveServerKey == nil) != (curveSecretKey == nil) { throw ValidationError("--curve-server-key and --curve-secret-key go together") }
        if let g = giveUpAfter, !(g > 0) { throw ValidationError("--give-up-after must be a number of seconds above 0") }
    }

    func run() throws {
        logging.bootstrap()
        if let synthetic { return try SyntheticWorkers(connect: connect, count: synthetic).run() }
        var options = Worker.Options(connect: connect, id: id ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())")
        options.faults.stallAfterTasks = stallAfterTasks
        options.faults.pauseAfterTasks = pauseAfterTasks
        options.giveUpAfter = giveUpAfter
        options.parent = exitWithParent
        options.chunkBind = chunkBind == "none" ? nil : chunkBind
        switch (curveServerKey, curveSecretKey) {
        case (nil, nil): break
        case (let server?, let secret?):
            let keys = try CurveKeys.pair(secretFile: secret) // first: a .pub given here is the likelier slip
            options.curve = (try CurveKeys.one(server, what: "server key file"), keys)
        default: break // validate() refused it
        }
        let worker = try Worker(options: options)
        let telemetry = WorkerMetrics()
        let server = try metrics.serve(telemetry.registry, telemetry.liveness, logger: Logger(label: "worker \(options.id)"))
        defer { server?.close() }
        if server != nil { worker.metrics = telemetry }
        Worker.leaveOnSignals()
        try worker.run()
    }
}

struct LocalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "local", abstract: "Coordinator and N worker processes on this machine (loopback); all stop together.")

    @Option(help: "The run configuration (YAML).") var config: String
    @Option(help: "Worker processes.") var workers = 2
    @Option(help: "Prompts per task (default: about two tasks per live worker each iteration).") var promptsPerTask: Int?
    @Flag(help: "Continue from the run folder's last iteration checkpoint, if there is one.") var resume = false
    @Flag(help: "Empty a run folder that already holds a run, and start again.") var overwrite = false
    @OptionGroup var metrics: MetricsOptions
    @OptionGroup var logging: LogOptions

    func validate() throws {
        if workers < 1 { throw ValidationError("--workers must be at least 1") }
        if let p = promptsPerTask, p < 1 { throw ValidationError("--prompts-per-task must be at least 1") }
    }

    func run() throws {
        logging.bootstrap()
        var children: [Process] = []
        defer { ClusterRun.stop(children) }
        try ClusterRun.coordinate(config: config, bind: "tcp://127.0.0.1:*", promptsPerTask: promptsPerTask, expectedWorkers: workers,
                                  start: try RunStart(resume: resume, overwrite: overwrite), metrics: metrics) { endpoint in
            children = try ClusterRun.startWorkers(workers, connect: endpoint, role: "local", logLevel: logging.logLevel)
        }
        ClusterRun.wait(children, seconds: 10)
    }
}

enum ClusterRun {
    /// This program, for starting workers and helper processes.
    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()

    /// Child processes to stop on Ctrl-C (the handler cannot capture).
    nonisolated(unsafe) static var children: [Int32] = []
    /// Said on stderr when a signal ends the process (how to continue the run), if set.
    nonisolated(unsafe) static var interruptNote: UnsafeMutablePointer<CChar>?

    static func onInterrupt(say note: String) {
        free(interruptNote)
        interruptNote = strdup(note + "\n")
    }

    /// Starts `count` worker processes of this program on `connect`, ids local-0 ...; each exits
    /// when this process is gone.
    static func startWorkers(_ count: Int, connect: String, role: String, logLevel: Logger.Level) throws -> [Process] {
        try (0..<count).map { i in
            let p = Process()
            p.executableURL = binary
            p.arguments = ["worker", "--connect", connect, "--id", "local-\(i)", "--exit-with-parent", String(getpid()), "--log-level", logLevel.rawValue]
            try p.run()
            Logger(label: role).info("worker local-\(i) is process \(p.processIdentifier)")
            children.append(p.processIdentifier)
            return p
        }
    }

    /// Ctrl-C, kill and a closed terminal stop the children too (and each exits by itself should
    /// this process die of SIGKILL: see Worker.Options.parent).
    static func stopChildrenOnSignals() {
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig) { sig in
                for pid in ClusterRun.children { kill(pid, SIGTERM) }
                if let note = ClusterRun.interruptNote { _ = write(2, note, strlen(note)) } // async-signal-safe
                _exit(128 + sig)
            }
        }
    }

    static func coordinate(config: String, bind: String, chunkBind: String? = nil, promptsPerTask: Int?, expectedWorkers: Int = 0, start: RunStart, curve: (secret: String, allowed: [String])? = nil,
                           metrics options: MetricsOptions, started: (String) throws -> Void) throws {
        stopChildrenOnSignals()
        var coordinator: Coordinator?
        // The run id is known before anything is loaded, so every line of this run carries it.
        let runId = "run-\((try? RLConfig.load(config))?.seed ?? 0)-\(getpid())-\(Int(Date().timeIntervalSince1970))"
        var logger = Logger(label: "coordinator")
        logger[metadataKey: "run"] = .string(runId)
        // Served from the start, so a probe sees the process while the model loads.
        let telemetry = CoordinatorMetrics()
        let metricsServer = try options.serve(telemetry.registry, telemetry.liveness, logger: logger)
        defer { metricsServer?.close() }
        try RLCommand.execute(config: config, start: start, logger: logger, extra: { m in coordinator.map { iterationDone($0, m) } ?? [:] }) { c, _, tok, prompts, lora in
            var settings = Coordinator.Settings()
            settings.bind = bind
            settings.chunkBind = chunkBind
            settings.promptsPerTask = promptsPerTask
            settings.expectedWorkers = expectedWorkers
            settings.mixedKernels = c.mixedKernels
            settings.curveSecretKey = curve?.secret
            settings.allowedKeys = curve?.allowed ?? []
            let server = try rolloutCoordinator(c, tokenizer: tok, prompts: prompts, lora: lora, configText: try String(contentsOfFile: config, encoding: .utf8),
                                                configFolder: RLConfig.folder(of: config), settings: settings, runId: runId, logger: logger)
            if options.metricsBind != nil { server.metrics = telemetry }
            coordinator = server
            try started(server.controlEndpoint)
            return server
        }
        coordinator?.finish()
    }

    /// The coordinator an RL run's rollouts come from: workers load `configText` (relative paths
    /// read against `configFolder`) and get the run's prompts, seed and LoRA adapters from it.
    static func rolloutCoordinator(_ c: RLConfig, tokenizer: BPETokenizer, prompts: [Prompt], lora: LoRAAdapters?, configText: String, configFolder: String,
                                   settings: Coordinator.Settings, runId: String, logger: Logger) throws -> Coordinator {
        let server = try Coordinator(settings: settings, configText: configText, rollout: c.rolloutSettings(tokenizer: tokenizer), runId: runId, logger: logger)
        server.configFolder = configFolder
        server.promptsById = Dictionary(prompts.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        server.runSeed = c.seed
        server.adapters = lora
        server.sampleCheck = SampleCheck(c)
        server.logger.info("control \(server.controlEndpoint), chunks \(server.chunkEndpoint)")
        return server
    }

    /// An iteration ended: its figures go to the coordinator's /metrics, and its counters to the metrics line.
    static func iterationDone(_ c: Coordinator, _ m: IterationMetrics) -> [String: Any] {
        c.metrics?.iterationFinished(m)
        return metrics(c, m)
    }

    /// What a coordinator adds to each metrics line: its counters, and the iteration's time split
    /// (waiting for rollouts, the version's broadcast included; the broadcast alone; training).
    static func metrics(_ c: Coordinator, _ m: IterationMetrics) -> [String: Any] {
        let split = ["waitingSeconds": m.generationSeconds, "broadcastSeconds": c.broadcastSeconds,
                     "trainingSeconds": m.scoringSeconds + m.referenceSeconds + m.valueSeconds + m.updateSeconds]
        return ["workersAlive": c.scheduler.aliveWorkers.count, "redispatched": c.scheduler.counters.redispatched, "speculativeCopies": c.scheduler.counters.speculative, "quarantinedResultsDropped": c.scheduler.counters.fromQuarantined,
                "duplicatesDropped": c.scheduler.counters.duplicates, "staleDropped": c.scheduler.counters.stale,
                "malformedDropped": c.counters.malformed + c.counters.unknownMessage, "versionMismatches": c.counters.versionMismatch, "kernelMismatches": c.counters.kernelMismatch,
                "mismatchedResults": c.counters.mismatchedResults, "invalidResults": c.counters.invalidResults,
                "notRegistered": c.counters.notRegistered, "unknownResults": c.scheduler.counters.unknown, "logLinesHeldBack": c.counters.logLinesHeldBack,
                "workersQuarantined": c.scheduler.quarantined.count,
                "bytesBroadcast": c.counters.bytesBroadcast, "curveRefused": c.counters.curveRefused].merging(split) { a, _ in a }
    }

    static func wait(_ processes: [Process], seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        while processes.contains(where: \.isRunning) && Date() < deadline { usleep(20_000) }
    }

    static func stop(_ processes: [Process]) {
        for p in processes where p.isRunning { p.terminate() }
        wait(processes, seconds: 2)
        for p in processes where p.isRunning { kill(p.processIdentifier, SIGKILL) }
    }
}
