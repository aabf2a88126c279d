import Alignment
import ArgumentParser
import Buffers
import Cluster
import Engine
import Formats
import Foundation
import Telemetry
import Tokenizer
import ZeroMQ

/// `charter bench dispatch`: tasks per second through a coordinator serving many simulated workers.
struct DispatchBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatch", abstract: "Tasks/s through the coordinator with simulated workers (no model), and its CPU share.")

    @Option(help: "Simulated workers (one process, a connection each).") var workers = 256
    @Option(help: "Tasks in the measured iteration.") var tasks = 20_000
    @Option(help: "Prompts per task.") var promptsPerTask = 1
    @Option(help: "Measure a generate stage of this many items instead (each result appended to a stage output file).") var items: Int?
    @Option(help: "Items per task, with --items.") var itemsPerTask = 1
    @Flag(help: "Serve /metrics as --metrics-bind does and have another process scrape it every second.") var scrape = false

    func run() throws {
        if let items { return try stage(items) }
        var settings = Coordinator.Settings()
        settings.bind = "tcp://127.0.0.1:*"
        settings.promptsPerTask = promptsPerTask
        var rollout = RolloutSettings()
        rollout.samplesPerPrompt = 2
        rollout.maxNewTokens = 16
        let coordinator = try Coordinator(settings: settings, configText: "", rollout: rollout, runId: "bench-dispatch", logger: .silent)
        let prompts = (0..<tasks * promptsPerTask).map { Prompt(id: $0, text: "", tokens: [1, 2, 3, 4], unsafe: false) }
        coordinator.promptsById = Dictionary(uniqueKeysWithValues: prompts.map { ($0.id, $0) })
        let child = try ClusterBench.spawn(["worker", "--connect", coordinator.controlEndpoint, "--synthetic", "\(workers)"])
        defer { ClusterRun.stop([child]) }
        guard try coordinator.waitForWorkers(workers, seconds: 60) else { throw CLIError("only \(coordinator.scheduler.aliveWorkers.count) of \(workers) workers registered") }
        let unused = ModelWeights(config: try TinyModel.config(layers: 1, width: 8, heads: 1, kvHeads: 1, vocab: 16)) // version 0 never travels
        var scraping: (server: MetricsServer, scraper: Process)?
        if scrape {
            let metrics = CoordinatorMetrics()
            coordinator.metrics = metrics
            let liveness = metrics.liveness
            let server = try MetricsServer(bind: "127.0.0.1:0", registry: metrics.registry) { liveness.health() }
            let loop = "import time, urllib.request\nwhile True:\n    urllib.request.urlopen('http://\(server.address)/metrics').read(); time.sleep(1)"
            let scraper = Process()
            scraper.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            scraper.arguments = ["python3", "-c", loop]
            try scraper.run()
            scraping = (server, scraper)
        }
        defer { if let scraping { scraping.scraper.terminate(); scraping.server.close() } }
        let cpu0 = ClusterBench.cpuSeconds(), began = ContinuousClock.now
        let samples = try coordinator.rollouts(iteration: 0, prompts: prompts, policy: unused, policyVersion: 0)
        let wall = (ContinuousClock.now - began).seconds, cpu = ClusterBench.cpuSeconds() - cpu0
        coordinator.finish()
        guard samples.count == prompts.count * rollout.samplesPerPrompt else { throw CLIError("got \(samples.count) samples, expected \(prompts.count * 2)") }
        print((scrape ? "dispatch (metrics scraped every 1 s)" : "dispatch") + String(format: ": %d simulated workers, %d tasks of %d prompt(s) x 2 samples in %.2f s: %.0f tasks/s; coordinator CPU %.2f s = %.0f%% of one core, %.0f us per task",
                     workers, tasks, promptsPerTask, wall, Double(tasks) / wall, cpu, 100 * cpu / wall, 1e6 * cpu / Double(tasks)))
    }

    /// Items/s of a generate stage: tasks of `itemsPerTask` items to the simulated workers, every
    /// result appended (and fsynced in batches) to a stage output in a temporary folder.
    func stage(_ count: Int) throws {
        var settings = Coordinator.Settings()
        settings.bind = "tcp://127.0.0.1:*"
        let coordinator = try Coordinator(settings: settings, configText: "", rollout: RolloutSettings(), runId: "bench-stage", logger: .silent)
        let child = try ClusterBench.spawn(["worker", "--connect", coordinator.controlEndpoint, "--synthetic", "\(workers)"])
        defer { ClusterRun.stop([child]) }
        guard try coordinator.waitForWorkers(workers, seconds: 60) else { throw CLIError("only \(coordinator.scheduler.aliveWorkers.count) of \(workers) workers registered") }
        let items = (0..<count).map { i -> StageItem in
            var item = StageItem(id: "item-\(i)")
            item.messages = [ChatMessage(role: "user", content: "Write a short answer to question \(i).")]
            return item
        }
        let path = NSTemporaryDirectory() + "charter-bench-stage-\(getpid()).jsonl"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let output = try StageOutput(path: path, resume: false)
        var stage = Coordinator.Stage(name: "generate", kind: .generate, items: items, sampling: RolloutSettings())
        stage.itemsPerTask = itemsPerTask
        let cpu0 = ClusterBench.cpuSeconds(), began = ContinuousClock.now
        try coordinator.run(stage) { results in try output.append(results.map { $0.fields(.generate) }) }
        try output.sync()
        let wall = (ContinuousClock.now - began).seconds, cpu = ClusterBench.cpuSeconds() - cpu0
        coordinator.finish()
        guard output.appended == count else { throw CLIError("the output holds \(output.appended) items, expected \(count)") }
        print(String(format: "dispatch: %d simulated workers, a generate stage of %d items, %d per task, in %.2f s: %.0f items/s; coordinator CPU %.2f s = %.0f%% of one core, %.1f us per item",
                     workers, count, itemsPerTask, wall, Double(count) / wall, cpu, 100 * cpu / wall, 1e6 * cpu / Double(count)))
    }
}

