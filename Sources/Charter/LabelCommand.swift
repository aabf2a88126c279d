import Alignment
import ArgumentParser
import Endpoint
import Formats
import Foundation
import Logging

extension LabelSettings.Orders: ExpressibleByArgument {}
extension EndpointJudge.Settings.API: ExpressibleByArgument {}

/// AI preference labels (RLAIF, docs/labeler.md): the judge answers a multiple-choice question per
/// pair, principle and order; the option letters' probabilities, averaged over orders and
/// principles, are the soft label. The judge's work is an `options` stage, so it runs in this
/// process or on workers like any stage, and a resumed run never asks a question twice.
struct LabelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "label", abstract: "Label answer pairs with a feedback model under a constitution (docs/labeler.md).")

    @Option(help: "Pairs (JSONL): {\"prompt\", \"a\", \"b\"} per line; prompt a string or chat messages; \"better\" for --eval.") var pairs: String
    @Option(help: "The labelled pairs (JSONL); the judge's questions and answers go to the folder OUT.stage beside it.") var out: String
    @Option(help: "The constitution whose comparison questions are asked (default constitutions/default.yaml).") var constitution: String?
    @Option(help: "The judge: a GGUF file, a Hugging Face folder or a tiny:... spec (default: the configuration's model.feedback, else model.policy).") var judge: String?
    @Option(help: "A judge behind an OpenAI-compatible server (its base address); asked from this process with /v1/completions.") var judgeUrl: String?
    @Option(help: "The model name the server knows the judge by (with --judge-url).") var judgeModel: String?
    @Option(help: "completions (/v1/completions: the prompt as text, Charter's chat template; the default) or chat (/v1/chat/completions: the server's template).") var judgeApi: EndpointJudge.Settings.API = .completions
    @Option(help: "Requests in flight at once (with --judge-url).") var judgeConcurrency = 4
    @Option(help: "Seconds a request may take before it is tried again (with --judge-url).") var judgeTimeout = 60.0
    @Option(help: "Tries after the first for 429, 5xx, time-outs, dropped connections and malformed answers (with --judge-url).") var judgeRetries = 5
    @Option(help: "How many top log-probs to ask for; an option not among them gets the smallest listed (with --judge-url).") var judgeTopLogprobs = 10
    @Option(help: "The environment variable holding the API key, sent as a bearer token (default: OPENAI_API_KEY, if set).") var judgeKeyEnv: String?
    @Option(help: "Ask each pair in both orders and average (both, the default), or with a shown first only (one).") var orders: LabelSettings.Orders = .both
    @Option(help: "Comparison principles drawn per pair (an ensemble; default 1).") var principles = 1
    @Option(help: "Draw only among comparisons with this tag (helpful, harmless, ...).") var tag: String?
    @Option(help: "Clamp the final probability into LO,HI (say 0.4,0.6).") var clamp: String?
    @Option(help: "Worked comparisons of the constitution shown first (default 0).") var fewShot = 0
    @Flag(help: "Chain of thought: the judge writes a rationale first (greedy), then the letters are read after it.") var cot = false
    @Option(help: "Token limit of a rationale (with --cot).") var cotTokens = 128
    @Flag(help: "Report agreement with each pair's \"better\" field (a or b) and calibration.") var eval = false
    @Option(help: "A run configuration (YAML): its model, data.system and run.seed apply.") var config: String?
    @Option(help: "Seed of the principles drawn (default: run.seed).") var seed: Int?
    @OptionGroup var placement: StagePlacement

    func validate() throws {
        if principles < 1 { throw ValidationError("--principles must be at least 1") }
        if fewShot < 0 { throw ValidationError("--few-shot must be 0 or more") }
        if let s = seed, s < 0 { throw ValidationError("--seed must be 0 or more") }
        _ = try clampRange()
        if judgeUrl != nil && judge != nil { throw ValidationError("--judge and --judge-url exclude each other: a local model or an endpoint") }
        if judgeUrl != nil && judgeModel == nil { throw ValidationError("--judge-url needs --judge-model: the model name the server knows the judge by") }
        if cot && judgeApi == .chat { throw ValidationError("--cot needs --judge-api completions: the rationale's prompt is the judge's raw text") }
        if cotTokens < 1 { throw ValidationError("--cot-tokens must be at least 1") }
        if judgeUrl == nil && (judgeModel != nil || judgeKeyEnv != nil) { throw ValidationError("--judge-model and --judge-key-env go with --judge-url") }
        if judgeConcurrency < 1 { throw ValidationError("--judge-concurrency must be at least 1") }
        if !(judgeTimeout > 0) { throw ValidationError("--judge-timeout must be more than 0 seconds") }
        if judgeRetries < 0 { throw ValidationError("--judge-retries must be 0 or more") }
        if !(1...20).contains(judgeTopLogprobs) { throw ValidationError("--judge-top-logprobs must be from 1 to 20") }
    }

    /// The endpoint's settings, with the API key read from the environment.
    func endpointSettings() throws -> EndpointJudge.Settings? {
        guard let judgeUrl, let judgeModel else { return nil }
        var s = EndpointJudge.Settings(url: judgeUrl, model: judgeModel)
        s.concurrency = judgeConcurrency; s.timeoutSeconds = judgeTimeout; s.retries = judgeRetries; s.topLogprobs = judgeTopLogprobs
        s.api = judgeApi
        _ = try s.completionsURL()
        let variable = judgeKeyEnv ?? "OPENAI_API_KEY"
        s.apiKey = ProcessInfo.processInfo.environment[variable]
        if judgeKeyEnv != nil && s.apiKey == nil { throw CLIError("--judge-key-env \(variable): the environment has no \(variable)") }
        return s
    }

    func clampRange() throws -> ClosedRange<Double>? {
        guard let clamp else { return nil }
        let parts = clamp.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let lo = parts[0], let hi = parts[1], 0 <= lo, lo < hi, hi <= 1 else {
            throw ValidationError("--clamp \(clamp): give two probabilities LO,HI with 0 <= LO < HI <= 1, such as 0.4,0.6")
        }
        return lo...hi
    }

    /// OUT.jsonl -> OUT.stage: the stage's folder, beside the labels.
    var stageFolder: String { (out.hasSuffix(".jsonl") ? String(out.dropLast(6)) : out) + ".stage" }

    func run() throws {
        placement.logging.bootstrap()
        var c = try config.map { try RLConfig.load($0, forRun: false) } ?? RLConfig()
        c.policy = judge ?? c.feedback ?? c.policy
        c.feedback = nil
        if let seed { c.seed = UInt64(seed) }
        var settings = LabelSettings()
        settings.orders = orders; settings.principles = principles; settings.tag = tag
        settings.clamp = try clampRange(); settings.fewShot = fewShot; settings.cot = cot; settings.cotTokens = cotTokens
        let constitution = try Constitution.load(self.constitution ?? c.constitution ?? "constitutions/default.yaml")
        let plan = try LabelPlan(constitution: constitution, settings: settings, pairs: try LabelPair.load(pairs, system: c.system), runSeed: c.seed)
        if eval, !plan.pairs.contains(where: { $0.better != nil }) { throw CLIError("--eval needs pairs with a \"better\" field (\"a\" or \"b\")") }

        let endpoint = try endpointSettings()
        if endpoint == nil { try ModelLoader.checkExists(c.policy) }
        let start = try placement.start()
        let folder = stageFolder
        if start == .fresh, FileManager.default.fileExists(atPath: out) {
            throw CLIError("\(out) already exists: pass --resume to finish the labels it came from, or --overwrite to label again")
        }
        // The endpoint's answers outlive --overwrite: asking the same again costs nothing.
        try start.claim(folder, keeping: [Self.cacheFile])
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        log("\(plan.pairs.count) pairs x \(principles) principle\(principles == 1 ? "" : "s") x \(orders == .both ? 2 : 1) order\(orders == .both ? "s" : "") = \(plan.questions.count) questions, "
            + "constitution \(constitution.name) v\(constitution.version), judge \(endpoint.map { "\($0.model) at \($0.url)" } ?? c.policy)")
        let began = Date()
        let judge = try endpoint.map { try EndpointJudge($0, cachePath: "\(folder)/\(Self.cacheFile)") }
        defer { if let judge { reportEndpoint(judge, folder: folder) } }
        if cot { c.rollout.temperature = 0; c.rollout.topK = 0; c.rollout.topP = 1; c.rollout.maxNewTokens = cotTokens }
        var questions = cot ? try afterRationales(plan, config: c, folder: folder, start: start, judge: judge) : plan.questions
        if endpoint?.api == .chat { for i in questions.indices { questions[i].item.messages = questions[i].turns; questions[i].item.prompt = "" } }
        let itemsPath = "\(folder)/items.jsonl"
        let itemLines: [[String: Any]] = questions.map { q in
            var line: [String: Any] = ["id": q.item.id, "options": q.item.options, "pair": plan.pairs[q.pair].id, "principle": q.principle + 1, "order": q.order.rawValue]
            if q.item.messages.isEmpty { line["prompt"] = q.item.prompt } else { line["messages"] = q.item.messages.map { ["role": $0.role, "content": $0.content] } }
            return line
        }
        try writeJSONL(itemLines, to: itemsPath)
        var runner = StageRunner(kind: .options, name: "options", config: c, configText: endpoint.map(Self.endpointRecord) ?? StageRunner.workerConfig(c),
                                 out: folder, placement: placement)
        if let judge { runner.compute = judge.options }
        try runner.run(zip(questions, itemLines).map { StageInput.Line(item: $0.item, object: $1) }, itemsFile: itemsPath, start: start)
        let seconds = Date().timeIntervalSince(began)

        let results = Dictionary(try JSONLines.read("\(folder)/options.jsonl").map { ($0.object["id"] as? String ?? "", $0.object) }) { a, _ in a }
        let outcome = try LabelOutcome(plan: plan, results: results)
        try writeJSONL(outcome.lines, to: out)
        let debiased = orders == .both ? 0.5 : outcome.meanPFirstShown
        log(String(format: "%d pairs (%d errors) in %@; mean P(first shown) %.3f asked, %.3f after averaging the orders; %.2f labels/s",
                   plan.pairs.count, outcome.errors, out, outcome.meanPFirstShown, debiased, Double(plan.pairs.count) / max(seconds, 1e-9)))
        if eval { print(LabelEval(plan: plan, outcome: outcome).report.joined(separator: "\n")) }
    }

    /// Chain of thought, step 1: each question's rationale, greedy, as a generate stage of its own
    /// (OUT.stage/rationales.jsonl), by the local judge or through the endpoint; the questions then
    /// end with their rationales.
    func afterRationales(_ plan: LabelPlan, config c: RLConfig, folder: String, start: RunStart, judge: EndpointJudge?) throws -> [LabelPlan.Question] {
        let path = "\(folder)/rationale-items.jsonl"
        let lines: [[String: Any]] = plan.questions.map { ["id": $0.item.id, "prompt": $0.item.prompt] }
        try writeJSONL(lines, to: path)
        var stage = StageRunner(kind: .generate, name: "rationales", config: c, configText: judge.map { Self.endpointRecord($0.settings) } ?? StageRunner.workerConfig(c),
                                out: folder, placement: placement)
        if let judge { stage.compute = { [cotTokens] in try judge.rationales($0, maxTokens: cotTokens) } }
        try stage.run(zip(plan.questions, lines).map { StageInput.Line(item: $0.item, object: $1) }, itemsFile: path, start: start)
        let texts = try JSONLines.read("\(folder)/rationales.jsonl").map { ($0.object["id"] as? String ?? "", $0.object["text"] as? String ?? "") }
        return try plan.afterRationales(Dictionary(texts) { a, _ in a })
    }

    static let cacheFile = "judge-cache.jsonl"

    /// What the stage record keeps of an endpoint judge (not the key): a resumed run must ask the same.
    static func endpointRecord(_ s: EndpointJudge.Settings) -> String {
        "# charter label: a judge behind an OpenAI-compatible endpoint\njudge: {url: \(s.url), model: \(s.model), api: \(s.api.rawValue), top_logprobs: \(s.topLogprobs)}\n"
    }

    /// The endpoint's counters: to OUT.stage/judge.metrics.json and one line on stderr, also when
    /// the run stops on a failure.
    func reportEndpoint(_ judge: EndpointJudge, folder: String) {
        try? judge.sync()
        let n = judge.counters
        try? JSONSerialization.data(withJSONObject: n.dictionary, options: [.sortedKeys]).write(to: URL(fileURLWithPath: "\(folder)/judge.metrics.json"))
        let failures = n.failures.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        log("judge endpoint: \(n.requests) requests, \(n.cacheHits) answered from the cache, \(n.failures.values.reduce(0, +)) failed tries"
            + (failures.isEmpty ? "" : " (\(failures))") + ", \(n.missingOptions) options missing from the top log-probs")
    }

    /// The summary goes to stderr, so stdout carries only the --eval report.
    func log(_ s: String) { Logger(label: "label").info("\(s)") }
}
