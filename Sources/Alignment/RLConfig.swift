import Engine
import Formats
import Foundation
import Tokenizer
import Yams

/// The run configuration, one YAML file for the in-process loop (`charter rl`) and, later, the
/// distributed run. Sections: run, model, data, reward, algorithm, rollout. An unknown key or a
/// value of the wrong type is an error naming the key and its line.
public struct RLConfig {
    public struct Rule { public var kind: String; public var value: String; public var weight: Float; public var caseSensitive: Bool }

    // run
    public var runDir = "runs/rl"
    /// Iterations between checkpoints in RUN/checkpoint (0: none); the last iteration always writes one.
    public var checkpointEvery = 1
    public var iterations = 10
    public var seed: UInt64 = 0
    /// Admit workers whose projection kernel differs from the coordinator's (Engine/Kernel.swift).
    public var mixedKernels = false
    // model
    public var policy = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    public var reference: String?
    /// The judge of options stages (nil: the policy's base model).
    public var feedback: String?
    public var lora: LoRAConfig?
    // data
    public var prompts = ""
    public var promptsPerIteration = 16
    public var chat = true
    public var system: String?
    public var maxPromptTokens = 256
    // reward
    public var helpfulnessModel: String?
    public var safetyModel: String?
    public var safetyThreshold: Float = 0.15
    public var logit = true
    public var whiten = true
    public var modelWeight: Float = 1
    public var missingEOSPenalty: Float = 0
    public var rules: [Rule] = []
    /// Direct RLAIF: the principle the feedback model rates each response under (nil: no judge).
    public var judgePrinciple: String?
    public var judgeWeight: Float = 1
    /// The judge behind an OpenAI-compatible `/v1/completions` endpoint instead of a local model.
    public var judgeURL: String?
    public var judgeModelName: String?
    // algorithm
    public var algorithm = "ppo"
    public var ppo = PPOSettings()
    public var beta: Float = 0.05
    public var targetKL: Float?
    public var klHorizon: Float = 10_000
    public var rejection = RejectionSettings()
    /// kept.jsonl files of earlier rejection runs whose answers are candidates again (RejectionPool);
    /// charter train sets it from recipe.rejection.pool.
    public var rejectionPool: [String] = []
    // rollout
    public var rollout = RolloutSettings()
    // revise (charter revise; its command-line options override these)
    public var revisePrompts: String?
    public var reviseHelpful: String?
    public var constitution: String?
    public var revision = RevisionSettings()
    // recipe (charter train)
    public var recipe: Recipe?

    public init() {}

    /// Every key the parser takes, by section ("" is the top level; "reward.rules" is each rule).
    /// docs/config.md documents exactly these (a test compares the two).
    public static let keys: [String: [String]] = [
        "": ["run", "model", "data", "reward", "algorithm", "rollout", "revise", "recipe"],
        "run": ["dir", "iterations", "seed", "checkpoint_every", "mixed_kernels"],
        "model": ["policy", "reference", "feedback", "lora"],
        "model.lora": ["rank", "alpha", "targets"],
        "data": ["prompts", "prompts_per_iteration", "chat", "system", "max_prompt_tokens"],
        "reward": ["helpfulness_model", "safety_model", "safety_threshold", "logit", "whiten", "model_weight", "missing_eos_penalty", "rules", "judge"],
        "reward.rules": ["type", "value", "weight", "case_sensitive"],
        "reward.judge": ["principle", "weight", "url", "model"],
        "algorithm": ["name", "ppo", "rejection"],
        "algorithm.ppo": ["epochs", "minibatch_size", "clip", "value_clip", "gamma", "lambda", "whiten_advantages", "early_stop_kl",
                          "critic", "value_coefficient", "learning_rate", "critic_learning_rate", "beta", "target_kl", "kl_horizon"],
        "algorithm.rejection": ["keep", "k", "threshold", "epochs", "batch_size", "learning_rate"],
        "rollout": ["samples_per_prompt", "max_new_tokens", "temperature", "top_k", "top_p"],
        "revise": ["prompts", "helpful", "helpful_ratio", "constitution", "revisions", "direct", "sft"],
    ].merging(Recipe.keys) { a, _ in a }

