import ArgumentParser
import Foundation
import Tokenizer

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenize", abstract: "Print the token ids of a text.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "The text to tokenize; special tokens such as <|im_start|> are recognised.") var text: String
    @Flag(help: "Treat special-token text as plain text.") var noSpecial = false
    @Flag(help: "Tokenize the chat template's rendering of --text as a user turn (default system prompt, assistant turn begun).")
    var chat = false
    @Flag(help: "One line per token: its id and the text it stands for, as a JSON string.") var pieces = false
    @Flag(help: "Print one JSON object: the text tokenized, ids, byte-level tokens and the text of each.") var json = false

    func run() throws {
        let tokenizer = try modelOptions.load().tokenizer
        let input = chat ? try ChatTemplate.render([ChatMessage(role: "user", content: text)]) : text
        let ids = try tokenizer.encode(input, parseSpecial: chat || !noSpecial)
        // What each token stands for, decoded alone (a piece of a multi-byte character shows as U+FFFD).
        let texts = try ids.map { String(decoding: try tokenizer.decodeBytes([$0]), as: UTF8.self) }
        if json {
            let object: [String: Any] = ["text": input, "ids": ids.map(Int.init), "tokens": ids.map { tokenizer.tokens[Int($0)] }, "pieces": texts]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else if pieces {
            for (id, piece) in zip(ids, texts) {
                print("\(id)\t" + String(decoding: try JSONSerialization.data(withJSONObject: piece, options: [.fragmentsAllowed]), as: UTF8.self))
            }
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}
