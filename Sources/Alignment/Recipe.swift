import Foundation

/// What `charter train` runs (the run configuration's `recipe` section, docs/train.md): the stages
/// of the Constitutional AI recipe, how many rounds, and each training stage's settings.
public struct Recipe: Sendable {
    /// The stages, in the order they run. sl_cai runs once, before the rounds; the others once per round.
    public enum Stage: String, CaseIterable, Sendable {
        case slCAI = "sl_cai", pairs, label, rewardModels = "reward_models", rejection, ppo, dpo, eval
    }

    /// A supervised pass over a data set: SFT, a reward model or DPO.
    public struct Training: Sendable, Equatable {
        public var epochs = 1
        public var learningRate: Float
        public var batchSize = 8
    }

    public var stages: [Stage]
    public var rounds = 1
    public var sft = Training(learningRate: 1e-4)
    /// Prompts the policy answers twice per round for the labeler (nil: data.prompts).
    public var pairPrompts: String?
    /// Prompts per round (nil: all), a different share of the file each round while it lasts.
    public var pairsPerRound: Int?
    /// Comparison principles asked per pair (an ensemble).
    public var principles = 1
    public var rewardModels = Training(learningRate: 1e-5)
    public var rewardEvalFraction: Float = 0.1
    public var dpo = Training(learningRate: 5e-6)
    public var dpoBeta: Float = 0.1
    public var dpoLabelSmoothing: Float = 0
    /// Held-out prompts of the evaluation, which no stage trains on.
    public var evalPrompts: String?
    /// Rejection sampling in round k also weighs the answers it kept in rounds 1..k-1 (RejectionPool).
    public var poolRejection = false

    public static let keys: [String: [String]] = [
        "recipe": ["stages", "rounds", "sft", "pairs", "label", "reward_models", "rejection", "dpo", "eval"],
        "recipe.sft": ["epochs", "learning_rate", "batch_size"],
        "recipe.pairs": ["prompts", "per_round"],
        "recipe.label": ["principles"],
        "recipe.reward_models": ["epochs", "learning_rate", "batch_size", "eval_fraction"],
        "recipe.rejection": ["pool"],
        "recipe.dpo": ["epochs", "learning_rate", "batch_size", "beta", "label_smoothing"],
        "recipe.eval": ["prompts"],
    ]

    public func runs(_ stage: Stage) -> Bool { stages.contains(stage) }

