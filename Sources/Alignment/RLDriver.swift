import Engine
import Formats
import Foundation
import Logging
import Tokenizer

/// An RL run from its configuration file to its run folder: loads the models and prompts, claims
/// the folder, builds the learner, resumes from the checkpoint, and runs the iterations, writing
/// metrics.jsonl, samples.jsonl, the checkpoint and the policy. The rollout source is the caller's:
/// in this process (`charter rl`) or a coordinator's workers (`coordinator`, `local`).
public final class RLDriver {
    public typealias Source = (RLConfig, LoadedModel, BPETokenizer, [Prompt], LoRAAdapters?) throws -> RolloutSource
    /// The run's reward from its configuration, given the tokenizer, the base weights, whether it
    /// must rate with the judge itself (the rollout source does not score) and the judge's cache
    /// file. A judge behind an endpoint lives in another module, so the caller builds it.
    public typealias ScorerMaker = (RLConfig, BPETokenizer, ModelWeights, _ rates: Bool, _ judgeCache: String) throws -> RewardScorer

    public let config: RLConfig
    /// The configuration's text: saved in the folder, and a checkpoint only resumes under the same.
    public let configText: String
    public let folder: URL
    public let run: RLRun
    public let start: RunStart
    let model: LoadedModel
    let prompts: [Prompt]
    /// Each prompt's text by id, for samples.jsonl.
    let promptText: [Int: String]
    let logger: Logger
    /// Fields added to each metrics line (a coordinator's counters).
    public var extra: ((IterationMetrics) -> [String: Any])?

    public var checkpointFolder: URL { folder.appendingPathComponent("checkpoint") }
    public var policyFolder: URL { folder.appendingPathComponent("policy") }

    public convenience init(configPath: String, start: RunStart, logger: Logger, scorer makeScorer: ScorerMaker, source: Source) throws {
        try self.init(config: try RLConfig.load(configPath), configText: try String(contentsOfFile: configPath, encoding: .utf8), name: configPath,
                      start: start, logger: logger, scorer: makeScorer, source: source)
    }

    /// A run of a configuration made in code (a stage of `charter train`); `configText` is what
    /// the folder keeps and a resumed run must match, `name` what errors call it.
    public init(config c: RLConfig, configText: String, name configPath: String, start: RunStart, logger: Logger, scorer makeScorer: ScorerMaker, source: Source) throws {
        let policy = try ModelLoader.load(c.policy)
        let tok = policy.tokenizer
        let prompts = try PromptData.load(c.prompts, tokenizer: tok, chat: c.chat, system: c.system, maxTokens: c.maxPromptTokens)
        let rollout = c.rolloutSettings(tokenizer: tok)
        let longest = prompts.map(\.tokens.count).max() ?? 0
        if longest + rollout.maxNewTokens > policy.config.contextLength {
            throw DataError("\(configPath): the longest prompt (\(longest) tokens) plus rollout.max_new_tokens (\(rollout.maxNewTokens)) exceed the model's context of \(policy.config.contextLength) tokens")
        }
        try start.claim(c.runDir) // before anything is written there, workers included
        let lora = try c.lora.map { try LoRAAdapters(config: $0, model: policy.config) }
        lora?.initialize(seed: SplitMix64.derive(c.seed, 0x107A))
        let pool = try RejectionPool.load(c.rejectionPool, vocab: policy.config.vocab, maxNewTokens: rollout.maxNewTokens)
        let rollouts = try source(c, policy, tok, prompts, lora)
        if rollouts is InProcessRollouts {
            // All of an iteration's sequences are generated at once here (workers take a task at a
            // time): their caches must fit beside the model.
            let sequences = min(c.promptsPerIteration, prompts.count) * rollout.samplesPerPrompt // each below 2^31
            do {
                try MemoryBudget.check(policy.config.weightBytes + Double(sequences) * policy.config.cacheBytes(tokens: longest + rollout.maxNewTokens),
                                       for: "an iteration of \(sequences) sequences (data.prompts_per_iteration x rollout.samples_per_prompt) of up to \(longest + rollout.maxNewTokens) tokens")
            } catch { throw DataError("\(configPath): \(error)") }
        }
        // Pooled answers are scored here, so the judge rates here too when there are any.
        let scorer = try makeScorer(c, tok, policy.weights, !rollouts.scoresSamples || pool.count > 0, "\(c.runDir)/judge-cache.jsonl")
        run = try RLRun(prompts: prompts, promptsPerIteration: c.promptsPerIteration, rollouts: rollouts, scorer: scorer,
                        learner: try Self.learner(c, policy: policy.weights, lora: lora), seed: c.seed)
        run.pool = pool
        config = c
        self.configText = configText
        folder = URL(fileURLWithPath: c.runDir)
        model = policy
        self.prompts = prompts
        promptText = Dictionary(prompts.map { ($0.id, $0.text) }, uniquingKeysWith: { a, _ in a })
        self.start = start
        self.logger = logger
    }

