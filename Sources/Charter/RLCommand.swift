import Alignment
import ArgumentParser
import Endpoint
import Engine
import Formats
import Foundation
import Logging
import Tokenizer

struct RLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rl", abstract: "Iterations of generate -> score -> PPO or rejection sampling, in this process.")

    @Option(help: "The run configuration (YAML: run, model, data, reward, algorithm, rollout).") var config: String
    @Flag(help: "Continue from the run folder's last iteration checkpoint, if there is one.") var resume = false
    @Flag(help: "Empty a run folder that already holds a run, and start again.") var overwrite = false
    @OptionGroup var logging: LogOptions

    func run() throws {
        logging.bootstrap()
        try Self.execute(config: config, start: try RunStart(resume: resume, overwrite: overwrite), logger: Logger(label: "rl")) { c, _, tok, _, _ in InProcessRollouts(settings: c.rolloutSettings(tokenizer: tok), runSeed: c.seed) }
    }

    /// The run of a configuration with a given rollout source: in this process (`rl`) or from
    /// workers (`coordinator`, `local`). `extra` adds fields to each metrics line.
    /// Each iteration ends with a checkpoint in RUN/checkpoint; `resume` continues from it.
    static func execute(config: String, start: RunStart, logger: Logger, extra: ((IterationMetrics) -> [String: Any])? = nil,
                        source: (RLConfig, LoadedModel, BPETokenizer, [Prompt], LoRAAdapters?) throws -> RolloutSource) throws {
        let c = try RLConfig.load(config)
        let policy = try ModelLoader.load(c.policy)
        let tok = policy.tokenizer
        let prompts = try PromptData.load(c.prompts, tokenizer: tok, chat: c.chat, system: c.system, maxTokens: c.maxPromptTokens)
        let rollout = c.rolloutSettings(tokenizer: tok)
        let longest = prompts.map(\.tokens.count).max() ?? 0
        if longest + rollout.maxNewTokens > policy.config.contextLength {
            throw DataError("\(config): the longest prompt (\(longest) tokens) plus rollout.max_new_tokens (\(rollout.maxNewTokens)) exceed the model's context of \(policy.config.contextLength) tokens")
        }
        try start.claim(c.runDir) // before anything is written there, workers included
        let lora = c.lora.map { LoRAAdapters(config: $0, model: policy.config) }
        lora?.initialize(seed: SplitMix64.derive(c.seed, 0x107A))
        let rollouts = try source(c, policy, tok, prompts, lora)
        let scorer = try c.makeScorer(tokenizer: tok, base: policy.weights, rates: !rollouts.scoresSamples,
                                      judgeCache: "\(c.runDir)/judge-cache.jsonl")

        let algorithm: RLAlgorithm
        if c.algorithm == "ppo" {
            let reference = try c.reference.map { try ModelLoader.load($0).weights } ?? policy.weights.copy()
            let critic = try (c.helpfulnessModel ?? c.safetyModel).map { path -> (ModelWeights, ScalarHead) in
                let rm = try RewardModel.load(path)
                return (rm.weights, rm.head)
            }
            algorithm = .ppo(try PPOTrainer(policy: policy.weights, lora: lora, reference: reference, criticInit: critic,
                                            kl: KLController(beta: c.beta, target: c.targetKL, horizon: c.klHorizon), settings: c.ppo))
        } else {
            algorithm = .rejection(try RejectionSampler(policy: policy.weights, lora: lora, settings: c.rejection))
        }
        let run = try RLRun(prompts: prompts, promptsPerIteration: c.promptsPerIteration,
                            rollouts: rollouts, scorer: scorer, algorithm: algorithm, seed: c.seed)

        let dir = URL(fileURLWithPath: c.runDir)
        let checkpoint = dir.appendingPathComponent("checkpoint")
        let configText = try String(contentsOfFile: config, encoding: .utf8)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        if start == .resume && RLCheckpoint.exists(in: checkpoint) {
            try RLCheckpoint.restore(run, configuration: configText, iterations: c.iterations, from: checkpoint)
            if run.iteration >= c.iterations {
                logger.info("the run in \(c.runDir) is complete (\(c.iterations) iterations); nothing to do")
                return
            }
            logger.info("resuming at iteration \(run.iteration) from \(checkpoint.path)")
        } else if start == .resume {
            // Starting over would rewrite metrics.jsonl: a history without a checkpoint is not resumable.
            if let history = try? String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8), !history.isEmpty {
                throw CLIError("\(c.runDir) has metrics of an earlier run but no checkpoint (\(checkpoint.path)/state.json) to resume from; use --overwrite to start again")
            }
            logger.info("no checkpoint in \(checkpoint.path); starting from the beginning")
        }
        try Data(configText.utf8).write(to: dir.appendingPathComponent("config.yaml"))
        // The lines of iterations after the checkpoint are written again.
        let metricsLog = try RunLog(dir.appendingPathComponent("metrics.jsonl"), keepBefore: run.iteration)
        let samplesLog = try RunLog(dir.appendingPathComponent("samples.jsonl"), keepBefore: run.iteration)
        let promptText = Dictionary(prompts.map { ($0.id, $0.text) }, uniquingKeysWith: { a, _ in a })
        logger.info("\(c.algorithm), \(prompts.count) prompts, \(c.iterations) iterations of \(c.promptsPerIteration) prompts x \(rollout.samplesPerPrompt) samples, \(BLAS.summary)")
        ClusterRun.stopChildrenOnSignals()
        ClusterRun.onInterrupt(say: c.checkpointEvery > 0
            ? "interrupted; continue from the last checkpoint (\(checkpoint.path)) with: \(Self.resumeCommand())"
            : "interrupted; this run writes no checkpoints (run.checkpoint_every: 0), so it cannot be continued")
        // The policy folder is written with every checkpoint, so it is never older than the run's state.
        func savePolicy() throws {
            let weights = lora?.merged(with: policy.weights) ?? policy.weights
            try Checkpoint.saveModel(LoadedModel(weights: weights, tokenizer: tok, source: dir, chatTemplate: policy.chatTemplate),
                                     to: dir.appendingPathComponent("policy"))
        }
        var policySaved = false
        let progress = ProgressBar(total: c.iterations, start: run.iteration, logger: logger)
        var saidSkipped = false
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // A diverged update must still leave its line (JSON has no NaN).
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        while run.iteration < c.iterations {
            let m = try run.runIteration()
            var line = try JSONSerialization.jsonObject(with: encoder.encode(m)) as! [String: Any]
            for (k, v) in extra?(m) ?? [:] { line[k] = v }
            line["time"] = ISO8601DateFormatter().string(from: Date())
            line["learningRate"] = Double(c.algorithm == "ppo" ? c.ppo.learningRate : c.rejection.learningRate)
            try metricsLog.write(line)
            // A few responses to read, not only numbers.
            for s in run.lastSamples.prefix(4) {
                var sample: [String: Any] = ["iteration": m.iteration, "prompt": promptText[s.promptId] ?? "", "sample": s.index,
                                             "response": (try? tok.decode(s.response)) ?? "", "reward": Double(s.reward.isFinite ? s.reward : 0),
                                             "truncated": s.finishReason == .length]
                if let h = s.scores?.helpfulness { sample["helpfulnessScore"] = Double(h) }
                if let v = s.scores?.safety { sample["safetyScore"] = Double(v) }
                if let j = s.scores?.judgeRating { sample["judgeRating"] = Double(j) }
                try samplesLog.write(sample)
            }
            // After the metrics line: a crash between the two rewrites that line on resume.
            if c.checkpointEvery > 0 && (run.iteration % c.checkpointEvery == 0 || run.iteration == c.iterations) {
                try RLCheckpoint.save(run, configuration: configText, to: checkpoint)
                try savePolicy()
                policySaved = run.iteration == c.iterations
            }
            if m.skippedSteps > 0 && !saidSkipped {
                saidSkipped = true
                logger.warning("iteration \(m.iteration): \(m.skippedSteps) optimizer steps skipped for a non-finite gradient norm (counted as skippedSteps in the metrics)")
            }
            progress.update(step: m.iteration + 1, text: Self.progressText(m))
        }
        progress.finish()
        if !policySaved { try savePolicy() }
        logger.info("metrics in \(dir.path)/metrics.jsonl, policy in \(dir.path)/policy")
    }

    /// This process's command line with --resume (and without --overwrite): what continues the run.
    static func resumeCommand() -> String {
        let args = CommandLine.arguments.dropFirst().filter { $0 != "--overwrite" }
        return (["charter"] + args + (args.contains("--resume") ? [] : ["--resume"]))
            .map { $0.contains(where: { " '\"$".contains($0) }) ? "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" : $0 }
            .joined(separator: " ")
    }

    /// A JSONL file of the run folder with lines tagged by "iteration": a resumed run keeps the
    /// lines of iterations before its checkpoint and writes the others again.
    final class RunLog {
        let handle: FileHandle

        init(_ url: URL, keepBefore iteration: Int) throws {
            let kept = ((try? String(contentsOf: url, encoding: .utf8)) ?? "").split(separator: "\n").filter { line in
                let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
                return (object?["iteration"] as? Int ?? .max) < iteration
            }
            try Data(kept.map { $0 + "\n" }.joined().utf8).write(to: url)
            handle = try FileHandle(forWritingTo: url)
            try handle.seekToEnd()
        }

        /// Keys are written in snake_case.
        func write(_ object: [String: Any]) throws {
            handle.write(try JSONSerialization.data(withJSONObject: SnakeCase.keys(object), options: [.sortedKeys]) + Data("\n".utf8))
        }

        deinit { try? handle.close() }
    }

    /// The progress bar's figures: the reward models' raw scores and the rules' reward (the combined
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
