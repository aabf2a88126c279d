import Alignment
import Engine
import Formats
import Foundation
import Tokenizer

/// A round's evaluation on held-out prompts: the round's policy, the starting policy and the
/// previous round's answer each prompt with the same seed; the run's judge compares the policy's
/// answer with each other's in both orders, per principle group, giving win rates with 95%
/// intervals; and each policy's answers are measured (length, refusals, cut off, reward-model
/// scores, KL to the reference). Everything goes to eval/summary.json.
struct TrainEval {
    let run: TrainRun
    let step: TrainRun.Step

    var folder: String { run.path(step) }

    func run(policy: String, roundStart: String) throws -> [String: Any] {
        let c = run.config
        let prompts = try PromptSet.load(run.recipe.evalPrompts!, system: c.system)
        let items: [[String: Any]] = prompts.map { e in
            ["id": e.id, "messages": TrainRun.json(e.messages), "seed": Int(SplitMix64.derive(c.seed, 0xE7A1, StageInput.fnv1a(e.id.utf8)) >> 1)]
        }
        // The start always; the round's start when it is another model (after sl_cai or a round before).
        let opponents = [("start", c.policy)] + (roundStart != c.policy && roundStart != policy ? [("previous", roundStart)] : [])
        var answers: [String: [String: [String: Any]]] = [:]
        for (name, model) in [("policy", policy)] + opponents {
            answers[name] = try run.generate(items, name: "answers-\(name)", in: folder, policy: model)
        }
        var winRates: [String: Any] = [:], headline: [String] = []
        for (name, _) in opponents {
            let pairsPath = "\(folder)/vs-\(name).jsonl"
            let lines: [[String: Any]] = prompts.compactMap { e in
                guard let a = answers["policy"]?[e.id]?["text"] as? String, let b = answers[name]?[e.id]?["text"] as? String else { return nil }
                return ["id": e.id, "prompt": TrainRun.json(e.messages), "a": Self.shown(a), "b": Self.shown(b)]
            }
            try writeJSONL(lines, to: pairsPath)
            var groups: [String: Any] = [:]
            for group in run.groups {
                let out = "\(folder)/vs-\(name)-\(group).jsonl"
                try run.labelPairs(pairsPath, out: out, group: group)
                let p = try JSONLines.read(out).compactMap { $0.object["p_a"] as? Double }
                let w = WinRate(probabilities: p)
                groups[group] = w.dictionary
                headline.append(String(format: "%@ vs %@ %.2f [%.2f, %.2f]", group, name, w.rate, w.low, w.high))
            }
            winRates[name] = groups
        }
        let rewardModels = try run.groups.compactMap { group -> (String, RewardModel)? in
            let folder = "\(run.folder)/round-\(step.round)/reward_models/\(group)"
            guard run.recipe.runs(.rewardModels), FileManager.default.fileExists(atPath: folder) else { return nil }
            return (group, try RewardModel.load(folder))
        }
        let reference = try klReference()
        var measures: [String: Any] = [:]
        for (name, model) in [("policy", policy)] + opponents {
            // In prompt order, so the mean scores come out the same to the last digit every run.
            let inOrder = prompts.compactMap { answers[name]?[$0.id] }
            measures[name] = try measure(inOrder, prompts: prompts, model: model, rewardModels: rewardModels, reference: reference)
        }
        let samples: [[String: Any]] = prompts.prefix(3).map { e in
            var s: [String: Any] = ["prompt": e.messages.last?.content ?? ""]
            for (name, answer) in answers { s[name] = answer[e.id]?["text"] ?? "" }
            return s
        }
        let summary: [String: Any] = ["round": step.round, "prompts": prompts.count, "win_rates": winRates, "policies": measures, "samples": samples]
        try Data(JSONLine.encode(summary) + [10]).write(to: URL(fileURLWithPath: "\(folder)/summary.json"), options: .atomic)
        run.logger.info("round \(step.round) eval on \(prompts.count) held-out prompts: \(headline.joined(separator: "; "))")
        return ["win_rates": winRates]
    }

