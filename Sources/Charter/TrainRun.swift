import Alignment
import ArgumentParser
import Cluster
import Engine
import Foundation
import Logging
import Telemetry
import Tokenizer

/// One `charter train` run: its stages in order, each in RUN/round-K/STAGE/ (sl_cai in round 0,
/// the others in rounds 1...N), each finished one marked by done.json. The stages are Charter's own
/// commands (revise, label, rm train, sft, dpo) and drivers (stages, RL), run in this process with
/// paths the run chooses, so a stage here behaves, resumes and fails as that command does.
struct TrainRun {
    struct Step { var round: Int; var stage: Recipe.Stage }

    let configPath: String
    let config: RLConfig
    let recipe: Recipe
    let folder: String
    let placement: StagePlacement
    let constitution: String
    /// The comparison tags the constitution has, of helpful and harmless: a label set and a reward model each.
    let groups: [String]
    let logger = Logger(label: "train")

    init(configPath: String, config c: RLConfig, placement: StagePlacement) throws {
        let name = (configPath as NSString).lastPathComponent
        guard let recipe = c.recipe else { throw CLIError("\(name): no \"recipe\" section; it names the stages charter train runs (docs/train.md)") }
        guard c.chat else { throw CLIError("\(name): charter train needs the chat template (remove data.chat: false): revisions and labels are chat turns") }
        constitution = c.constitution ?? "constitutions/default.yaml"
        let comparisons = try Constitution.load(constitution).comparisons
        groups = ["helpful", "harmless"].filter { tag in comparisons.contains { $0.tags.contains(tag) } }
        if recipe.runs(.label) && groups.isEmpty {
            throw CLIError("\(constitution): no comparison is tagged helpful or harmless, so the labeler has no questions to ask")
        }
        if recipe.runs(.slCAI) && c.revisePrompts == nil { throw CLIError("\(name): sl_cai needs red-team prompts in revise.prompts") }
        let rl = recipe.stages.filter { $0 == .rejection || $0 == .ppo }
        if !rl.isEmpty || (recipe.runs(.pairs) && recipe.pairPrompts == nil), c.prompts.isEmpty {
            throw CLIError("\(name): \(rl.first?.rawValue ?? "pairs") needs prompts in data.prompts")
        }
        let hasReward = !c.rules.isEmpty || c.helpfulnessModel != nil || c.safetyModel != nil || c.judgePrinciple != nil
        if let stage = rl.first, !recipe.runs(.rewardModels) && !hasReward {
            throw CLIError("\(name): \(stage.rawValue) needs a reward: the reward_models stage, or reward models, a judge or rules in section \"reward\"")
        }
        if recipe.runs(.ppo) && (c.rollout.topK > 0 || c.rollout.topP < 1 || c.rollout.temperature == 0) {
            throw CLIError("\(name): ppo samples from the full distribution: rollout.temperature above 0, no top_k or top_p")
        }
        self.configPath = URL(fileURLWithPath: configPath).standardized.path
        config = c; self.recipe = recipe; folder = c.runDir; self.placement = placement
    }

    var steps: [Step] {
        (recipe.runs(.slCAI) ? [Step(round: 0, stage: .slCAI)] : [])
            + (1...recipe.rounds).flatMap { k in recipe.stages.filter { $0 != .slCAI }.map { Step(round: k, stage: $0) } }
    }

    func path(_ step: Step) -> String { "\(folder)/round-\(step.round)/\(step.stage.rawValue)" }

    /// The policy a finished stage trained (nil: the stage leaves the policy as it was).
    func trainedPolicy(_ step: Step) -> String? {
        let out = "\(path(step))/policy"
        return [.slCAI, .rejection, .ppo, .dpo].contains(step.stage) && FileManager.default.fileExists(atPath: out) ? out : nil
    }