    /// `forRun`: the configuration drives a run (rl, coordinator, local), which needs prompts and a
    /// reward; a stage takes its items from its own file and may need neither.
    /// Paths in the file are read against its folder (see `folder(of:)`).
    public static func load(_ path: String, forRun: Bool = true) throws -> RLConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw DataError("\(path): cannot read") }
        return try parse(text, name: (path as NSString).lastPathComponent, forRun: forRun, folder: folder(of: path))
    }

    /// The absolute folder of a configuration file: what its relative paths mean.
    public static func folder(of path: String) -> String {
        URL(fileURLWithPath: path).absoluteURL.standardized.deletingLastPathComponent().path
    }

    /// `folder`: where relative paths point (nil: the working folder). The default run.dir and the
    /// default model are not read against it: runs/rl is under the working folder, and the default
    /// model is found where `charter model fetch` put it.
    public static func parse(_ text: String, name: String, forRun: Bool = true, folder: String? = nil) throws -> RLConfig {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw DataError.yaml(name, error) }
        var c = RLConfig()
        guard let root else { throw DataError("\(name): empty configuration") }
        let top = try Section(root, path: "", file: name, folder: folder)
        try top.only(Self.keys[""]!)
        if let run = try top.section("run") {
            try run.only(Self.keys["run"]!)
            c.checkpointEvery = try run.int("checkpoint_every", min: 0) ?? c.checkpointEvery
            c.mixedKernels = try run.bool("mixed_kernels") ?? c.mixedKernels
            c.runDir = try run.filePath("dir") ?? c.runDir
            c.iterations = try run.int("iterations", min: 1) ?? c.iterations
            c.seed = UInt64(try run.int("seed", min: 0, max: .max) ?? 0)
        }
        if let model = try top.section("model") {
            try model.only(Self.keys["model"]!)
            c.policy = try model.filePath("policy") ?? c.policy
            c.reference = try model.filePath("reference")
            c.feedback = try model.filePath("feedback")
            if let lora = try model.section("lora") {
                try lora.only(Self.keys["model.lora"]!)
                guard let rank = try lora.int("rank", min: 1) else { throw lora.error("rank", "is required") }
                let names = try lora.strings("targets") ?? LoRAConfig.Target.allCases.map(\.rawValue)
                let targets = try names.map { n -> LoRAConfig.Target in
                    guard let t = LoRAConfig.Target(rawValue: n) else { throw lora.error("targets", "has \"\(n)\" (q, k, v, o, gate, up, down)") }
                    return t
                }
                c.lora = LoRAConfig(rank: rank, alpha: try lora.float("alpha", .positive), targets: targets)
            }
        }
        let data = try top.section("data")
        if forRun && data == nil { throw DataError("\(name): section \"data\" with \"prompts\" is required") }
        if let data {
            try data.only(Self.keys["data"]!)
            guard let prompts = try data.filePath("prompts") ?? (forRun ? nil : "") else { throw data.error("prompts", "is required") }
            c.prompts = prompts
            c.promptsPerIteration = try data.int("prompts_per_iteration", min: 1) ?? c.promptsPerIteration
            c.chat = try data.bool("chat") ?? c.chat
            c.system = try data.string("system")
            c.maxPromptTokens = try data.int("max_prompt_tokens", min: 1) ?? c.maxPromptTokens
        }
        if let reward = try top.section("reward") {
            try reward.only(Self.keys["reward"]!)
            c.missingEOSPenalty = try reward.float("missing_eos_penalty", .nonNegative) ?? 0
            c.helpfulnessModel = try reward.filePath("helpfulness_model")
            c.safetyModel = try reward.filePath("safety_model")
            c.safetyThreshold = try reward.float("safety_threshold", .openUnit) ?? c.safetyThreshold
            if reward.value("safety_threshold") != nil && c.safetyModel == nil {
                throw reward.error("safety_threshold", "needs \"safety_model\" (it is the safety model's score below which safety decides)")
            }
            c.logit = try reward.bool("logit") ?? c.logit
            c.whiten = try reward.bool("whiten") ?? c.whiten
            c.modelWeight = try reward.float("model_weight") ?? c.modelWeight
            for rule in try reward.sections("rules") {
                try rule.only(Self.keys["reward.rules"]!)
                guard let kind = try rule.string("type"), ["keyword", "regex", "length", "token"].contains(kind) else {
                    throw rule.error("type", "must be one of keyword, regex, length, token")
                }
                guard let value = try rule.string("value") else { throw rule.error("value", "is required") }
                if value.isEmpty && (kind == "keyword" || kind == "regex") { throw rule.error("value", "must not be empty (it would match every response)") }
                if kind == "length" || kind == "token", Int(value) == nil { throw rule.error("value", "must be an integer for a \(kind) rule") }
                if kind == "regex" { _ = try RewardRule.regex(value) }
                c.rules.append(Rule(kind: kind, value: value, weight: try rule.float("weight") ?? 1, caseSensitive: try rule.bool("case_sensitive") ?? false))
            }
            if let judge = try reward.section("judge") {
                try judge.only(Self.keys["reward.judge"]!)
                guard let principle = try judge.string("principle"), !principle.trimmingCharacters(in: .whitespaces).isEmpty else {
                    throw judge.error("principle", "is required (the question the feedback model rates each response under)")
                }
                c.judgePrinciple = principle
                c.judgeWeight = try judge.float("weight") ?? c.judgeWeight
                c.judgeURL = try judge.string("url")
                c.judgeModelName = try judge.string("model")
                if let url = c.judgeURL, !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                    throw judge.error("url", "must be a server's address, such as http://127.0.0.1:8000, found \"\(url)\"")
                }
                if (c.judgeURL == nil) != (c.judgeModelName == nil) {
                    throw judge.error(c.judgeURL == nil ? "model" : "url", "needs \"\(c.judgeURL == nil ? "url" : "model")\" too (the server's address and its name for the judge)")
                }
            }
        }
        if forRun && c.rules.isEmpty && c.helpfulnessModel == nil && c.safetyModel == nil && c.judgePrinciple == nil {
            throw DataError("\(name): section \"reward\" needs a reward model, a judge or at least one rule")
        }
        var rejectionSection: Section?
        if let algorithm = try top.section("algorithm") {
            try algorithm.only(Self.keys["algorithm"]!)
            c.algorithm = try algorithm.string("name") ?? c.algorithm
            guard ["ppo", "rejection"].contains(c.algorithm) else { throw algorithm.error("name", "must be ppo or rejection") }
            if let p = try algorithm.section("ppo") {
                try p.only(Self.keys["algorithm.ppo"]!)
                c.ppo.epochs = try p.int("epochs", min: 1) ?? c.ppo.epochs
                c.ppo.minibatchSize = try p.int("minibatch_size", min: 1) ?? c.ppo.minibatchSize
                c.ppo.clip = try p.float("clip", .positive) ?? c.ppo.clip
                c.ppo.valueClip = try p.float("value_clip", .positive) ?? c.ppo.valueClip
                c.ppo.gamma = try p.float("gamma", .unit) ?? c.ppo.gamma
                c.ppo.lambda = try p.float("lambda", .unit) ?? c.ppo.lambda
                c.ppo.whitenAdvantages = try p.bool("whiten_advantages") ?? c.ppo.whitenAdvantages
                c.ppo.earlyStopKL = try p.float("early_stop_kl", .positive) ?? c.ppo.earlyStopKL
                if let critic = try p.string("critic") {
                    guard let k = PPOSettings.Critic(rawValue: critic) else { throw p.error("critic", "must be separate or head") }
                    c.ppo.critic = k
                }
                c.ppo.valueCoefficient = try p.float("value_coefficient", .nonNegative) ?? c.ppo.valueCoefficient
                c.ppo.learningRate = try p.float("learning_rate", .positive) ?? c.ppo.learningRate
                c.ppo.criticLearningRate = try p.float("critic_learning_rate", .positive) ?? c.ppo.criticLearningRate
                c.beta = try p.float("beta", .nonNegative) ?? c.beta
                c.targetKL = try p.float("target_kl", .positive)
                c.klHorizon = try p.float("kl_horizon", .positive) ?? c.klHorizon
            }
            rejectionSection = try algorithm.section("rejection")
            if let r = rejectionSection {
                try r.only(Self.keys["algorithm.rejection"]!)
                switch try r.string("keep") ?? "best" {
                case "best": c.rejection.keep = .best
                case "top_k":
                    guard let k = try r.int("k", min: 1) else { throw r.error("k", "is required with keep: top_k") }
                    c.rejection.keep = .topK(k)
                case "above":
                    guard let t = try r.float("threshold") else { throw r.error("threshold", "is required with keep: above") }
                    c.rejection.keep = .above(t)
                default: throw r.error("keep", "must be best, top_k or above")
                }
                c.rejection.epochs = try r.int("epochs", min: 1) ?? c.rejection.epochs
                c.rejection.batchSize = try r.int("batch_size", min: 1) ?? c.rejection.batchSize
                c.rejection.learningRate = try r.float("learning_rate", .positive) ?? c.rejection.learningRate
            }
        }
        if let r = try top.section("rollout") {
            try r.only(Self.keys["rollout"]!)
            c.rollout.samplesPerPrompt = try r.int("samples_per_prompt", min: 1) ?? c.rollout.samplesPerPrompt
            c.rollout.maxNewTokens = try r.int("max_new_tokens", min: 1) ?? c.rollout.maxNewTokens
            c.rollout.temperature = try r.float("temperature", .upTo(10)) ?? c.rollout.temperature
            c.rollout.topK = try r.int("top_k", min: 0) ?? c.rollout.topK
            c.rollout.topP = try r.float("top_p") ?? c.rollout.topP
            if !(c.rollout.topP > 0 && c.rollout.topP <= 1) { throw r.error("top_p", "must be in (0, 1], found \(c.rollout.topP)") }
            if c.rollout.temperature < 0 { throw r.error("temperature", "must be at least 0, found \(c.rollout.temperature)") }
            if forRun && c.algorithm == "ppo" {
                // PPO's ratios and KL are over the distribution sampled from; a truncated one would
                // need its own correction, so it is refused rather than silently off-policy.
                for key in ["top_k", "top_p"] where (key == "top_k" && c.rollout.topK > 0) || (key == "top_p" && c.rollout.topP < 1) {
                    throw r.error(key, "cannot be used with PPO (it samples from the full distribution at the temperature); remove it, or use algorithm rejection")
                }
                if c.rollout.temperature == 0 { throw r.error("temperature", "must be above 0 with PPO (greedy decoding has no log-probs to take ratios of)") }
            }
        }
        if case .topK(let k) = c.rejection.keep, k > c.rollout.samplesPerPrompt, let r = rejectionSection {
            throw r.error("k", "must be at most rollout.samples_per_prompt (\(c.rollout.samplesPerPrompt)), found \(k)")
        }
        if let r = try top.section("revise") {
            try r.only(Self.keys["revise"]!)
            c.revisePrompts = try r.filePath("prompts")
            c.reviseHelpful = try r.filePath("helpful")
            c.constitution = try r.filePath("constitution")
            c.revision.revisions = try r.int("revisions", min: 1) ?? c.revision.revisions
            c.revision.direct = try r.bool("direct") ?? c.revision.direct
            c.revision.helpfulRatio = Double(try r.float("helpful_ratio") ?? Float(c.revision.helpfulRatio))
            if c.revision.helpfulRatio < 0 { throw r.error("helpful_ratio", "must be 0 or more, found \(c.revision.helpfulRatio)") }
            if let sft = try r.string("sft") {
                guard let v = RevisionSettings.SFTExamples(rawValue: sft) else { throw r.error("sft", "must be all or final, found \"\(sft)\"") }
                c.revision.sft = v
            }
        }
        c.recipe = try top.section("recipe").map(Recipe.parse)
        c.ppo.temperature = c.rollout.temperature
        c.ppo.seed = c.seed
        c.rejection.seed = c.seed
        return c
    }

    /// The reward of the run: models (loaded from their folders), the judge and rules. `base`: the
    /// policy's base weights, copied for the judge when model.feedback names none (the policy's own
    /// weights change as it trains; the judge must not). `rates`: false where others rate the
    /// samples (a coordinator's workers), so the judge is not loaded; its weight still applies.
    public func makeScorer(tokenizer: BPETokenizer, base: ModelWeights, rates: Bool = true) throws -> RewardScorer {
        var models: ModelRewards? = nil
        if helpfulnessModel != nil || safetyModel != nil {
            models = ModelRewards(helpfulness: try helpfulnessModel.map(RewardModel.load), safety: try safetyModel.map(RewardModel.load))
            models!.safetyThreshold = safetyThreshold; models!.logit = logit; models!.whiten = whiten; models!.weight = modelWeight
        }
        var scorer = RewardScorer(models: models, rules: try rewardRules(), decode: { (try? tokenizer.decode($0)) ?? "" })
        scorer.missingEOSPenalty = missingEOSPenalty
        scorer.judgeWeight = judgeWeight
        if let judgePrinciple, judgeURL == nil, rates { // an endpoint judge is set by the caller (Endpoint module)
            let model = try Transformer(weights: try feedback.map { try ModelLoader.load($0).weights } ?? base.copy())
            scorer.judge = try DirectJudge(model: model, tokenizer: tokenizer, principle: judgePrinciple)
        }
        return scorer
    }

    /// Rollout settings with the tokenizer's stop tokens.
    public func rolloutSettings(tokenizer: BPETokenizer) -> RolloutSettings {
        var r = rollout
        r.stopTokens = tokenizer.endTokens
        return r
    }

    /// The rules as reward functions.
    public func rewardRules() throws -> [(rule: RewardRule, weight: Float)] {
        try rules.map { r in
            switch r.kind {
            case "keyword": return (.keyword(r.value, caseSensitive: r.caseSensitive), r.weight)
            case "regex": return (try RewardRule.regex(r.value), r.weight)
            case "length": return (.length(target: Int(r.value)!), r.weight)
            default: return (.containsToken(Int32(r.value)!), r.weight)
            }
        }
    }
}

