import Foundation
import Tokenizer

/// Prompts JSONL: `{"prompt": "...", "unsafe": false}` per line (unsafe optional). With `chat`, each
/// prompt becomes a user turn of the chat template, ready for the assistant's reply.
public enum PromptData {
    public static func load(_ path: String, tokenizer: BPETokenizer, chat: Bool, system: String?, maxTokens: Int) throws -> [Prompt] {
        guard let data = FileManager.default.contents(atPath: path) else { throw DataError("\(path): cannot read") }
        var prompts: [Prompt] = []
        for (i, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            func fail(_ s: String) -> DataError { DataError("\((path as NSString).lastPathComponent) line \(i + 1): \(s)") }
            if line.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) { continue }
            guard let o = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else { throw fail("not a JSON object") }
            guard let text = o["prompt"] as? String, !text.isEmpty else { throw fail("needs a non-empty string \"prompt\"") }
            if let u = o["unsafe"], !(u is Bool) { throw fail("\"unsafe\" must be true or false") }
            let rendered = chat
                ? try ChatTemplate.render((system.map { [ChatMessage(role: "system", content: $0)] } ?? []) + [ChatMessage(role: "user", content: text)])
                : text
            let tokens: [Int32]
            do { tokens = try tokenizer.encode(rendered) } catch { throw fail("\(error)") }
            if tokens.count > maxTokens { throw fail("\(tokens.count) tokens, more than max_prompt_tokens (\(maxTokens))") }
            prompts.append(Prompt(id: prompts.count, text: text, tokens: tokens, unsafe: o["unsafe"] as? Bool ?? false))
        }
        if prompts.isEmpty { throw DataError("\(path): no prompts") }
        return prompts
    }
}
