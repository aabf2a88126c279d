import Alignment
import ArgumentParser
import Engine
import Formats
import Foundation
import Tokenizer

struct RLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rl", abstract: "Iterations of generate -> score -> PPO or rejection sampling, in this process.")

    @Option(help: "The run configuration (YAML: run, model, data, reward, algorithm, rollout).") var config: String

    func run() throws {
        try Self.execute(config: config) { c, _, tok, _ in InProcessRollouts(settings: c.rolloutSettings(tokenizer: tok), runSeed: c.seed) }
    }

    /// The run of a configuration with a given rollout source: in this process (`rl`) or from
    /// workers (`coordinator`, `local`). `extra` adds fields to each metrics line.
    static func execute(config: String, extra: (() -> [String: Any])? = nil,
                        source: (RLConfig, LoadedModel, BPETokenizer, [Prompt]) throws -> RolloutSource) throws {
        let c = try RLConfig.load(config)
        let policy = try ModelLoader.load(c.policy)
        let tok = policy.tokenizer
        let prompts = try PromptData.load(c.prompts, tokenizer: tok, chat: c.chat, system: c.system, maxTokens: c.maxPromptTokens)
        let scorer = try c.makeScorer(tokenizer: tok)
        let rollout = c.rolloutSettings(tokenizer: tok)
        let lora = c.lora.map { LoRAAdapters(config: $0, model: policy.config) }
        lora?.initialize(seed: SplitMix64.derive(c.seed, 0x107A))

        let algorithm: RLAlgorithm
        if c.algorithm == "ppo" {
            let reference = try c.reference.map { try ModelLoader.load($0).weights } ?? {
                let copy = ModelWeights(config: policy.config)
                copy.storage.update(from: policy.weights.storage)
                return copy
            }()
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
                            rollouts: try source(c, policy, tok, prompts), scorer: scorer, algorithm: algorithm, seed: c.seed)

        let dir = URL(fileURLWithPath: c.runDir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: dir.appendingPathComponent("metrics.jsonl"))
        try? FileManager.default.removeItem(at: dir.appendingPathComponent("config.yaml"))
        try FileManager.default.copyItem(atPath: config, toPath: dir.appendingPathComponent("config.yaml").path)
        FileManager.default.createFile(atPath: dir.appendingPathComponent("metrics.jsonl").path, contents: nil)
        let metricsFile = try FileHandle(forWritingTo: dir.appendingPathComponent("metrics.jsonl"))
        defer { try? metricsFile.close() }
        print("rl: \(c.algorithm), \(prompts.count) prompts, \(c.iterations) iterations of \(c.promptsPerIteration) prompts x \(rollout.samplesPerPrompt) samples, \(BLAS.summary)")
        let progress = ProgressBar(total: c.iterations, start: 0)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for _ in 0..<c.iterations {
            let m = try run.runIteration()
            var line = try JSONSerialization.jsonObject(with: encoder.encode(m)) as! [String: Any]
            for (k, v) in extra?() ?? [:] { line[k] = v }
            metricsFile.write(try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]) + Data("\n".utf8))
            progress.update(step: m.iteration + 1, text: String(format: "reward %.3f  KL %.3f  gen %.1fs  update %.1fs",
                                                                  m.rewardMean, m.kl, m.generationSeconds, m.updateSeconds))
        }
        progress.finish()
        let final = ModelWeights(config: policy.config)
        final.storage.update(from: policy.weights.storage)
        lora?.merge(into: final)
        try Checkpoint.saveModel(LoadedModel(weights: final, tokenizer: tok, source: dir, chatTemplate: policy.chatTemplate),
                                 to: dir.appendingPathComponent("policy"))
        print("rl: metrics in \(dir.path)/metrics.jsonl, policy in \(dir.path)/policy")
    }
}
