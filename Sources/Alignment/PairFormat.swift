import Foundation
import Tokenizer

/// The layouts a line of preference pairs (or of responses to score) may take:
/// - Charter's own: `{"prompt": "...", "chosen": "...", "rejected": "..."}`;
/// - TRL's conversational one with an explicit prompt: `"prompt"` a list of `{role, content}`
///   messages, `"chosen"` / `"rejected"` a string or a one-message assistant list;
/// - TRL's implicit prompt: no `"prompt"`, `"chosen"` and `"rejected"` whole conversations that
///   share everything but their last (assistant) message.
public enum PairFormat {
    /// The conversation before the answer and the two answers.
    public static func pair(_ o: [String: Any], _ fail: (String) -> DataError) throws -> (prompt: [ChatMessage], chosen: String, rejected: String) {
        guard let c = o["chosen"], let r = o["rejected"] else { throw fail("needs \"chosen\" and \"rejected\"") }
        if let p = o["prompt"] {
            return (try prompt(p, fail), try answer(c, "chosen", fail), try answer(r, "rejected", fail))
        }
        guard let chosen = c as? [Any], let rejected = r as? [Any] else {
            throw fail("needs \"prompt\" (or \"chosen\" and \"rejected\" as whole conversations of {role, content} messages)")
        }
        let a = try conversation(chosen, "chosen", fail), b = try conversation(rejected, "rejected", fail)
        guard a.dropLast() == b.dropLast() else { throw fail("\"chosen\" and \"rejected\" must share every message but their last") }
        guard a.count > 1 else { throw fail("\"chosen\" needs the conversation before its answer") }
        return (Array(a.dropLast()), a.last!.content, b.last!.content)
    }

    /// The label's "p_chosen" (the probability that "chosen" is better), 1 when absent.
    public static func pChosen(_ o: [String: Any], _ fail: (String) -> DataError) throws -> Float {
        guard let given = o["p_chosen"] else { return 1 }
        guard let p = (given as? NSNumber)?.floatValue, (0...1).contains(p) else { throw fail("\"p_chosen\" must be a number in [0, 1]") }
        return p
    }

    /// A prompt: a string (one user message) or a non-empty list of messages.
    public static func prompt(_ value: Any, _ fail: (String) -> DataError) throws -> [ChatMessage] {
        if let s = value as? String { return [ChatMessage(role: "user", content: s)] }
        guard let list = value as? [Any] else { throw fail("\"prompt\" must be a string or a list of {role, content} messages") }
        let messages = try conversation(list, "prompt", fail)
        if messages.last?.role == "assistant" { throw fail("\"prompt\" must not end with an assistant message (that is the answer)") }
        return messages
    }

    /// An answer: a string or a list holding one assistant message.
    public static func answer(_ value: Any, _ key: String, _ fail: (String) -> DataError) throws -> String {
        if let s = value as? String { return s }
        guard let list = value as? [Any] else { throw fail("\"\(key)\" must be a string or a list with one assistant message") }
        let messages = try conversation(list, key, fail)
        guard messages.count == 1, messages[0].role == "assistant" else { throw fail("\"\(key)\" must hold exactly one assistant message") }
        return messages[0].content
    }

    static func conversation(_ list: [Any], _ key: String, _ fail: (String) -> DataError) throws -> [ChatMessage] {
        guard !list.isEmpty else { throw fail("\"\(key)\" is an empty list") }
        return try list.enumerated().map { i, item in
            guard let m = item as? [String: Any], let role = m["role"] as? String, ChatTemplate.roles.contains(role),
                  let content = m["content"] as? String else {
                throw fail("\"\(key)\" message \(i + 1) must be {\"role\": system|user|assistant, \"content\": string}")
            }
            return ChatMessage(role: role, content: content)
        }
    }
}
