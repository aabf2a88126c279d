import Alignment
import Cluster
import Endpoint
import Engine
import Formats
import Foundation
import Logging

/// Runs one stage over its items, in this process or on workers, and writes the output folder of
/// docs/stages.md: NAME.jsonl line by line, NAME.json (what ran), NAME.metrics.json. The caller
/// claims the folder (`RunStart.claim`) first. Used by `charter stage` and the commands built on stages.
struct StageRunner {
    var kind: StageKind
    var name: String
    var config: RLConfig
    /// The configuration as workers receive it, and as the record keeps it.
    var configText: String
    /// What configText's relative paths are read against ("": generated text holds absolute ones).
    var configFolder = ""
    var out: String
    var placement: StagePlacement
    var overrides: [ModelOverride] = []
    /// Computes items here instead of with the configuration's models (a judge behind an endpoint).
    var compute: (([StageItem]) throws -> [StageItemResult])?

    var workers: Int { placement.workers }
    var logger: Logger { Logger(label: "stage \(name)") }
    var itemsPerTask: Int? { placement.itemsPerTask }
    var inProcess: Bool { placement.inProcess }

    /// What workers load for a command built on stages: only the policy matters to its tasks
    /// (sampling comes with each task).
    static func workerConfig(_ c: RLConfig) -> String {
        let path = String(decoding: try! JSONSerialization.data(withJSONObject: c.policy, options: [.fragmentsAllowed]), as: UTF8.self)
        return """
            # the configuration workers of a stage load
            model: {policy: \(path)}
            rollout: {max_new_tokens: \(c.rollout.maxNewTokens), temperature: \(c.rollout.temperature), top_k: \(c.rollout.topK), top_p: \(c.rollout.topP)}
            run: {seed: \(c.seed)}

            """
    }

    /// Runs the items not yet in NAME.jsonl (all of them unless `start` resumes).
    func run(_ lines: [StageInput.Line], itemsFile: String, start: RunStart) throws {
        let stageName = name, c = config
        let record = StageRecord(kind: kind, items: itemsFile, itemsDigest: try StageRecord.digest(itemsFile), config: configText,
                                 models: overrides.isEmpty ? nil : Dictionary(overrides.map { ($0.name, $0.folder) }, uniquingKeysWith: { a, _ in a }))
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let recordPath = "\(out)/\(stageName).json"
        if start == .resume, let old = try StageRecord.read(recordPath), old != record {
            throw CLIError("\(recordPath): the stage there ran \(old.kind.rawValue) over \(old.items) with another configuration or other items; use another --out or --overwrite")
        }
        try record.write(recordPath)
        let output = try StageOutput(path: "\(out)/\(stageName).jsonl", resume: start == .resume)
        let pending = lines.filter { !output.done.contains($0.item.id) }
        if pending.isEmpty {
            logger.info("\(out) is complete: \(lines.count) items")
            return
        }
        let inputs = Dictionary(lines.map { ($0.item.id, $0.object) }, uniquingKeysWith: { a, _ in a })
        var errors = 0, tokens = 0
        func accept(_ results: [StageItemResult]) throws {
            errors += results.filter { $0.error != nil }.count
            tokens += results.reduce(0) { $0 + $1.textTokens.reduce(0, +) }
            try output.append(results.map { r in inputs[r.id, default: [:]].merging(r.fields(kind)) { _, new in new } })
        }
        logger.info("\(pending.count) of \(lines.count) items to do\(inProcess || compute != nil ? ", in this process" : "")")
        let began = Date()
        var counters: [String: Int] = [:]
        if let compute {
            let items = pending.map(\.item), size = itemsPerTask ?? 16
            for start in stride(from: 0, to: items.count, by: size) { try accept(try compute(Array(items[start ..< min(start + size, items.count)]))) }
        } else if inProcess {
            var here = c
            for o in overrides { try o.apply(to: &here) }
            try runHere(here, pending.map(\.item), accept: accept)
        } else {
            counters = try runOnWorkers(c, overrides, pending.map(\.item), accept: accept)
        }
        try output.sync()
        let seconds = Date().timeIntervalSince(began)
        var metrics: [String: Any] = ["items": lines.count, "itemsRun": output.appended, "errors": errors, "seconds": seconds,
                                      "itemsPerSecond": Double(output.appended) / max(seconds, 1e-9)].merging(counters) { a, _ in a }
        let generates = kind == .generate || kind == .revise
        if generates { metrics["tokensGenerated"] = tokens; metrics["tokensPerSecond"] = Double(tokens) / max(seconds, 1e-9) }
        try JSONSerialization.data(withJSONObject: SnakeCase.keys(metrics), options: [.sortedKeys]).write(to: URL(fileURLWithPath: "\(out)/\(stageName).metrics.json"))
        let rates = String(format: "%.1f s, %.2f items/s", seconds, Double(output.appended) / max(seconds, 1e-9))
            + (generates ? String(format: ", %d tokens generated, %.1f tokens/s", tokens, Double(tokens) / max(seconds, 1e-9)) : "")
        logger.info("\(output.appended) items in \(output.path) (\(errors) errors), \(rates)")
    }

