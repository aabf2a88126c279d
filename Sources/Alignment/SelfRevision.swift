import Engine
import Foundation
import Tokenizer

/// Supervised self-revision (SL-CAI) as a `revise` stage: the policy answers each red-team prompt,
/// then for each round critiques its last answer under a principle drawn afresh from the
/// constitution and revises it (or, `direct`, only revises). docs/constitution.md says exactly
/// which turns the model sees.
public struct RevisionSettings: Equatable, Sendable {
    public enum SFTExamples: String, Sendable, CaseIterable { case all, final }
    /// Critique/revision rounds per prompt (the paper: up to 4).
    public var revisions = 1
    /// Revise without a critique first.
    public var direct = false
    /// One SFT conversation per usable revision, or only the last usable one of each prompt.
    public var sft = SFTExamples.all
    /// Helpful prompts answered per red-team prompt, for the SFT mix.
    public var helpfulRatio = 0.5

    public init() {}
}

public struct RevisionPlan {
    public enum Part: String { case redTeam = "red-team", helpful }

    public struct Entry {
        public var part: Part
        /// The prompt as the SFT data shows it: a system turn if configured, then the user's turns.
        public var conversation: [ChatMessage]
        /// The principle (0-based) of each round.
        public var principles: [Int]
        /// What the stage computes: the conversation after the worked examples, and the rounds' requests.
        public var item: StageItem
        /// The prompt line's other fields, kept in the outputs.
        public var fields: [String: Any]
    }

    public let constitution: Constitution
    public let settings: RevisionSettings
    public private(set) var entries: [Entry] = []

    /// Helpful entries get ids "helpful:ID". Item seeds come from the run seed and the id, so an
    /// item samples the same on any worker; round k's principle from the item seed and k.
    public init(constitution: Constitution, settings: RevisionSettings, prompts: [PromptSet.Entry], helpful: [PromptSet.Entry], runSeed: UInt64) throws {
        self.constitution = constitution
        self.settings = settings
        let helpfulCount = min(helpful.count, Int((Double(prompts.count) * settings.helpfulRatio).rounded()))
        var seen = Set<String>()
        for (part, list) in [(Part.redTeam, prompts), (.helpful, Array(helpful.prefix(helpfulCount)))] {
            for p in list {
                var item = StageItem(id: part == .helpful ? "helpful:\(p.id)" : p.id)
                guard seen.insert(item.id).inserted else { throw DataError("prompt id \"\(item.id)\" is used twice") }
                item.seed = SplitMix64.derive(runSeed, StageInput.fnv1a(item.id.utf8))
                var principles: [Int] = []
                if part == .redTeam {
                    principles = (1...settings.revisions).map { Self.principle(seed: item.seed, round: $0, of: constitution.critiques.count) }
                    item.steps = principles.flatMap { p in
                        let c = constitution.critiques[p]
                        return settings.direct ? [c.revision] : [c.critique, c.revision]
                    }
                    // The worked examples come after the system turn, before the user's.
                    let system = p.messages.prefix { $0.role == "system" }
                    item.messages = Array(system) + fewShotTurns() + p.messages.dropFirst(system.count)
                } else {
                    item.messages = p.messages
                }
                entries.append(Entry(part: part, conversation: p.messages, principles: principles, item: item, fields: p.fields))
            }
        }
    }

    /// Round k's principle: drawn afresh from the item's seed, the same wherever it runs.
    public static func principle(seed: UInt64, round: Int, of count: Int) -> Int {
        Int(SplitMix64.derive(seed, 0x7072_696E_6369_706C &+ UInt64(round)) % UInt64(count))
    }

    /// The constitution's worked examples as earlier turns: prompt, answer, (critique request,
    /// critique,) revision request, revision.
    public func fewShotTurns() -> [ChatMessage] {
        constitution.critiqueExamples.flatMap { e in
            [ChatMessage(role: "user", content: e.prompt), ChatMessage(role: "assistant", content: e.answer)]
                + (settings.direct ? [] : [ChatMessage(role: "user", content: e.critiqueRequest), ChatMessage(role: "assistant", content: e.critique)])
                + [ChatMessage(role: "user", content: e.revisionRequest), ChatMessage(role: "assistant", content: e.revision)]
        }
    }

    /// The line of OUT/items.jsonl for an entry: what the revise stage runs, in docs/stages.md's item format.
    public func itemLine(_ e: Entry) -> [String: Any] {
        var o = e.fields
        o["id"] = e.item.id
        o["seed"] = e.item.seed // all 64 bits: as Int, half the seeds came out negative, which the stage refuses
        o["messages"] = e.item.messages.map { ["role": $0.role, "content": $0.content] }
        o["steps"] = e.item.steps
        o["part"] = e.part.rawValue
        if !e.principles.isEmpty { o["principles"] = e.principles.map { $0 + 1 } }
        return o
    }
}