    static func parse(_ s: Section) throws -> Recipe {
        try s.only(keys["recipe"]!)
        guard let names = try s.strings("stages"), !names.isEmpty else { throw s.error("stages", "is required: a list of the stages to run") }
        let all = Stage.allCases.map(\.rawValue).joined(separator: ", ")
        let stages = try names.map { n -> Stage in
            guard let stage = Stage(rawValue: n) else { throw s.error("stages", "has \"\(n)\" (known: \(all))") }
            return stage
        }
        guard stages == Stage.allCases.filter(stages.contains), Set(stages).count == stages.count else {
            throw s.error("stages", "must name each stage once, in the recipe's order: \(all)")
        }
        var r = Recipe(stages: stages)
        r.rounds = try s.int("rounds", min: 1) ?? r.rounds
        func training(_ key: String, _ t: inout Training) throws -> Section? {
            guard let t2 = try s.section(key) else { return nil }
            try t2.only(keys["recipe.\(key)"]!)
            t.epochs = try t2.int("epochs", min: 1) ?? t.epochs
            t.learningRate = try t2.float("learning_rate", .positive) ?? t.learningRate
            t.batchSize = try t2.int("batch_size", min: 1) ?? t.batchSize
            return t2
        }
        _ = try training("sft", &r.sft)
        if let rm = try training("reward_models", &r.rewardModels) {
            r.rewardEvalFraction = try rm.float("eval_fraction") ?? r.rewardEvalFraction
            if !(0..<1).contains(r.rewardEvalFraction) { throw rm.error("eval_fraction", "must be in [0, 1), found \(r.rewardEvalFraction)") }
        }
        if let dpo = try training("dpo", &r.dpo) {
            r.dpoBeta = try dpo.float("beta", .positive) ?? r.dpoBeta
            r.dpoLabelSmoothing = try dpo.float("label_smoothing") ?? r.dpoLabelSmoothing
            if !(0..<0.5).contains(r.dpoLabelSmoothing) { throw dpo.error("label_smoothing", "must be in [0, 0.5), found \(r.dpoLabelSmoothing)") }
        }
        if let pairs = try s.section("pairs") {
            try pairs.only(keys["recipe.pairs"]!)
            r.pairPrompts = try pairs.filePath("prompts")
            r.pairsPerRound = try pairs.int("per_round", min: 1)
        }
        if let label = try s.section("label") {
            try label.only(keys["recipe.label"]!)
            r.principles = try label.int("principles", min: 1) ?? r.principles
        }
        if let eval = try s.section("eval") {
            try eval.only(keys["recipe.eval"]!)
            r.evalPrompts = try eval.filePath("prompts")
        }
        if let rejection = try s.section("rejection") {
            try rejection.only(keys["recipe.rejection"]!)
            r.poolRejection = try rejection.bool("pool") ?? r.poolRejection
            if r.poolRejection && !r.runs(.rejection) { throw rejection.error("pool", "needs the rejection stage in stages") }
        }
        if r.runs(.eval) && r.evalPrompts == nil { throw s.error("eval", "needs \"prompts\": held-out prompts no stage trains on") }
        for (stage, needs) in [(Stage.label, Stage.pairs), (.rewardModels, .label), (.dpo, .label)] where r.runs(stage) && !r.runs(needs) {
            throw s.error("stages", "has \(stage.rawValue) without \(needs.rawValue), which makes its input")
        }
        if (r.runs(.rejection) || r.runs(.ppo)) && r.runs(.dpo) {
            throw s.error("stages", "has dpo with \(r.runs(.ppo) ? "ppo" : "rejection"): DPO replaces reward models + RL; choose one")
        }
        return r
    }
}

/// How often one policy's answers beat another's under a judge: per prompt a win (the judge's
/// probability that it is better, both orders averaged, above 0.5), a tie (exactly 0.5) or a loss.
public struct WinRate: Sendable, Equatable {
    /// Wins plus half the ties, over the prompts.
    public var rate: Double
    /// The 95% interval of the rate: the normal approximation over prompts, clamped to [0, 1].
    public var low: Double
    public var high: Double
    /// The mean probability that the policy's answer is better.
    public var meanProbability: Double
    public var prompts: Int

    public init(probabilities p: [Double]) {
        let scores = p.map { $0 > 0.5 ? 1.0 : $0 < 0.5 ? 0.0 : 0.5 }
        let n = Double(scores.count)
        let rate = scores.reduce(0, +) / max(n, 1)
        prompts = scores.count
        self.rate = rate
        meanProbability = p.reduce(0, +) / max(n, 1)
        let variance = scores.count > 1 ? scores.reduce(0) { $0 + ($1 - rate) * ($1 - rate) } / (n - 1) : 0
        let half = 1.96 * (variance / max(n, 1)).squareRoot()
        low = max(0, rate - half)
        high = min(1, rate + half)
    }

    public var dictionary: [String: Any] {
        ["win_rate": rate, "low": low, "high": high, "mean_p_better": meanProbability, "prompts": prompts]
    }
}

/// A response that declines: the share of these is watched for evasiveness, which the CAI paper
/// warns harmlessness training can bring.
public enum Refusal {
    static let openings = ["i can't", "i cannot", "i can not", "i won't", "i will not", "i'm sorry", "i am sorry", "i'm not able",
                           "i am not able", "i'm unable", "i am unable", "sorry, but", "as an ai"]

    public static func isRefusal(_ text: String) -> Bool {
        let start = text.lowercased().replacingOccurrences(of: "\u{2019}", with: "'").trimmingCharacters(in: .whitespacesAndNewlines).prefix(80)
        return openings.contains { start.contains($0) }
    }
}