/// `charter bench stage-output`: lines/s appended to a stage output, fsync batched as stages do,
/// beside an fsync per line and no fsync at all.
struct StageOutputBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stage-output", abstract: "Lines/s into a stage output file: fsync per 256 lines or second, per line, never; each encoder alone.")

    @Option(help: "Lines per measurement.") var lines = 20_000
    @Option(help: "Folder for the file (its disk is what is measured).") var dir = NSTemporaryDirectory()

    func run() throws {
        let line: (Int) -> [String: Any] = { i in
            ["id": "item-\(i)", "text": String(repeating: "word ", count: 40), "tokens": Array(0..<48), "truncated": false]
        }
        /// Times `body` over `count` lines and prints its row.
        func row(_ label: String, _ count: Int, _ body: () throws -> Void) rethrows {
            let began = ContinuousClock.now
            try body()
            let wall = (ContinuousClock.now - began).seconds
            print(String(format: "%@ | %d | %.3f | %.0f", label, count, wall, Double(count) / wall))
        }
        print("fsync | lines | seconds | lines/s")
        for (label, every, limit) in [("every 256 lines or 1 s (stages)", 256, lines), ("never (write only)", Int.max, lines), ("every line", 1, min(lines, 2_000))] {
            let path = (dir as NSString).appendingPathComponent("charter-bench-output-\(getpid()).jsonl")
            defer { try? FileManager.default.removeItem(atPath: path) }
            let output = try StageOutput(path: path, resume: false, syncEvery: every, syncSeconds: every == Int.max ? .infinity : 1)
            try row(label, limit) {
                for i in 0..<limit { try output.append([line(i)]) }
                if every != Int.max { try output.sync() }
            }
        }
        // The encoder alone, beside Foundation's that stage outputs used before.
        row("no file: JSONLine encoding only", lines) { for i in 0..<lines { _ = JSONLine.encode(line(i)) } }
        row("no file: JSONSerialization encoding only", lines) {
            for i in 0..<lines { _ = try? JSONSerialization.data(withJSONObject: line(i), options: [.sortedKeys]) }
        }
    }
}