/// A revision that cannot teach anything: cut off at the token limit, empty, or a copy of the
/// critique, of the request, or of the answer it was to revise. Such revisions are dropped from the SFT data (not retried: a retry
/// would need another seed, and the rounds after it already built on it) and counted by reason.
public enum RevisionCheck {
    public static func problem(_ revision: String, of answer: String, critique: String?, request: String, truncated: Bool) -> String? {
        if truncated { return "cut off" }
        let words = self.words(revision)
        if words.isEmpty { return "empty" }
        if let critique, repeats(words, self.words(critique)) { return "repeats the critique" }
        if repeats(words, self.words(request)) { return "repeats the request" }
        if repeats(words, self.words(answer)) { return "unchanged" }
        return nil
    }

    /// Lowercased runs of letters and digits.
    static func words(_ s: String) -> [String] {
        s.lowercased().split { !$0.isLetter && !$0.isNumber }.map(String.init)
    }

    /// At least 80% of `a`'s word pairs are in `b`: a copy of it, maybe cut or lightly edited.
    static func repeats(_ a: [String], _ b: [String]) -> Bool {
        guard a.count >= 2 else { return a == b }
        let pairs = Set(zip(b, b.dropFirst()).map { "\($0) \($1)" })
        let shared = zip(a, a.dropFirst()).filter { pairs.contains("\($0) \($1)") }.count
        return Double(shared) >= 0.8 * Double(a.count - 1)
    }
}

/// The revise stage's output turned into OUT/revisions.jsonl (per prompt: the initial answer,
/// each round's principle, critique and revision, and the final conversation) and OUT/sft.jsonl
/// (conversations for `charter sft`), both in the prompts' order whatever order results came in.
public struct RevisionOutcome {
    public private(set) var revisions: [[String: Any]] = []
    public private(set) var sft: [[String: Any]] = []
    /// prompts, helpful, rounds, kept, dropped (by reason), errors, sft_examples.
    public private(set) var counts: [String: Int] = [:]

    /// `results`: the stage's output lines by id (each with `answers` and `truncated`, or `error`).
    public init(plan: RevisionPlan, results: [String: [String: Any]]) throws {
        for e in plan.entries {
            guard let r = results[e.item.id] else { throw DataError("the revise stage has no result for \"\(e.item.id)\"") }
            var line = e.fields
            line["id"] = e.item.id
            line["part"] = e.part.rawValue
            line["prompt"] = e.conversation.map { ["role": $0.role, "content": $0.content] }
            counts[e.part == .redTeam ? "prompts" : "helpful", default: 0] += 1
            if let error = r["error"] as? String {
                line["error"] = error
                counts["errors", default: 0] += 1
                revisions.append(line)
                continue
            }
            let answers = r["answers"] as? [String] ?? [], truncated = r["truncated"] as? [Bool] ?? []
            guard answers.count == e.item.steps.count + 1, truncated.count == answers.count else {
                throw DataError("the revise stage's result for \"\(e.item.id)\" has \(answers.count) answers, not \(e.item.steps.count + 1)")
            }
            line["initial"] = answers[0]
            line["initial_truncated"] = truncated[0]
            if e.part == .helpful {
                let usable = !truncated[0] && !RevisionCheck.words(answers[0]).isEmpty
                counts[usable ? "helpful_kept" : "helpful_dropped", default: 0] += 1
                if usable { add(e, answer: answers[0], id: e.item.id, to: &line) }
                revisions.append(line)
                continue
            }
            let perRound = plan.settings.direct ? 1 : 2
            var rounds: [[String: Any]] = [], kept: [(round: Int, text: String)] = []
            for (k, p) in e.principles.enumerated() {
                let at = 1 + k * perRound + perRound - 1
                let critique = plan.settings.direct ? nil : answers[at - 1]
                var round: [String: Any] = ["principle": p + 1, "revision": answers[at], "truncated": truncated[at]]
                if let critique { round["critique"] = critique }
                counts["rounds", default: 0] += 1
                if let problem = RevisionCheck.problem(answers[at], of: answers[at - perRound], critique: critique, request: plan.constitution.critiques[p].revision, truncated: truncated[at]) {
                    round["dropped"] = problem
                    counts["dropped: \(problem)", default: 0] += 1
                } else {
                    kept.append((k + 1, answers[at]))
                    counts["kept", default: 0] += 1
                }
                rounds.append(round)
            }
            line["rounds"] = rounds
            if kept.isEmpty { counts["prompts without a usable revision", default: 0] += 1 }
            line["final"] = kept.last?.text
            for k in plan.settings.sft == .all ? kept : Array(kept.suffix(1)) {
                add(e, answer: k.text, id: "\(e.item.id)/\(k.round)", to: &line)
            }
            revisions.append(line)
        }
        counts["sft_examples"] = sft.count
    }

    /// One SFT conversation: the prompt and an answer; earlier assistant turns of a dialogue
    /// prompt carry weight 0, so the loss covers only the new answer.
    mutating func add(_ e: RevisionPlan.Entry, answer: String, id: String, to line: inout [String: Any]) {
        let messages: [[String: Any]] = e.conversation.map { m in
            m.role == "assistant" ? ["role": m.role, "content": m.content, "weight": 0] : ["role": m.role, "content": m.content]
        } + [["role": "assistant", "content": answer]]
        line["messages"] = messages
        sft.append(["id": id, "messages": messages])
    }
}
