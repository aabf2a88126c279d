import Engine
import Foundation
import Tokenizer

/// Chat-format JSONL for supervised fine-tuning: one `{"messages": [{"role", "content"}, ...]}` per
/// line. Each conversation is rendered with the chat template and tokenized as a whole (as the
/// model will see it when it generates); the loss mask covers the tokens of every assistant reply
/// and the `<|im_end|>` that closes it, so the model learns to answer and to stop. An assistant
/// message with `"weight": 0` is context only (an earlier turn of a dialogue): no loss on it.
public enum ChatData {
    public struct Example: Sendable {
        public let line: Int
        public let sequence: TrainingSequence
    }

    public struct LoadReport: Sendable {
        public var examples: [Example] = []
        /// Lines dropped because truncation to the length limit left no assistant token.
        public var truncatedAway: [Int] = []
    }

    /// Parses and tokenizes a JSONL file. A malformed line is an error naming its number.
    public static func load(_ url: URL, tokenizer: BPETokenizer, maxLength: Int) throws -> LoadReport {
        var report = LoadReport()
        for (lineNumber, object) in try JSONLines.read(url.path) {
            let (messages, trained) = try parse(object, line: lineNumber, path: url.path)
            let sequence = cut(try encode(messages, trained: trained, tokenizer: tokenizer, line: lineNumber, file: url.lastPathComponent), to: maxLength)
            if !sequence.lossMask.contains(where: { $0 != 0 }) { report.truncatedAway.append(lineNumber); continue }
            report.examples.append(Example(line: lineNumber, sequence: sequence))
        }
        if report.examples.isEmpty { throw DataError("\(url.lastPathComponent): no usable examples") }
        return report
    }

    /// The sequence without its tokens beyond `maxLength` (the end of the conversation goes).
    public static func cut(_ sequence: TrainingSequence, to maxLength: Int) -> TrainingSequence {
        guard sequence.tokens.count > maxLength else { return sequence }
        return TrainingSequence(tokens: Array(sequence.tokens.prefix(maxLength)), lossMask: Array(sequence.lossMask.prefix(maxLength)),
                                weights: sequence.weights.map { Array($0.prefix(maxLength)) })
    }

    /// The messages, and per message whether the loss covers it.
    static func parse(_ object: [String: Any], line n: Int, path: String) throws -> ([ChatMessage], [Bool]) {
        func fail(_ s: String) -> DataError { JSONLines.error(path, n, s) }
        guard let list = object["messages"] as? [Any] else { throw fail("\"messages\" is missing or not an array") }
        var messages: [ChatMessage] = [], trained: [Bool] = []
        for (i, item) in list.enumerated() {
            guard let m = item as? [String: Any] else { throw fail("message \(i) is not an object") }
            guard let role = m["role"] as? String else { throw fail("message \(i) has no string \"role\"") }
            guard let content = m["content"] as? String else { throw fail("message \(i) has no string \"content\"") }
            guard ChatTemplate.roles.contains(role) else { throw fail("message \(i) has role \(shown(role)) (system, user or assistant)") }
            if role == "system" && i != 0 { throw fail("message \(i): a system message may only come first") }
            switch m["weight"] {
            case nil: trained.append(role == "assistant")
            case let w as Int where w == 0 || w == 1: trained.append(role == "assistant" && w == 1)
            default: throw fail("message \(i): \"weight\" must be 0 or 1")
            }
            messages.append(ChatMessage(role: role, content: content))
        }
        guard trained.contains(true) else { throw fail("no assistant message to learn from") }
        return (messages, trained)
    }

    /// Tokens of the rendered conversation, with the mask set on the replies that are `trained`
    /// (default: every assistant reply).
    public static func encode(_ messages: [ChatMessage], trained: [Bool]? = nil, tokenizer: BPETokenizer, line: Int = 0, file: String = "") throws -> TrainingSequence {
        let text = try ChatTemplate.render(messages, addGenerationPrompt: false)
        // Byte spans of each assistant reply plus its closing <|im_end|>, found by rendering the prefix.
        var spans: [Range<Int>] = []
        for (i, m) in messages.enumerated() where m.role == "assistant" && trained?[i] ?? true {
            let before = try ChatTemplate.render(Array(messages[..<i]), addGenerationPrompt: false).utf8.count
            let start = before + "<|im_start|>assistant\n".utf8.count
            spans.append(start ..< start + m.content.utf8.count + "<|im_end|>".utf8.count)
        }
        let ids: [Int32]
        do { ids = try tokenizer.encode(text) } catch { throw DataError("\(file) line \(line): \(error)") }
        var mask = [Float](repeating: 0, count: ids.count)
        var offset = 0
        for (k, id) in ids.enumerated() {
            let length = try tokenizer.decodeBytes([id]).count
            let range = offset ..< offset + length
            if k > 0 && spans.contains(where: { $0.overlaps(range) }) { mask[k] = 1 }
            offset += length
        }
        return TrainingSequence(tokens: ids, lossMask: mask)
    }
}

/// A problem with training data, said in one line that names the file and line.
public struct DataError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }

    /// A YAML parser's error in one line: its position and problem, without the quoted source.
    static func yaml(_ file: String, _ error: Error) -> DataError {
        DataError("\(file): not valid YAML: \("\(error)".split(separator: "\n").prefix(2).joined(separator: " "))")
    }
}
