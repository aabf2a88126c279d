import ArgumentParser
import Formats
import Foundation

/// `--model`, shared by every command that loads a model.
struct ModelOptions: ParsableArguments {
    static let defaultPath = DefaultModel.path

    @Option(name: .long, help: "A GGUF file, a Hugging Face model folder, or a tiny:... spec (the default comes from `charter model fetch`).")
    var model: String = ModelOptions.defaultPath

    func load() throws -> LoadedModel {
        let model = try DefaultModel.locate(model)
        guard FileManager.default.fileExists(atPath: model) || TinyModel.isSpec(model) else { throw CLIError("model file \(model) not found") }
        return try ModelLoader.load(model)
    }
}

/// An error for the command line: printed as one line.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
