import Foundation

/// Answers rejection sampling kept in earlier runs (their kept.jsonl), offered again as candidates
/// for the same prompts: Llama 2 pooled the best samples of all earlier rounds after a round
/// regressed. A pooled answer is scored with this run's reward, alongside the fresh samples, so
/// it is kept only where it still beats them.
public struct RejectionPool: Sendable {
    public struct Answer: Sendable, Equatable {
        public var response: [Int32]
        public var truncated: Bool
        /// The kept.jsonl it came from.
        public var file: String
    }

    /// By prompt tokens (the chat template applied): what a sample is trained on.
    public private(set) var answers: [[Int32]: [Answer]] = [:]
    public var count: Int { answers.values.reduce(0) { $0 + $1.count } }
    public init() {}

    /// Reads kept.jsonl files in order; an answer kept in two of them is pooled once. `vocab` and
    /// `maxNewTokens` are the run's: an answer that the run could not have generated is refused.
    public static func load(_ files: [String], vocab: Int, maxNewTokens: Int) throws -> RejectionPool {
        var pool = RejectionPool(), seen = Set<[[Int32]]>()
        for file in files {
            for (line, o) in try JSONLines.read(file) {
                func tokens(_ key: String) throws -> [Int32] {
                    let list = o[key] as? [Any] ?? []
                    let ints = list.compactMap { ($0 as? NSNumber).flatMap { Int(exactly: $0.doubleValue) } }.filter { (0..<vocab).contains($0) }
                    guard o[key] is [Any], ints.count == list.count else {
                        throw JSONLines.error(file, line, "\"\(key)\" must be a list of token ids below the vocabulary size \(vocab)")
                    }
                    return ints.map(Int32.init)
                }
                let prompt = try tokens("prompt_tokens"), response = try tokens("response_tokens")
                if prompt.isEmpty || response.isEmpty { throw JSONLines.error(file, line, "empty prompt_tokens or response_tokens") }
                if response.count > maxNewTokens {
                    throw JSONLines.error(file, line, "the response has \(response.count) tokens, more than rollout.max_new_tokens (\(maxNewTokens))")
                }
                guard seen.insert([prompt, response]).inserted else { continue }
                pool.answers[prompt, default: []].append(Answer(response: response, truncated: o["truncated"] as? Bool ?? false, file: file))
            }
        }
        return pool
    }

    /// The pooled answers of an iteration's prompts as samples, numbered after the prompt's fresh ones.
    public func candidates(for prompts: [Prompt], after fresh: [Sample]) -> [Sample] {
        let freshCount = Dictionary(grouping: fresh, by: \.promptId).mapValues(\.count)
        return prompts.flatMap { p in
            (answers[p.tokens] ?? []).enumerated().map { j, a in
                var s = Sample(promptId: p.id, index: (freshCount[p.id] ?? 0) + j, prompt: p.tokens, response: a.response, logprobs: [],
                               policyVersion: -1, seed: 0, finishReason: a.truncated ? .length : .stop)
                s.pooledFrom = a.file
                return s
            }
        }
    }
}