/// A YAML mapping with typed, line-numbered access.
struct Section {
    let node: Node
    let path: String
    let file: String
    /// The folder relative paths are read against (the file's own); nil: the working folder.
    let folder: String?
    let entries: [(key: String, keyNode: Node, value: Node)]

    init(_ node: Node, path: String, file: String, folder: String? = nil) throws {
        guard let mapping = node.mapping else {
            throw DataError("\(file) line \(node.mark?.line ?? 0): \(path.isEmpty ? "the document" : "\"\(path)\"") must be a mapping")
        }
        self.node = node; self.path = path; self.file = file; self.folder = folder
        entries = mapping.map { (key: $0.key.string ?? "", keyNode: $0.key, value: $0.value) }
    }

    func full(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func error(_ key: String, _ problem: String) -> DataError {
        let line = entries.first { $0.key == key }?.keyNode.mark?.line ?? node.mark?.line ?? 0
        return DataError("\(file) line \(line): \"\(full(key))\" \(problem)")
    }

    func only(_ known: [String]) throws {
        for e in entries where !known.contains(e.key) {
            throw DataError("\(file) line \(e.keyNode.mark?.line ?? 0): unknown key \"\(full(e.key))\" (known: \(known.joined(separator: ", ")))")
        }
    }

    func value(_ key: String) -> Node? { entries.first { $0.key == key }?.value }

    func scalar(_ key: String, _ type: String) throws -> String? {
        guard let v = value(key) else { return nil }
        if case .scalar(let s) = v, !(s.style == .plain && s.string.isEmpty) { return s.string }
        throw error(key, "must be \(type)")
    }

    func string(_ key: String) throws -> String? { try scalar(key, "a string") }

    /// A file or folder (or a tiny: model spec, whose tokenizer= is a path), relative paths read
    /// against the file's folder so the configuration means the same from wherever it is used.
    func filePath(_ key: String) throws -> String? {
        guard let p = try string(key) else { return nil }
        if p.isEmpty { throw error(key, "must not be empty") }
        return TinyModel.isSpec(p) ? TinyModel.spec(p, resolvingAgainst: resolve) : resolve(p)
    }

    func resolve(_ p: String) -> String {
        let p = (p as NSString).expandingTildeInPath
        guard let folder, !p.hasPrefix("/") else { return p }
        return URL(fileURLWithPath: folder).appendingPathComponent(p).standardized.path
    }

    /// Counts stop at 2^31 - 1 unless `max` says otherwise, so that products of two of them (prompts
    /// x samples, sequences x tokens) cannot overflow.
    func int(_ key: String, min: Int, max: Int = Int(Int32.max)) throws -> Int? {
        guard let s = try scalar(key, "an integer") else { return nil }
        guard let v = Int(s) else { throw error(key, "must be an integer, found \"\(s)\"") }
        guard v >= min else { throw error(key, "must be at least \(min), found \(v)") }
        guard v <= max else { throw error(key, "must be at most \(max), found \(v)") }
        return v
    }

    func float(_ key: String) throws -> Float? {
        guard let s = try scalar(key, "a number") else { return nil }
        guard let v = Float(s), v.isFinite else { throw error(key, "must be a number, found \"\(s)\"") }
        return v
    }

    /// A number in an allowed range, which the error states.
    enum Range { case positive, nonNegative, unit, openUnit, upTo(Float) }

    func float(_ key: String, _ range: Range) throws -> Float? {
        guard let v = try float(key) else { return nil }
        let (ok, allowed): (Bool, String) = switch range {
        case .positive: (v > 0, "above 0")
        case .nonNegative: (v >= 0, "at least 0")
        case .unit: ((0...1).contains(v), "in [0, 1]")
        case .openUnit: (v > 0 && v < 1, "in (0, 1)")
        case .upTo(let top): ((0...top).contains(v), "in [0, \(top.formatted())]")
        }
        guard ok else { throw error(key, "must be \(allowed), found \(v)") }
        return v
    }

    func bool(_ key: String) throws -> Bool? {
        guard let s = try scalar(key, "true or false") else { return nil }
        switch s { case "true", "yes", "on": return true; case "false", "no", "off": return false
        default: throw error(key, "must be true or false, found \"\(s)\"") }
    }

    func strings(_ key: String) throws -> [String]? {
        guard let v = value(key) else { return nil }
        guard let seq = v.sequence else { throw error(key, "must be a list") }
        return try seq.map { item in
            guard case .scalar(let s) = item else { throw error(key, "must be a list of strings") }
            return s.string
        }
    }

    func section(_ key: String) throws -> Section? {
        guard let v = value(key) else { return nil }
        guard v.mapping != nil else { throw error(key, "must be a mapping") }
        return try Section(v, path: full(key), file: file, folder: folder)
    }

    func sections(_ key: String) throws -> [Section] {
        guard let v = value(key) else { return [] }
        guard let seq = v.sequence else { throw error(key, "must be a list") }
        return try seq.enumerated().map { try Section($1, path: "\(full(key))[\($0)]", file: file, folder: folder) }
    }
}