    /// The configured algorithm's learner, starting from `policy`.
    static func learner(_ c: RLConfig, policy: ModelWeights, lora: LoRAAdapters?) throws -> RLLearner {
        guard c.algorithm == "ppo" else { return try RejectionSampler(policy: policy, lora: lora, settings: c.rejection) }
        let reference = try c.reference.map { try ModelLoader.load($0).weights } ?? policy.copy()
        // The critic starts from a reward model when there is one, else from the policy.
        let critic = try (c.helpfulnessModel ?? c.safetyModel).map { path -> (ModelWeights, ScalarHead) in
            let rm = try RewardModel.load(path)
            return (rm.weights, rm.head)
        }
        return try PPOTrainer(policy: policy, lora: lora, reference: reference, criticInit: critic,
                              kl: KLController(beta: c.beta, target: c.targetKL, horizon: c.klHorizon), settings: c.ppo)
    }

    /// Runs the iterations left, or those before `stopAt` (a test's interruption). A resumed run
    /// continues from its checkpoint; metrics and samples lines after it are written again.
    public func execute(progress: RunProgress? = nil, stopAt: Int? = nil) throws {
        let c = config
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        if start == .resume && RLCheckpoint.exists(in: checkpointFolder) {
            try RLCheckpoint.restore(run, configuration: configText, iterations: c.iterations, from: checkpointFolder)
            if run.iteration >= c.iterations {
                logger.info("the run in \(c.runDir) is complete (\(c.iterations) iterations); nothing to do")
                return
            }
            logger.info("resuming at iteration \(run.iteration) from \(checkpointFolder.path)")
        } else if start == .resume {
            // Starting over rewrites metrics.jsonl. That loses nothing when the run was stopped before
            // its first checkpoint (those iterations are redone the same), but a longer history
            // without a checkpoint means the checkpoint went missing: not resumable.
            let history = (try? String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)) ?? ""
            if history.split(separator: "\n").count > c.checkpointEvery { // checkpoint_every 0: never one
                throw DataError("\(c.runDir) has metrics of an earlier run but no checkpoint (\(checkpointFolder.path)/state.json) to resume from; use --overwrite to start again")
            }
            logger.info("no checkpoint in \(checkpointFolder.path); starting from the beginning")
        }
        try Data(configText.utf8).write(to: folder.appendingPathComponent("config.yaml"))
        let metricsLog = try RunLog(folder.appendingPathComponent("metrics.jsonl"), keepBefore: run.iteration,
                                    tensorboard: folder.appendingPathComponent(TensorBoardEvents.folderName))
        let samplesLog = try RunLog(folder.appendingPathComponent("samples.jsonl"), keepBefore: run.iteration)
        let rejection = run.learner as? RejectionSampler
        let keptLog = rejection == nil ? nil : try RunLog(folder.appendingPathComponent("kept.jsonl"), keepBefore: run.iteration)
        let rollout = c.rolloutSettings(tokenizer: model.tokenizer)
        logger.info("\(c.algorithm), \(prompts.count) prompts, \(c.iterations) iterations of \(c.promptsPerIteration) prompts x \(rollout.samplesPerPrompt) samples, \(Kernel.withBLAS)")
        var policySaved = false
        progress?.begin(total: c.iterations, done: run.iteration)
        var saidSkipped = false
        while run.iteration < min(c.iterations, stopAt ?? .max) {
            let m = try run.runIteration()
            try metricsLog.write(metricsLine(m))
            try writeSamples(of: m, to: samplesLog)
            if let rejection, let keptLog { try writeKept(rejection.lastKept, iteration: m.iteration, to: keptLog) }
            // After the metrics line: a crash between the two rewrites that line on resume.
            if c.checkpointEvery > 0 && (run.iteration % c.checkpointEvery == 0 || run.iteration == c.iterations) {
                try RLCheckpoint.save(run, configuration: configText, to: checkpointFolder)
                try savePolicy()
                policySaved = run.iteration == c.iterations
            }
            if m.skippedSteps > 0 && !saidSkipped {
                saidSkipped = true
                logger.warning("iteration \(m.iteration): \(m.skippedSteps) optimizer steps skipped for a non-finite gradient norm (counted as skippedSteps in the metrics)")
            }
            progress?.update(step: m.iteration + 1, text: Self.progressText(m))
        }
        progress?.finish()
        if run.iteration < c.iterations { return }
        if !policySaved { try savePolicy() }
        logger.info("metrics in \(folder.path)/metrics.jsonl, policy in \(policyFolder.path)")
    }

    /// The policy folder is written with every checkpoint, so it is never older than the run's state.
    func savePolicy() throws {
        try Checkpoint.saveModel(LoadedModel(weights: run.learner.generatingPolicy, tokenizer: model.tokenizer, source: folder,
                                             chatTemplate: model.chatTemplate), to: policyFolder)
    }

    func metricsLine(_ m: IterationMetrics) throws -> [String: Any] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // A diverged update must still leave its line (JSON has no NaN).
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        var line = try JSONSerialization.jsonObject(with: encoder.encode(m)) as! [String: Any]
        for (k, v) in extra?(m) ?? [:] { line[k] = v }
        line["time"] = ISO8601DateFormatter().string(from: Date())
        line["learningRate"] = Double(run.learner.learningRate)
        return line
    }

    /// A few responses of the iteration to read, not only numbers.
    func writeSamples(of m: IterationMetrics, to log: RunLog) throws {
        for s in run.lastSamples.prefix(4) {
            var sample: [String: Any] = ["iteration": m.iteration, "prompt": promptText[s.promptId] ?? "", "sample": s.index,
                                         "response": (try? model.tokenizer.decode(s.response)) ?? "", "reward": Double(s.reward.isFinite ? s.reward : 0),
                                         "truncated": s.finishReason == .length]
            if let h = s.scores?.helpfulness { sample["helpfulnessScore"] = Double(h) }
            if let v = s.scores?.safety { sample["safetyScore"] = Double(v) }
            if let j = s.scores?.judgeRating { sample["judgeRating"] = Double(j) }
            try log.write(sample)
        }
    }

    /// What rejection sampling fine-tuned on, every answer with its tokens: a later run's pool.
    func writeKept(_ kept: [Sample], iteration: Int, to log: RunLog) throws {
        let prompts = Dictionary(prompts.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for s in kept {
            var line: [String: Any] = ["iteration": iteration, "prompt": prompts[s.promptId]?.text ?? "", "prompt_tokens": s.prompt.map(Int.init),
                                       "response": (try? model.tokenizer.decode(s.response)) ?? "", "response_tokens": s.response.map(Int.init),
                                       "reward": Double(s.reward.isFinite ? s.reward : 0), "truncated": s.finishReason == .length]
            if let file = s.pooledFrom { line["pooled_from"] = file }
            try log.write(line)
        }
    }

    /// The progress figures: the reward models' raw scores and the rules' reward (the combined
    /// reward is whitened, so its mean says nothing), KL and time.
    static func progressText(_ m: IterationMetrics) -> String {
        var parts: [String] = []
        if let h = m.helpfulnessScoreMean { parts.append(String(format: "helpful %.3f", h)) }
        if let s = m.safetyScoreMean { parts.append(String(format: "safety %.3f", s)) }
        if let j = m.judgeRatingMean { parts.append(String(format: "judge %.2f/10", j)) }
        if m.helpfulnessScoreMean == nil && m.safetyScoreMean == nil && m.judgeRatingMean == nil || m.ruleRewardMean != 0 { parts.append(String(format: "rules %.3f", m.ruleRewardMean)) }
        parts.append(String(format: "KL %.3f  gen %.1fs  update %.1fs", m.kl, m.generationSeconds, m.updateSeconds))
        return parts.joined(separator: "  ")
    }
}

