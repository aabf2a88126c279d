import Foundation
import Tokenizer

/// Prompts as conversations waiting for the assistant's turn, read from JSONL in any of:
/// - Charter's prompt JSONL: `{"prompt": "text"}` (a user turn);
/// - TRL's conversational formats: `{"prompt": [{role, content}, ...]}`, or `{"messages": [...]}`
///   (cut after its last user turn);
/// - Anthropic HH dialogues: a `prompt`, `chosen` or `transcript` string of "\n\nHuman: ..." and
///   "\n\nAssistant: ..." turns, cut after its last Human turn (the dataset's answer is dropped).
/// `id` (a string or an integer) defaults to the line number; other fields are kept.
public enum PromptSet {
    public struct Entry {
        public var id: String
        public var messages: [ChatMessage]
        /// The line's other fields (category, unsafe, ...), as JSONSerialization read them.
        public var fields: [String: Any]

        public init(id: String, messages: [ChatMessage], fields: [String: Any]) { self.id = id; self.messages = messages; self.fields = fields }
    }

    static let conversationKeys: Set<String> = ["id", "prompt", "messages", "chosen", "rejected", "transcript"]

    public static func load(_ path: String, system: String?) throws -> [Entry] {
        var entries: [Entry] = [], seen: [String: Int] = [:]
        for (n, o) in try JSONLines.read(path) {
            func fail(_ s: String) -> DataError { JSONLines.error(path, n, s) }
            let id = try StageInput.id(o, line: n, seen: &seen, fail)
            var messages = try conversation(o, fail)
            if let system, messages.first?.role != "system" { messages.insert(ChatMessage(role: "system", content: system), at: 0) }
            entries.append(Entry(id: id, messages: messages, fields: o.filter { !conversationKeys.contains($0.key) }))
        }
        if entries.isEmpty { throw DataError("\(path): no prompts") }
        return entries
    }

    static func conversation(_ o: [String: Any], _ fail: (String) -> DataError) throws -> [ChatMessage] {
        if let text = (o["prompt"] ?? o["chosen"] ?? o["transcript"]) as? String {
            if text.contains("Human:") { return try dialogue(text, fail) }
            guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw fail("\"prompt\" is empty") }
            return [ChatMessage(role: "user", content: text)]
        }
        if let p = o["prompt"], !(p is [Any]) { throw fail("\"prompt\" must be a string or a list of messages") }
        guard let list = (o["prompt"] ?? o["messages"]) else {
            throw fail("needs \"prompt\" (a string or a list of messages), \"messages\", or an HH dialogue in \"chosen\" or \"transcript\"")
        }
        var messages = try StageInput.messages(list, fail)
        guard let lastUser = messages.lastIndex(where: { $0.role == "user" }) else { throw fail("the conversation has no user turn to answer") }
        messages.removeSubrange((lastUser + 1)...)
        return messages
    }

    /// "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d" -> user a, assistant b, user c.
    static func dialogue(_ text: String, _ fail: (String) -> DataError) throws -> [ChatMessage] {
        var messages: [ChatMessage] = []
        var rest = Substring("\n\n" + text.drop(while: { $0 == "\n" }))
        let markers = [("\n\nHuman:", "user"), ("\n\nAssistant:", "assistant")]
        while let (marker, role) = markers.first(where: { rest.hasPrefix($0.0) }) {
            rest = rest.dropFirst(marker.count)
            let next = markers.compactMap { rest.range(of: $0.0)?.lowerBound }.min() ?? rest.endIndex
            messages.append(ChatMessage(role: role, content: rest[..<next].trimmingCharacters(in: .whitespaces)))
            rest = rest[next...]
        }
        guard rest.isEmpty else { throw fail("an HH dialogue must be made of \"\\n\\nHuman: \" and \"\\n\\nAssistant: \" turns") }
        guard let lastUser = messages.lastIndex(where: { $0.role == "user" && !$0.content.isEmpty }) else { throw fail("the dialogue has no Human turn") }
        messages.removeSubrange((lastUser + 1)...)
        if messages.contains(where: { $0.content.isEmpty && $0.role == "user" }) { throw fail("the dialogue has an empty Human turn") }
        return messages
    }
}
