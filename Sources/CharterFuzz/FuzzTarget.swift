import Alignment
import Engine
import Formats
import Foundation
import Tokenizer
import Wire

/// What each fuzz target feeds its input to: the parsers of everything Charter reads from outside
/// (model files, configurations, data files, the wire). An error thrown is the right answer to a bad
/// input; only a crash, a hang or a runaway allocation is a finding.
enum FuzzTarget: String, CaseIterable {
    case gguf, safetensors, hfConfig = "hf-config", tokenizerJSON = "tokenizer-json", config, jsonl, wire

    /// The target named by CHARTER_FUZZ_TARGET.
    static let selected: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["CHARTER_FUZZ_TARGET"] ?? ""
        guard let t = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(Data("set CHARTER_FUZZ_TARGET to one of \(allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
            exit(2)
        }
        return t
    }()

    /// A folder of this process for inputs the readers take as files.
    static let scratch: URL = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("charter-fuzz-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    /// SmolLM2's tokenizer, for the data files (loaded once).
    static let tokenizer: BPETokenizer = {
        do { return try GGUFModel.tokenizer(of: GGUFFile(url: URL(fileURLWithPath: DefaultModel.locate(DefaultModel.path)))) } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            exit(2)
        }
    }()

    func run(_ data: Data) {
        switch self {
        case .gguf:
            if let model = try? GGUFModel.load(Self.file("model.gguf", data)) { _ = try? model.tokenizer.encode("fuzz <|im_end|> 12") }
        case .safetensors:
            if let file = try? SafetensorsFile(data: data) { for name in file.tensors.keys { _ = file.floats(name) } }
        case .hfConfig:
            _ = Self.file("config.json", data)
            _ = try? HFModel.config(at: Self.scratch)
        case .tokenizerJSON:
            _ = Self.file("tokenizer.json", data)
            if let t = try? HFTokenizer.load(Self.scratch) { _ = try? t.encode("fuzz <|im_end|> 12") }
        case .config:
            let text = String(decoding: data, as: UTF8.self)
            _ = try? RLConfig.parse(text, name: "fuzz.yaml", forRun: false)
            _ = try? Constitution.parse(text, file: "fuzz.yaml")
        case .jsonl:
            let url = Self.file("data.jsonl", data)
            _ = try? PromptData.load(url.path, tokenizer: Self.tokenizer, chat: true, system: nil, maxTokens: 512)
            _ = try? ChatData.load(url, tokenizer: Self.tokenizer, maxLength: 512)
            for kind in StageKind.allCases { _ = try? StageInput.load(url.path, kind: kind, runSeed: 1, chat: true, system: nil) }
        case .wire:
            _ = try? Wire.decode([data])
            if data.count > 1 { _ = try? Wire.decode([data.prefix(1), data.dropFirst()]) }
        }
    }

    static func file(_ name: String, _ data: Data) -> URL {
        let url = scratch.appendingPathComponent(name)
        try? data.write(to: url)
        return url
    }
}
