import Alignment
import ArgumentParser
import Cluster
import Engine
import Formats
import Foundation

extension StageKind: ExpressibleByArgument {}

/// One stage of model work over a file of items, on local workers, on workers that connect, or in
/// this process. Results go to OUT/NAME.jsonl as they are accepted; `--resume` runs only the items
/// not in it yet.
struct StageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stage", abstract: "Run generate, revise, options or score over a JSONL of items (docs/stages.md).")

    @Argument(help: "generate, revise, options or score.") var kind: StageKind
    @Option(help: "The configuration (YAML): its model, reward, data.chat/system and rollout sections apply.") var config: String
    @Option(help: "The items (JSONL, one per line; docs/stages.md).") var items: String
    @Option(help: "Output folder: NAME.jsonl (a line per item), NAME.json (what ran), NAME.metrics.json.") var out: String
    @Option(help: "The stage's name in the output folder (default: its kind).") var name: String?
    @Option(help: "Worker processes to start on this machine (0: only those that connect to --bind).") var workers = 2
    @Option(help: "Control endpoint to bind for workers started by hand or by a cluster.") var bind = "tcp://127.0.0.1:*"
    @Option(help: "Items per task (default: about two tasks per worker, at most 16 items each).") var itemsPerTask: Int?
    @Option(name: .customLong("model"), help: ArgumentHelp("Compute with FOLDER as model NAME (policy, feedback, reward.helpful, reward.safety) instead of the configuration's; workers receive it as that model's version 1 (repeatable).", valueName: "NAME=FOLDER"))
    var models: [String] = []
    @Flag(help: "Compute every item in this process: no coordinator, no workers.") var inProcess = false
    @Flag(help: "Keep the items already in the output and run only the others.") var resume = false
    @Flag(help: "Empty an output folder that already holds a stage, and start again.") var overwrite = false

    func validate() throws {
        if workers < 0 { throw ValidationError("--workers must be 0 or more") }
        if let n = itemsPerTask, n < 1 { throw ValidationError("--items-per-task must be at least 1") }
        if let name, name.isEmpty || name.contains("/") { throw ValidationError("--name must be a plain file name") }
        let overrides = try models.map(ModelOverride.init)
        if Set(overrides.map(\.name)).count < overrides.count { throw ValidationError("--model names a model twice") }
    }

    func run() throws {
        let stageName = name ?? kind.rawValue
        let c = try RLConfig.load(config, forRun: false)
        let overrides = try models.map(ModelOverride.init)
        for o in overrides { _ = try o.configured(c) }
        if kind == .score && c.helpfulnessModel == nil && c.safetyModel == nil && c.rules.isEmpty {
            throw CLIError("\((config as NSString).lastPathComponent): a score stage needs reward models or rules in section \"reward\"")
        }
        let lines = try StageInput.load(items, kind: kind, runSeed: c.seed, chat: c.chat, system: c.system)
        let record = StageRecord(kind: kind, items: items, itemsDigest: try StageRecord.digest(items), config: try String(contentsOfFile: config, encoding: .utf8),
                                 models: overrides.isEmpty ? nil : Dictionary(overrides.map { ($0.name, $0.folder) }, uniquingKeysWith: { a, _ in a }))
        let start = try RunStart(resume: resume, overwrite: overwrite)
        try start.claim(out)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let recordPath = "\(out)/\(stageName).json"
        if start == .resume, let old = try StageRecord.read(recordPath), old != record {
            throw CLIError("\(recordPath): the stage there ran \(old.kind.rawValue) over \(old.items) with another configuration or other items; use another --out or --overwrite")
        }
        try record.write(recordPath)
        let output = try StageOutput(path: "\(out)/\(stageName).jsonl", resume: start == .resume)
        let pending = lines.filter { !output.done.contains($0.item.id) }
        if pending.isEmpty {
            print("stage \(stageName): \(out) is complete: \(lines.count) items")
            return
        }
        let inputs = Dictionary(lines.map { ($0.item.id, $0.object) }, uniquingKeysWith: { a, _ in a })
        var errors = 0
        func accept(_ results: [StageItemResult]) throws {
            errors += results.filter { $0.error != nil }.count
            try output.append(results.map { r in inputs[r.id, default: [:]].merging(r.fields(kind)) { _, new in new } })
        }
        print("stage \(stageName): \(pending.count) of \(lines.count) items to do\(inProcess ? ", in this process" : "")")
        let began = Date()
        var counters: [String: Int] = [:]
        if inProcess {
            var here = c
            for o in overrides { try o.apply(to: &here) }
            try runHere(here, pending.map(\.item), accept: accept)
        } else {
            counters = try runOnWorkers(c, overrides, pending.map(\.item), accept: accept)
        }
        try output.sync()
        let seconds = Date().timeIntervalSince(began)
        let metrics: [String: Any] = ["items": lines.count, "itemsRun": output.appended, "errors": errors, "seconds": seconds,
                                      "itemsPerSecond": Double(output.appended) / max(seconds, 1e-9)].merging(counters) { a, _ in a }
        try JSONSerialization.data(withJSONObject: metrics, options: [.sortedKeys]).write(to: URL(fileURLWithPath: "\(out)/\(stageName).metrics.json"))
        print(String(format: "stage %@: %d items in %@ (%d errors), %.1f s, %.2f items/s", stageName, output.appended, output.path, errors,
                     seconds, Double(output.appended) / max(seconds, 1e-9)))
    }

    /// The in-process path: the same computation a worker does, 16 items per batch.
    func runHere(_ c: RLConfig, _ items: [StageItem], accept: ([StageItemResult]) throws -> Void) throws {
        let model = try ModelLoader.load(c.policy)
        let judge = kind == .options ? try Transformer(weights: try c.feedback.map { try ModelLoader.load($0).weights } ?? model.weights) : nil
        let work = StageWork(policy: try Transformer(weights: model.weights), tokenizer: model.tokenizer,
                             sampling: c.rolloutSettings(tokenizer: model.tokenizer), feedback: judge,
                             scorer: kind == .score ? try c.makeScorer(tokenizer: model.tokenizer) : nil)
        for start in stride(from: 0, to: items.count, by: itemsPerTask ?? 16) {
            try accept(try work.run(kind, Array(items[start ..< min(start + (itemsPerTask ?? 16), items.count)])))
        }
    }

    /// The cluster path: a coordinator on --bind, with --workers local worker processes.
    func runOnWorkers(_ c: RLConfig, _ overrides: [ModelOverride], _ items: [StageItem], accept: ([StageItemResult]) throws -> Void) throws -> [String: Int] {
        let replacements = try overrides.map { ($0.name, try $0.load(against: c)) }
        ClusterRun.stopChildrenOnSignals()
        var settings = Coordinator.Settings()
        settings.bind = bind
        settings.expectedWorkers = workers
        let coordinator = try Coordinator(settings: settings, configText: try String(contentsOfFile: config, encoding: .utf8), rollout: c.rollout,
                                          runId: "stage-\(c.seed)-\(getpid())-\(Int(Date().timeIntervalSince1970))")
        print("coordinator: control \(coordinator.controlEndpoint), chunks \(coordinator.chunkEndpoint)")
        for (name, model) in replacements { coordinator.publish(name, buffers: model.buffers, version: 1) }
        let children = try ClusterRun.startWorkers(workers, connect: coordinator.controlEndpoint, role: "stage")
        defer { ClusterRun.stop(children) }
        // The first tasks are sized for the local workers: spread them over all of them.
        if workers > 0, try !coordinator.waitForWorkers(workers, seconds: 60) {
            print("stage: not all \(workers) local workers were ready after 60 s; going on with \(coordinator.scheduler.aliveWorkers.count)")
        }
        var stage = Coordinator.Stage(name: name ?? kind.rawValue, kind: kind, items: items, sampling: c.rollout)
        stage.itemsPerTask = itemsPerTask
        var lastReport = Date()
        try coordinator.run(stage, accept: accept) { done, total in
            guard done == total || Date().timeIntervalSince(lastReport) >= 5 else { return }
            lastReport = Date()
            print("stage \(stage.name): \(done)/\(total) items, \(coordinator.scheduler.aliveWorkers.count) workers")
        }
        coordinator.finish()
        ClusterRun.wait(children, seconds: 10)
        let s = coordinator.scheduler.counters
        return ["itemsDispatched": s.itemsDispatched, "redispatched": s.redispatched, "duplicatesDropped": s.duplicates,
                "unknownDropped": s.unknown, "mismatchedResults": coordinator.counters.mismatchedResults,
                "malformedDropped": coordinator.counters.malformed + coordinator.counters.unknownMessage,
                "bytesBroadcast": coordinator.counters.bytesBroadcast]
    }
}

/// What a stage output folder ran: a resumed stage must be the same one.
struct StageRecord: Codable, Equatable {
    var kind: StageKind
    var items: String
    var itemsDigest: String
    var config: String
    /// `--model` replacements, model name -> folder.
    var models: [String: String]?

    /// FNV-1a of the items file's bytes, in hex.
    static func digest(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("\(path): cannot read") }
        return String(StageInput.fnv1a(data), radix: 16)
    }

    static func read(_ path: String) throws -> StageRecord? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do { return try JSONDecoder().decode(StageRecord.self, from: data) } catch { throw CLIError("\(path): not a stage record: \(error)") }
    }

    func write(_ path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
