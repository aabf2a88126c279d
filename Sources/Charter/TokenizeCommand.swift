import ArgumentParser
import Foundation

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenize", abstract: "Print the token ids of a text.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "The text to tokenize; special tokens such as <|im_start|> are recognised.") var text: String
    @Flag(help: "Treat special-token text as plain text.") var noSpecial = false
    @Flag(help: "Print one JSON object with ids and token strings.") var json = false

    func run() throws {
        let tokenizer = try modelOptions.load().tokenizer
        let ids = try tokenizer.encode(text, parseSpecial: !noSpecial)
        if json {
            let object: [String: Any] = ["ids": ids.map(Int.init), "tokens": ids.map { tokenizer.tokens[Int($0)] }]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}