    func execute(start: RunStart) throws {
        try start.claim(folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // A resumed run must be the same run: the configuration is kept and compared.
        let text = try String(contentsOfFile: configPath, encoding: .utf8)
        let kept = "\(folder)/config.yaml"
        if let old = try? String(contentsOfFile: kept, encoding: .utf8), old != text {
            throw CLIError("\(kept) differs from \(configPath): a resumed run continues under the configuration it started with; use another run.dir or --overwrite")
        }
        try Data(text.utf8).write(to: URL(fileURLWithPath: kept))
        var policy = config.policy, roundStart = policy, round = 0
        logger.info("\(steps.count) stages (\(recipe.stages.map(\.rawValue).joined(separator: ", ")); \(recipe.rounds) round\(recipe.rounds == 1 ? "" : "s")) in \(folder)")
        for step in steps {
            if step.round != round { round = step.round; roundStart = policy }
            let marker = "\(path(step))/done.json"
            if FileManager.default.fileExists(atPath: marker) {
                logger.info("round \(step.round) \(step.stage.rawValue): done before")
                policy = trainedPolicy(step) ?? policy
                continue
            }
            logger.info("round \(step.round) \(step.stage.rawValue): starting, policy \(policy)")
            let began = Date()
            try FileManager.default.createDirectory(atPath: path(step), withIntermediateDirectories: true)
            var notes: [String: Any] = [:]
            switch step.stage {
            case .slCAI: notes = try slCAI(step, policy: policy)
            case .pairs: notes = try pairs(step, policy: policy)
            case .label: try label(step)
            case .rewardModels: try rewardModels(step, policy: policy)
            case .rejection, .ppo: try reinforce(step, policy: policy, roundStart: roundStart)
            case .dpo: notes = try dpo(step, policy: policy)
            case .eval: notes = try TrainEval(run: self, step: step).run(policy: policy, roundStart: roundStart)
            }
            let seconds = Date().timeIntervalSince(began)
            let line = notes.merging(["round": step.round, "stage": step.stage.rawValue, "seconds": seconds]) { _, new in new }
            try Data(JSONLine.encode(line) + [10]).write(to: URL(fileURLWithPath: marker), options: .atomic)
            logger.info("round \(step.round) \(step.stage.rawValue): done in \(String(format: "%.1f", seconds)) s")
            policy = trainedPolicy(step) ?? policy
        }
        // Every stage's marker in one file, for reading and for the report.
        try writeJSONL(try steps.map { s in try JSONLines.read("\(path(s))/done.json")[0].object }, to: "\(folder)/stages.jsonl")
        let final: [String: Any] = ["policy": policy, "rounds": recipe.rounds]
        try Data(JSONLine.encode(final) + [10]).write(to: URL(fileURLWithPath: "\(folder)/final.json"), options: .atomic)
        logger.info("finished: the trained policy is \(final["policy"]!) (stage times in \(folder)/stages.jsonl)")
    }

    // MARK: the stages

    /// Supervised self-revision: revise red-team answers under the constitution, then SFT on the
    /// revisions (mixed with helpful answers).
    func slCAI(_ step: Step, policy: String) throws -> [String: Any] {
        let f = path(step)
        try command(ReviseCommand.self, ["--config", configPath, "--out", "\(f)/revise", "--model", policy, "--constitution", constitution, "--resume"] + placementArgs)
        let data = "\(f)/revise/sft.jsonl"
        let examples = try JSONLines.read(data).count
        guard examples > 0 else {
            logger.warning("round 0 sl_cai: no usable revision or helpful answer (see \(f)/revise/summary.json); the policy is not fine-tuned")
            return ["sft_examples": 0, "policy_unchanged": true]
        }
        try command(SFTCommand.self, ["--model", policy, "--data", data, "--out", "\(f)/policy"] + training(recipe.sft))
        return ["sft_examples": examples]
    }

    /// Two answers per prompt from the current policy, each sampled with a seed of its own round.
    func pairs(_ step: Step, policy: String) throws -> [String: Any] {
        let f = path(step)
        let prompts = try PromptSet.load(recipe.pairPrompts ?? config.prompts, system: config.system)
        let chosen = Self.share(of: prompts.count, perRound: recipe.pairsPerRound, round: step.round, seed: config.seed).map { prompts[$0] }
        let items: [[String: Any]] = chosen.flatMap { e in
            (0..<2).map { s -> [String: Any] in
                ["id": "\(e.id)/\(s)", "messages": Self.json(e.messages),
                 "seed": Int(SplitMix64.derive(config.seed, 0x9A125, UInt64(step.round), StageInput.fnv1a(e.id.utf8), UInt64(s)) >> 1)]
            }
        }
        let answers = try generate(items, name: "generate", in: f, policy: policy)
        var lines: [[String: Any]] = [], skipped = 0
        for e in chosen {
            guard let a = answers["\(e.id)/0"]?["text"] as? String, let b = answers["\(e.id)/1"]?["text"] as? String, a != b, !a.isEmpty, !b.isEmpty else { skipped += 1; continue }
            lines.append(["id": e.id, "prompt": Self.json(e.messages), "a": a, "b": b])
        }
        guard !lines.isEmpty else { throw CLIError("round \(step.round) pairs: no prompt got two different answers; nothing to label") }
        try writeJSONL(lines, to: "\(f)/pairs.jsonl")
        logger.info("round \(step.round) pairs: \(lines.count) pairs (\(skipped) prompts without two different answers skipped)")
        return ["pairs": lines.count, "skipped": skipped]
    }

    /// AI labels, both orders, once per principle group: the two label sets the reward models need.
    func label(_ step: Step) throws {
        let pairs = "\(folder)/round-\(step.round)/pairs/pairs.jsonl"
        for group in groups {
            try labelPairs(pairs, out: "\(path(step))/\(group).jsonl", group: group)
        }
    }

    /// A reward model per label set, each started from the policy of the round.
    func rewardModels(_ step: Step, policy: String) throws {
        let f = path(step)
        for group in groups {
            let pairs = try labelled("\(folder)/round-\(step.round)/label/\(group).jsonl", to: "\(f)/\(group)-pairs.jsonl")
            let t = recipe.rewardModels
            try command(RMCommand.Train.self, ["--model", policy, "--pairs", pairs, "--out", "\(f)/\(group)", "--epochs", String(t.epochs), "--lr", String(t.learningRate),
                                               "--batch-size", String(t.batchSize), "--eval-fraction", String(recipe.rewardEvalFraction), "--seed", String(config.seed),
                                               "--resume", "--log-level", placement.logging.logLevel.rawValue])
        }
    }

    /// Rejection sampling or PPO from the current policy, scored by the round's reward models when
    /// it trained them; PPO's leash is to the policy the round started with. Rollouts come from
    /// workers unless --in-process; the learner runs here.
    func reinforce(_ step: Step, policy: String, roundStart: String) throws {
        var c = config
        c.policy = policy
        c.runDir = path(step)
        c.algorithm = step.stage.rawValue
        if c.reference == nil && roundStart != policy { c.reference = roundStart }
        let models = "\(folder)/round-\(step.round)/reward_models"
        if recipe.runs(.rewardModels) {
            c.helpfulnessModel = groups.contains("helpful") ? "\(models)/helpful" : nil
            c.safetyModel = groups.contains("harmless") ? "\(models)/harmless" : nil
        }
        if step.stage == .rejection && recipe.poolRejection {
            c.rejectionPool = (1..<step.round).map { "\(folder)/round-\($0)/rejection/kept.jsonl" }
        }
        let text = try String(contentsOfFile: configPath, encoding: .utf8) + """

            # charter train, round \(step.round), stage \(step.stage.rawValue): algorithm.name \(c.algorithm), run.dir \(c.runDir),
            # model.policy \(c.policy), model.reference \(c.reference ?? "the policy's start"),
            # reward.helpfulness_model \(c.helpfulnessModel ?? "-"), reward.safety_model \(c.safetyModel ?? "-"),
            # pooled answers from \(c.rejectionPool.isEmpty ? "-" : c.rejectionPool.joined(separator: ", "))

            """
        let log = Logger(label: step.stage.rawValue)
        if placement.inProcess {
            let driver = try RLDriver(config: c, configText: text, name: configPath, start: .resume, logger: log, scorer: RLCommand.scorer) { c, _, tok, _, _ in
                InProcessRollouts(settings: c.rolloutSettings(tokenizer: tok), runSeed: c.seed)
            }
            try driver.execute(progress: ProgressBar(logger: log))
        } else {
            try reinforceOnWorkers(c, text: text, step: step, logger: log)
        }
    }

    /// An RL stage with a coordinator's workers as its rollout source. They load the run's
    /// configuration with this stage's models, by absolute path.
    func reinforceOnWorkers(_ c: RLConfig, text: String, step: Step, logger log: Logger) throws {
        func absolute(_ path: String) -> String { FileManager.default.fileExists(atPath: path) ? URL(fileURLWithPath: path).standardized.path : path }
        let workerText = try RLConfig.rewrite(try String(contentsOfFile: configPath, encoding: .utf8), name: configPath, setting: [
            "model.policy": absolute(c.policy), "model.reference": c.reference.map(absolute),
            "reward.helpfulness_model": c.helpfulnessModel.map(absolute), "reward.safety_model": c.safetyModel.map(absolute)])
        var settings = Coordinator.Settings()
        settings.bind = placement.bind
        settings.expectedWorkers = placement.workers
        settings.mixedKernels = c.mixedKernels
        settings.promptsPerTask = placement.itemsPerTask
        var coordinator: Coordinator?, children: [Process] = [], metricsServer: MetricsServer?
        defer { ClusterRun.stop(children); metricsServer?.close() }
        ClusterRun.stopChildrenOnSignals()
        let runId = "train-\(config.seed)-\(getpid())-\(Int(Date().timeIntervalSince1970))"
        let driver = try RLDriver(config: c, configText: text, name: configPath, start: .resume, logger: log, scorer: RLCommand.scorer) { c, _, tok, prompts, lora in
            let server = try ClusterRun.rolloutCoordinator(c, tokenizer: tok, prompts: prompts, lora: lora, configText: workerText, configFolder: RLConfig.folder(of: configPath),
                                                           settings: settings, runId: runId, logger: Logger(label: "coordinator"))
            coordinator = server
            metricsServer = try placement.metrics.serve(server, logger: server.logger)
            children = try ClusterRun.startWorkers(placement.workers, connect: server.controlEndpoint, role: step.stage.rawValue, logLevel: placement.logging.logLevel)
            return server
        }
        driver.extra = { m in coordinator.map { ClusterRun.iterationDone($0, m) } ?? [:] }
        try driver.execute(progress: ProgressBar(logger: log))
        coordinator?.finish()
        ClusterRun.wait(children, seconds: 10)
    }

    /// DPO on every label set's pairs, with their soft labels.
    func dpo(_ step: Step, policy: String) throws -> [String: Any] {
        let f = path(step)
        let sets = try groups.map { try JSONLines.read(try labelled("\(folder)/round-\(step.round)/label/\($0).jsonl", to: "\(f)/\($0)-pairs.jsonl")) }
        let lines = sets.flatMap { $0.map(\.object) }
        try writeJSONL(lines, to: "\(f)/pairs.jsonl")
        try command(DPOCommand.self, ["--model", policy, "--pairs", "\(f)/pairs.jsonl", "--out", "\(f)/policy", "--beta", String(recipe.dpoBeta),
                                      "--label-smoothing", String(recipe.dpoLabelSmoothing)] + training(recipe.dpo))
        return ["pairs": lines.count]
    }

    // MARK: helpers

    /// The options every stage built on `charter stage` shares, from this command's.
    var placementArgs: [String] {
        ["--workers", String(placement.workers), "--bind", placement.bind, "--log-level", placement.logging.logLevel.rawValue]
            + (placement.metrics.metricsBind.map { ["--metrics-bind", $0] } ?? [])
            + (placement.inProcess ? ["--in-process"] : []) + (placement.itemsPerTask.map { ["--items-per-task", String($0)] } ?? [])
    }

    func training(_ t: Recipe.Training) -> [String] {
        ["--epochs", String(t.epochs), "--lr", String(t.learningRate), "--batch-size", String(t.batchSize), "--seed", String(config.seed),
         "--resume", "--log-level", placement.logging.logLevel.rawValue]
    }

    /// Runs one of Charter's commands here, as `charter NAME ARGS` would.
    func command<C: ParsableCommand>(_ type: C.Type, _ args: [String]) throws {
        logger.debug("charter \(C.configuration.commandName ?? "") \(args.joined(separator: " "))")
        var command: C
        do { command = try type.parse(args) } catch { throw CLIError("\(C.configuration.commandName ?? ""): \(type.message(for: error))") }
        try command.run()
    }

    /// Labels pairs with the run's judge under the comparisons tagged `group`, both orders.
    func labelPairs(_ pairs: String, out: String, group: String) throws {
        try command(LabelCommand.self, ["--pairs", pairs, "--out", out, "--tag", group, "--judge", config.feedback ?? config.policy, "--constitution", constitution,
                                        "--config", configPath, "--principles", String(recipe.principles), "--resume"] + placementArgs)
    }

    /// A label set without the pairs the judge could not answer: what the trainers read.
    func labelled(_ labels: String, to path: String) throws -> String {
        try writeJSONL(try JSONLines.read(labels).map(\.object).filter { $0["error"] == nil }, to: path)
        return path
    }

    /// Generates one answer per item (a `generate` stage NAME in `folder`) with `policy`: the stage's output lines by id.
    func generate(_ items: [[String: Any]], name: String, in folder: String, policy: String) throws -> [String: [String: Any]] {
        let itemsPath = "\(folder)/\(name)-items.jsonl"
        try writeJSONL(items, to: itemsPath)
        var c = config
        c.policy = policy
        let runner = StageRunner(kind: .generate, name: name, config: c, configText: StageRunner.workerConfig(c), out: folder, placement: placement)
        try runner.run(try StageInput.load(itemsPath, kind: .generate, runSeed: c.seed, chat: c.chat, system: c.system), itemsFile: itemsPath, start: .resume)
        return Dictionary(try JSONLines.read("\(folder)/\(name).jsonl").compactMap { _, o in (o["id"] as? String).map { ($0, o) } }) { a, _ in a }
    }

    /// The prompts of a round: all, or `perRound` of them, the next share of one seeded order each
    /// round (wrapping around when the file is used up).
    static func share(of count: Int, perRound: Int?, round: Int, seed: UInt64) -> [Int] {
        guard let n = perRound, n < count else { return Array(0..<count) }
        var rng = SplitMix64(seed: SplitMix64.derive(seed, 0x5A4E))
        let order = Array(0..<count).shuffled(using: &rng)
        return (0..<n).map { order[((round - 1) * n + $0) % count] }
    }

    static func json(_ messages: [ChatMessage]) -> [[String: String]] { messages.map { ["role": $0.role, "content": $0.content] } }
}