    /// The in-process path: the same computation a worker does, 16 items per batch.
    func runHere(_ c: RLConfig, _ items: [StageItem], accept: ([StageItemResult]) throws -> Void) throws {
        let model = try ModelLoader.load(c.policy)
        let judge = kind == .options ? try Transformer(weights: try c.feedback.map { try ModelLoader.load($0).weights } ?? model.weights) : nil
        let work = StageWork(policy: try Transformer(weights: model.weights), tokenizer: model.tokenizer,
                             sampling: c.rolloutSettings(tokenizer: model.tokenizer), feedback: judge,
                             scorer: kind == .score ? try c.makeScorer(tokenizer: model.tokenizer, base: model.weights, judgeCache: "\(out)/judge-cache.jsonl") : nil)
        for start in stride(from: 0, to: items.count, by: itemsPerTask ?? 16) {
            try accept(try work.run(kind, Array(items[start ..< min(start + (itemsPerTask ?? 16), items.count)])))
        }
    }

    /// The cluster path: a coordinator on --bind, with --workers local worker processes.
    func runOnWorkers(_ c: RLConfig, _ overrides: [ModelOverride], _ items: [StageItem], accept: ([StageItemResult]) throws -> Void) throws -> [String: Int] {
        let replacements = try overrides.map { ($0.name, try $0.load(against: c)) }
        ClusterRun.stopChildrenOnSignals()
        var settings = Coordinator.Settings()
        settings.bind = placement.bind
        settings.expectedWorkers = workers
        settings.mixedKernels = c.mixedKernels
        let coordinator = try Coordinator(settings: settings, configText: configText, rollout: c.rollout,
                                          runId: "stage-\(c.seed)-\(getpid())-\(Int(Date().timeIntervalSince1970))", logger: Logger(label: "coordinator"))
        coordinator.configFolder = configFolder
        coordinator.logger.info("control \(coordinator.controlEndpoint), chunks \(coordinator.chunkEndpoint)")
        let metricsServer = try placement.metrics.serve(coordinator, logger: coordinator.logger)
        defer { metricsServer?.close() }
        for (name, model) in replacements { coordinator.publish(name, buffers: model.buffers, version: 1) }
        let children = try ClusterRun.startWorkers(workers, connect: coordinator.controlEndpoint, role: "stage \(name)", logLevel: placement.logging.logLevel)
        defer { ClusterRun.stop(children) }
        // The first tasks are sized for the local workers: spread them over all of them.
        if workers > 0, try !coordinator.waitForWorkers(workers, seconds: 60) {
            logger.warning("not all \(workers) local workers were ready after 60 s; going on with \(coordinator.scheduler.aliveWorkers.count)")
        }
        var stage = Coordinator.Stage(name: name, kind: kind, items: items, sampling: c.rollout)
        stage.itemsPerTask = itemsPerTask
        var lastReport = Date()
        try coordinator.run(stage, accept: accept) { done, total in
            guard done == total || Date().timeIntervalSince(lastReport) >= 5 else { return }
            lastReport = Date()
            logger.info("\(done)/\(total) items, \(coordinator.scheduler.aliveWorkers.count) workers")
        }
        coordinator.finish()
        ClusterRun.wait(children, seconds: 10)
        let s = coordinator.scheduler.counters
        return ["itemsDispatched": s.itemsDispatched, "redispatched": s.redispatched, "speculativeCopies": s.speculative, "quarantinedResultsDropped": s.fromQuarantined, "duplicatesDropped": s.duplicates,
                "unknownDropped": s.unknown, "mismatchedResults": coordinator.counters.mismatchedResults,
                "invalidResults": coordinator.counters.invalidResults, "kernelMismatches": coordinator.counters.kernelMismatch, "workersQuarantined": coordinator.scheduler.quarantined.count,
                "malformedDropped": coordinator.counters.malformed + coordinator.counters.unknownMessage,
                "notRegistered": coordinator.counters.notRegistered, "logLinesHeldBack": coordinator.counters.logLinesHeldBack,
                "bytesBroadcast": coordinator.counters.bytesBroadcast]
    }
}

/// A JSONL file written whole and renamed into place, so a reader never sees half of it.
func writeJSONL(_ lines: [[String: Any]], to path: String) throws {
    var bytes: [UInt8] = []
    for l in lines { bytes += JSONLine.encode(l); bytes.append(10) }
    try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
}