/// A JSONL file of the run folder with lines tagged by "iteration": a resumed run keeps the lines
/// of iterations before its checkpoint and writes the others again. Keys are written in snake_case.
final class RunLog {
    let handle: FileHandle
    let url: URL
    /// The same lines as TensorBoard events (metrics.jsonl only).
    let events: TensorBoardEvents?

    init(_ url: URL, keepBefore iteration: Int, tensorboard: URL? = nil) throws {
        self.url = url
        let kept = ((try? String(contentsOf: url, encoding: .utf8)) ?? "").split(separator: "\n").filter { line in
            let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            return (object?["iteration"] as? Int ?? .max) < iteration
        }
        try Data(kept.map { $0 + "\n" }.joined().utf8).write(to: url)
        events = try tensorboard.map { try TensorBoardEvents(folder: $0, replaying: kept.map(String.init)) }
        handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
    }

    func write(_ object: [String: Any]) throws {
        let line = try JSONSerialization.data(withJSONObject: SnakeCase.keys(object), options: [.sortedKeys]) + Data("\n".utf8)
        // A full disk is an error that names the file (a partial line is dropped on resume).
        do { try handle.write(contentsOf: line) } catch { throw DataError("\(url.path): cannot write (\(error.localizedDescription))") }
        try events?.append(jsonLine: String(decoding: line, as: UTF8.self))
    }

    deinit { try? handle.close() }
}