/// `charter bench broadcast`: one new policy version to N worker processes, beside a raw transfer.
struct BroadcastBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broadcast", abstract: "Seconds, MB/s and coordinator bytes out to send a version to 1, 2, 4 workers, beside raw ZeroMQ.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Comma-separated worker counts.") var workers = "1,2,4"

    func run() throws {
        let counts = try workers.split(separator: ",").map { s -> Int in
            guard let n = Int(s.trimmingCharacters(in: .whitespaces)), n > 0 else { throw ValidationError("--workers: \"\(s)\" is not a positive integer") }
            return n
        }
        let model = try modelOptions.load()
        let bytes = model.weights.storage.count * 4
        let mb = Double(bytes) / 1e6
        print(String(format: "%.1f MB of weights; raw: the same bytes from one ROUTER to N receiver processes (DEALER), 4 MiB zero-copy frames", mb))
        let config = """
            model: {policy: "\(modelOptions.model)"}
            data: {prompts: examples/prompts.jsonl}
            reward: {rules: [{type: keyword, value: "a"}]}
            """
        print("workers | broadcast s | MB/s | raw s | raw MB/s | broadcast rate / raw rate | coordinator bytes out (copies)")
        for n in counts {
            let raw = try ClusterBench.rawTransfer(bytes: bytes, receivers: n)
            var settings = Coordinator.Settings()
            settings.bind = "tcp://127.0.0.1:*"
            let coordinator = try Coordinator(settings: settings, configText: config, rollout: RolloutSettings(), runId: "bench-broadcast-\(n)", logger: .silent)
            let children = try (0..<n).map { try ClusterBench.spawn(["worker", "--connect", coordinator.controlEndpoint, "--id", "bench-\($0)"]) }
            defer { ClusterRun.stop(children) }
            guard try coordinator.waitForWorkers(n, seconds: 60) else { throw CLIError("workers did not register") }
            _ = try coordinator.broadcast(model.weights, version: 1, seconds: 300) // warm-up: workers have loaded the model
            let (seconds, out) = try coordinator.broadcast(model.weights, version: 2, seconds: 300)
            coordinator.finish()
            print(String(format: "%7d | %11.3f | %4.0f | %5.3f | %8.0f | %24.0f%% | %.0f MB (%.2f)", n, seconds, mb / seconds, raw, mb / raw,
                         100 * raw / seconds, Double(out) / 1e6, Double(out) / Double(bytes)))
        }
    }
}

/// A hidden helper process for the raw transfer: receives `bytes` bytes, then says done.
struct ZMQSinkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "zmq-sink", shouldDisplay: false)
    @Option var connect: String
    @Option var bytes: Int

    func run() throws {
        let context = ZMQContext()
        let s = try ZMQSocket(context, .dealer)
        defer { s.close() }
        try s.connect(connect)
        try s.send([Frame("ready")])
        var got = 0
        while got < bytes { got += try s.receive()?.reduce(0) { $0 + $1.count } ?? 0 }
        try s.send([Frame("done")])
        _ = try ZMQPoll.readable([s], timeoutMilliseconds: 1000)
    }
}

enum ClusterBench {
    static func spawn(_ arguments: [String]) throws -> Process {
        let p = Process()
        p.executableURL = ClusterRun.binary
        p.arguments = arguments
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// User + system CPU seconds of this process (all its threads, ZeroMQ's I/O thread included).
    static func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6
    }

    /// Seconds until each of `receivers` processes has `bytes` bytes, sent in 4 MiB zero-copy frames
    /// over loopback TCP (chunk by chunk to every receiver in turn).
    static func rawTransfer(bytes: Int, receivers: Int) throws -> Double {
        let context = ZMQContext()
        let router = try ZMQSocket(context, .router)
        defer { router.close() }
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        let sinks = try (0..<receivers).map { _ in try spawn(["bench", "zmq-sink", "--connect", endpoint, "--bytes", "\(bytes)"]) }
        defer { ClusterRun.stop(sinks) }
        var peers: [Data] = []
        while peers.count < receivers, let ready = try router.receive() { peers.append(ready[0]) }
        let buffer = SharedBuffer(count: bytes)
        buffer.bytes.initializeMemory(as: UInt8.self, repeating: 7)
        let chunk = 4 << 20
        let began = ContinuousClock.now
        for offset in stride(from: 0, to: bytes, by: chunk) {
            for peer in peers { try router.send([.data(peer), .shared(buffer, offset: offset, count: min(chunk, bytes - offset))]) }
        }
        for _ in peers { _ = try router.receive() }
        return (ContinuousClock.now - began).seconds
    }
}
