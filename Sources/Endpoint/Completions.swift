import Foundation

/// The OpenAI-compatible `/v1/completions` call a judge question becomes, and the reading of its
/// answer: the judge's log-probs of the option tokens at the first generated position, from
/// `top_logprobs`. No sockets here: EndpointJudge sends what this builds.
public enum Completions {
    /// The request body: the judge's whole prompt as raw text (the chat template already applied,
    /// the assistant's turn begun), one greedy token, the top `topLogprobs` alternatives.
    public static func body(model: String, prompt: String, topLogprobs: Int) -> [String: Any] {
        ["model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": topLogprobs, "echo": false]
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
