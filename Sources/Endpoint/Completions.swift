import Foundation

/// The OpenAI-compatible call a judge question becomes, and the reading of its answer. No
/// sockets here: EndpointJudge sends what this builds.
/// - `/v1/completions`: the prompt as text with the assistant's turn begun (`The answer is: (`),
///   one greedy token; the options' log-probs are read from that token's `top_logprobs`.
/// - `/v1/chat/completions`: the question as chat turns, a few greedy tokens (servers do not
///   continue a begun assistant turn); the log-probs are read at the first token that names an
///   option (once spaces and brackets are trimmed: `(B)` answers at its `B`).
public enum Completions {
    /// How many tokens a chat answer may take to name an option.
    public static let chatTokens = 16

    public static func chatBody(model: String, turns: [(role: String, content: String)], topLogprobs: Int) -> [String: Any] {
        ["model": model, "messages": turns.map { ["role": $0.role, "content": $0.content] }, "max_tokens": chatTokens, "temperature": 0,
         "logprobs": true, "top_logprobs": topLogprobs]
    }

    /// The request body: the judge's whole prompt as raw text (the chat template already applied,
    /// the assistant's turn begun), one greedy token, the top `topLogprobs` alternatives.
    public static func body(model: String, prompt: String, topLogprobs: Int) -> [String: Any] {
        ["model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": topLogprobs, "echo": false]
    }

    /// A rationale: the prompt as raw text, greedy, at most `maxTokens` tokens.
    public static func textBody(model: String, prompt: String, maxTokens: Int) -> [String: Any] {
        ["model": model, "prompt": prompt, "max_tokens": maxTokens, "temperature": 0, "echo": false]
    }

    /// `choices[0].text`, and whether it ended at the token limit (`finish_reason` "length").
    public static func text(_ data: Data) throws -> (text: String, truncated: Bool) {
        guard let json = try? JSONSerialization.jsonObject(with: data), let root = json as? [String: Any],
              let first = (root["choices"] as? [[String: Any]])?.first, let text = first["text"] as? String else {
            throw Malformed(description: "the answer has no choices[0].text: \(excerpt(data))")
        }
        return (text, first["finish_reason"] as? String == "length")
    }

    /// The options' log-probs and how many of them were missing from the top list: a missing
    /// option gets the floor, the smallest log-prob listed (its own is at most that).
    public struct Answer: Equatable {
        public var logprobs: [Float]
        public var missing: Int

        public init(logprobs: [Float], missing: Int) { self.logprobs = logprobs; self.missing = missing }
    }

    public struct Malformed: Error, CustomStringConvertible {
        public let description: String
    }

    /// Reads `choices[0].logprobs.top_logprobs[0]`, a map from token text to log-prob. An option
    /// matches a token whose text is the option, else one that is the option once trimmed of spaces.
    public static func answer(_ data: Data, options: [String]) throws -> Answer {
        guard let json = try? JSONSerialization.jsonObject(with: data), let root = json as? [String: Any] else {
            throw Malformed(description: "the answer is not a JSON object: \(excerpt(data))")
        }
        guard let choices = root["choices"] as? [[String: Any]], let first = choices.first,
              let logprobs = first["logprobs"] as? [String: Any], let tops = logprobs["top_logprobs"] as? [Any],
              let top = tops.first as? [String: Any], !top.isEmpty else {
            throw Malformed(description: "the answer has no choices[0].logprobs.top_logprobs[0]: \(excerpt(data))")
        }
        var listed: [String: Float] = [:]
        for (token, value) in top {
            guard let v = (value as? NSNumber)?.floatValue, v.isFinite || v == -.infinity else {
                throw Malformed(description: "top_logprobs[0][\"\(token)\"] is not a number")
            }
            listed[token] = v
        }
        return pick(listed, options: options)
    }

    /// Reads `choices[0].logprobs.content`: the first position whose token names an option gives
    /// the log-probs, from its `top_logprobs` (`[{token, logprob}]`). An answer that names no
    /// option within its tokens gives both the floor of its first position (a label of 0.5),
    /// counted as missing.
    public static func chatAnswer(_ data: Data, options: [String]) throws -> Answer {
        guard let json = try? JSONSerialization.jsonObject(with: data), let root = json as? [String: Any] else {
            throw Malformed(description: "the answer is not a JSON object: \(excerpt(data))")
        }
        guard let choices = root["choices"] as? [[String: Any]], let first = choices.first,
              let logprobs = first["logprobs"] as? [String: Any], let content = logprobs["content"] as? [[String: Any]], !content.isEmpty else {
            throw Malformed(description: "the answer has no choices[0].logprobs.content: \(excerpt(data))")
        }
        var positions: [(token: String, top: [String: Float])] = []
        for (i, position) in content.enumerated() {
            guard let token = position["token"] as? String, let list = position["top_logprobs"] as? [[String: Any]], !list.isEmpty else {
                throw Malformed(description: "logprobs.content[\(i)] has no token and top_logprobs")
            }
            var top: [String: Float] = [:]
            for entry in list {
                guard let t = entry["token"] as? String, let v = (entry["logprob"] as? NSNumber)?.floatValue else {
                    throw Malformed(description: "logprobs.content[\(i)].top_logprobs has an entry without token and logprob")
                }
                top[t] = top[t] ?? v
            }
            positions.append((token, top))
        }
        let names = Set(options.map { $0.trimmingCharacters(in: .whitespaces) })
        let trim = CharacterSet.whitespaces.union(CharacterSet(charactersIn: "()"))
        guard let at = positions.first(where: { names.contains($0.token.trimmingCharacters(in: trim)) }) else {
            let floor = positions[0].top.values.min()!
            return Answer(logprobs: options.map { _ in floor }, missing: options.count)
        }
        return pick(at.top, options: options)
    }

    /// The options' log-probs from one position's top list; the floor for those not in it.
    static func pick(_ listed: [String: Float], options: [String]) -> Answer {
        let floor = listed.values.min()!
        var missing = 0
        let values = options.map { option -> Float in
            if let v = listed[option] { return v }
            let trimmed = option.trimmingCharacters(in: .whitespaces)
            if let v = listed.first(where: { $0.key.trimmingCharacters(in: .whitespaces) == trimmed })?.value { return v }
            missing += 1
            return floor
        }
        return Answer(logprobs: values, missing: missing)
    }

    /// At most 200 characters of a body, for an error line.
    public static func excerpt(_ data: Data) -> String {
        let text = String(decoding: data.prefix(200), as: UTF8.self).replacingOccurrences(of: "\n", with: " ")
        return data.count > 200 ? text + "..." : text
    }
}
