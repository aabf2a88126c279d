import Engine
import Foundation
import Tokenizer

/// The model work of the recipe beyond rollouts, item by item: each stage runs one kind over a
/// file of items, in process or as tasks on the cluster, and its results go to the stage's output
/// file keyed by item id.
public enum StageKind: String, CaseIterable, Sendable, Codable {
    /// One answer per item: text, token ids, log-probs.
    case generate
    /// An answer, then one more answer after each step (a user turn): critique and revision.
    case revise
    /// For each option, the summed log-prob of its tokens right after the prompt: a pairwise judge.
    case options
    /// The reward models' raw scores and the rule reward of a given response.
    case score

    /// The model a kind runs with (the judge for options, the reward models for score).
    public var models: [String] {
        switch self {
        case .generate, .revise: return ["policy"]
        case .options: return ["feedback"]
        case .score: return ["reward.helpful", "reward.safety"]
        }
    }
}

/// One item of a stage. The prompt is a conversation (rendered with the chat template) or, when
/// `messages` is empty, raw text used as is.
public struct StageItem: Sendable, Equatable {
    public var id: String
    public var prompt = ""
    public var messages: [ChatMessage] = []
    /// Sampling seed (revise: the answer to step k >= 1 samples with derive(seed, k)).
    public var seed: UInt64 = 0
    /// revise: the user turns that follow each answer.
    public var steps: [String] = []
    /// options: the continuations to score after the prompt.
    public var options: [String] = []
    /// score: the answer to score.
    public var response = ""

    public init(id: String) { self.id = id }
}

/// What a stage computed for one item; the fields its kind fills, or `error`.
public struct StageItemResult: Sendable, Equatable {
    public var id: String
    /// generate: the answer; revise: the answer to each turn, the initial answer first.
    public var texts: [String] = []
    /// generate: the answer's tokens (a stop token, if generated, last) and their log-probs.
    public var tokens: [Int32] = []
    public var logprobs: [Float] = []
    /// Per text: cut off at max_new_tokens or the context.
    public var truncated: [Bool] = []
    /// Per text: the tokens generated for it, a stop token included.
    public var textTokens: [Int] = []
    /// options: per option, the sum of its tokens' log-probs (temperature 1), and its token count.
    public var optionLogprobs: [Float] = []
    public var optionTokens: [Int] = []
    /// score: raw reward-model outputs (nil without that model) and the rules' sum.
    public var scores: RawScores?
    /// Why the item could not be done; such an item is finished too (it would fail again).
    public var error: String?

    public init(id: String) { self.id = id }

    /// The fields this result adds to its item's line in the stage output.
    public func fields(_ kind: StageKind) -> [String: Any] {
        var f: [String: Any] = ["id": id]
        if let error { f["error"] = error; return f }
        switch kind {
        case .generate:
            f["text"] = texts.first ?? ""
            f["tokens"] = tokens.map(Int.init)
            f["logprobs"] = logprobs
            f["truncated"] = truncated.first ?? false
            f["text_tokens"] = textTokens.first ?? 0
        case .revise:
            f["answers"] = texts
            f["truncated"] = truncated
            f["text_tokens"] = textTokens
        case .options:
            f["option_logprobs"] = optionLogprobs
            f["option_tokens"] = optionTokens
        case .score:
            if let h = scores?.helpfulness { f["helpfulness_score"] = h }
            if let s = scores?.safety { f["safety_score"] = s }
            if let j = scores?.judgeRating { f["judge_rating"] = j }
            f["rule_reward"] = Float(scores?.rules ?? 0)
        }
        return f
    }
}

/// A stage's input file: JSONL, one item per line. Every line has `prompt` (a string: a user turn
/// with `chat`, else raw text) or `messages` (a conversation), and may have `id` (default: its line
/// number) and `seed` (default: derived from the run seed and the id). revise needs `steps`
/// (strings), options `options` (strings), score `response` (a string). Other fields are kept and
/// copied to the output line.
public enum StageInput {
    public struct Line {
        public var item: StageItem
        /// The input object, copied into the output line beside the results.
        public var object: [String: Any]

