/// A chat message; `role` is "system", "user" or "assistant".
public struct ChatMessage: Codable, Equatable, Sendable {
    public var role: String
    public var content: String

    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// SmolLM2's ChatML template:
///     <|im_start|>{role}\n{content}<|im_end|>\n   for each message, then <|im_start|>assistant\n
/// A conversation that does not open with a system message gets SmolLM2's default one.
public enum ChatTemplate {
    public static let defaultSystemPrompt = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    public static let roles: Set<String> = ["system", "user", "assistant"]

    public static func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true,
                              defaultSystem: String = defaultSystemPrompt) throws(TokenizerError) -> String {
        var out = ""
        if messages.first?.role != "system" {
            out += "<|im_start|>system\n\(defaultSystem)<|im_end|>\n"
        }
        for m in messages {
            guard roles.contains(m.role) else {
                throw .invalidMessage("role \"\(m.role)\" is not one of system, user, assistant")
            }
            out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n"
        }
        if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        return out
    }
}