    /// An empty answer (the stop token first) as the judge is shown it.
    static func shown(_ answer: String) -> String { answer.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? "(no answer)" : answer }

    /// A policy's answers: mean length in tokens, the shares refused and cut off, and the mean score
    /// of each reward model this round trained.
    func measure(_ answers: [[String: Any]], prompts: [PromptSet.Entry], model: String, rewardModels: [(String, RewardModel)],
                 reference: (model: Transformer, tokenizer: BPETokenizer)?) throws -> [String: Any] {
        let texts = answers.compactMap { $0["text"] as? String }
        let n = Double(max(texts.count, 1))
        var m: [String: Any] = [
            "model": model, "answers": texts.count,
            "mean_tokens": Double(answers.compactMap { $0["text_tokens"] as? Int }.reduce(0, +)) / n,
            "refusals": Double(texts.filter(Refusal.isRefusal).count) / n,
            "truncated": Double(answers.filter { $0["truncated"] as? Bool == true }.count) / n,
        ]
        let conversations = Dictionary(prompts.map { ($0.id, $0.messages) }) { a, _ in a }
        for (group, rm) in rewardModels {
            let sequences = try answers.compactMap { a -> [Int32]? in
                guard let id = a["id"] as? String, let text = a["text"] as? String, let conversation = conversations[id] else { return nil }
                return try rm.tokens(conversation: conversation, response: text)
            }
            let scores = try rm.scores(sequences)
            m["reward_\(group)"] = Double(scores.reduce(0, +)) / Double(max(scores.count, 1))
        }
        if let reference, let kl = try meanKL(answers, conversations: conversations, reference: reference) { m["kl_to_reference"] = kl }
        return m
    }

    /// The run's reference (model.reference, else the starting policy), when the answers' log-probs
    /// are of the full distribution at a temperature (no top_k or top_p), as PPO's KL needs.
    func klReference() throws -> (model: Transformer, tokenizer: BPETokenizer)? {
        let r = run.config.rollout
        guard r.temperature > 0, r.topK == 0, r.topP >= 1 else { return nil }
        let loaded = try ModelLoader.load(run.config.reference ?? run.config.policy)
        return (try Transformer(weights: loaded.weights), loaded.tokenizer)
    }

    /// KL to the reference on the held-out answers, as PPO measures it during training: per answer,
    /// the sum over its tokens of log p_policy - log p_reference at the sampled tokens (both at the
    /// sampling temperature), averaged over answers.
    func meanKL(_ answers: [[String: Any]], conversations: [String: [ChatMessage]], reference: (model: Transformer, tokenizer: BPETokenizer)) throws -> Double? {
        let samples = try answers.enumerated().compactMap { i, a -> Sample? in
            guard let id = a["id"] as? String, let conversation = conversations[id], let tokens = (a["tokens"] as? [NSNumber])?.map(\.int32Value),
                  let logprobs = (a["logprobs"] as? [NSNumber])?.map(\.floatValue), !tokens.isEmpty else { return nil }
            guard tokens.count == logprobs.count else { throw DataError("\(folder): answer \(id) has \(tokens.count) tokens but \(logprobs.count) log-probs") }
            let prompt = try reference.tokenizer.encode(try ChatTemplate.render(conversation))
            return Sample(promptId: i, index: 0, prompt: prompt, response: tokens, logprobs: logprobs, policyVersion: 0, seed: 0)
        }
        let referenceLogprobs = try ReferenceLogprobs.compute(reference.model, samples: samples, temperature: run.config.rollout.temperature)
        let kl = zip(samples, referenceLogprobs).map { s, r in zip(s.logprobs, r).reduce(0.0) { $0 + Double($1.0 - $1.1) } }
        return kl.isEmpty ? nil : kl.reduce(0, +) / Double(kl.count)
    }
}