        public init(item: StageItem, object: [String: Any]) { self.item = item; self.object = object }
    }

    public static func load(_ path: String, kind: StageKind, runSeed: UInt64, chat: Bool, system: String?) throws -> [Line] {
        var lines: [Line] = [], seen: [String: Int] = [:]
        for (n, o) in try JSONLines.read(path) {
            func fail(_ s: String) -> DataError { JSONLines.error(path, n, s) }
            let id = try self.id(o, line: n, seen: &seen, fail)
            var item = StageItem(id: id)
            switch (o["prompt"], o["messages"]) {
            case (let p as String, nil) where !p.isEmpty:
                if chat {
                    item.messages = (system.map { [ChatMessage(role: "system", content: $0)] } ?? []) + [ChatMessage(role: "user", content: p)]
                } else {
                    item.prompt = p
                }
            case (nil, let m?):
                item.messages = try messages(m, fail)
            default: throw fail("needs a non-empty string \"prompt\" or a list \"messages\" (one of the two)")
            }
            switch o["seed"] {
            case nil: item.seed = SplitMix64.derive(runSeed, fnv1a(id.utf8))
            case let s as Int where s >= 0: item.seed = UInt64(s)
            case let s as UInt64: item.seed = s // above Int.max: a derived seed, written whole
            default: throw fail("\"seed\" must be a whole number, 0 or more")
            }
            switch kind {
            case .generate: break
            case .revise:
                guard let steps = o["steps"] as? [String], !steps.isEmpty, steps.allSatisfy({ !$0.isEmpty }) else {
                    throw fail("revise needs \"steps\": a list of non-empty strings (the user turns after each answer)")
                }
                guard !item.messages.isEmpty else { throw fail("revise needs a conversation: give \"messages\", or set data.chat") }
                item.steps = steps
            case .options:
                guard let options = o["options"] as? [String], !options.isEmpty, options.allSatisfy({ !$0.isEmpty }) else {
                    throw fail("options needs \"options\": a list of non-empty strings")
                }
                item.options = options
            case .score:
                guard let r = o["response"] as? String else { throw fail("score needs a string \"response\"") }
                item.response = r
            }
            lines.append(Line(item: item, object: o))
        }
        if lines.isEmpty { throw DataError("\(path): no items") }
        return lines
    }

    /// A line's `id` (a non-empty string or an integer; default its line number), unique in the file.
    static func id(_ o: [String: Any], line n: Int, seen: inout [String: Int], _ fail: (String) -> DataError) throws -> String {
        let id: String
        switch o["id"] {
        case nil: id = String(n)
        case let s as String where !s.isEmpty: id = s
        case let i as Int: id = String(i)
        default: throw fail("\"id\" must be a non-empty string or an integer")
        }
        if let first = seen[id] { throw fail("id \"\(id)\" is also on line \(first)") }
        seen[id] = n
        return id
    }

    static func messages(_ value: Any, _ fail: (String) -> DataError) throws -> [ChatMessage] {
        guard let list = value as? [[String: Any]], !list.isEmpty else { throw fail("\"messages\" must be a non-empty list of {role, content}") }
        return try list.enumerated().map { i, m in
            guard let role = m["role"] as? String, ChatTemplate.roles.contains(role) else {
                throw fail("message \(i + 1): \"role\" must be system, user or assistant")
            }
            guard let content = m["content"] as? String else { throw fail("message \(i + 1): needs a string \"content\"") }
            return ChatMessage(role: role, content: content)
        }
    }

    /// FNV-1a, 64 bits: a stable number for an id (Swift's own hash changes per process).
    public static func fnv1a<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt64 {
        bytes.reduce(0xcbf2_9ce4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01b3 }
    }
}
