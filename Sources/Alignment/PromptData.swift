import Foundation
import Tokenizer

/// Prompts JSONL: `{"prompt": "...", "unsafe": false}` per line (unsafe optional). With `chat`, each
/// prompt becomes a user turn of the chat template, ready for the assistant's reply.
public enum PromptData {
    public static func load(_ path: String, tokenizer: BPETokenizer, chat: Bool, system: String?, maxTokens: Int) throws -> [Prompt] {
        var prompts: [Prompt] = []
        for (line, o) in try JSONLines.read(path) {
            func fail(_ s: String) -> DataError { JSONLines.error(path, line, s) }
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
