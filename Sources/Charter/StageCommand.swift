import Alignment
import ArgumentParser
import Cluster
import Engine
import Formats
import Foundation

extension StageKind: ExpressibleByArgument {}

/// One stage of model work over a file of items, on local workers, on workers that connect, or in
/// this process. Results go to OUT/NAME.jsonl as they are accepted; `--resume` runs only the items
/// not in it yet.
struct StageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stage", abstract: "Run generate, revise, options or score over a JSONL of items (docs/stages.md).")

    @Argument(help: "generate, revise, options or score.") var kind: StageKind
    @Option(help: "The configuration (YAML): its model, reward, data.chat/system and rollout sections apply.") var config: String
    @Option(help: "The items (JSONL, one per line; docs/stages.md).") var items: String
    @Option(help: "Output folder: NAME.jsonl (a line per item), NAME.json (what ran), NAME.metrics.json.") var out: String
    @Option(help: "The stage's name in the output folder (default: its kind).") var name: String?
    @OptionGroup var placement: StagePlacement
    @Option(name: .customLong("model"), help: ArgumentHelp("Compute with FOLDER as model NAME (policy, feedback, reward.helpful, reward.safety) instead of the configuration's; workers receive it as that model's version 1 (repeatable).", valueName: "NAME=FOLDER"))
    var models: [String] = []

    func validate() throws {
        if let name, name.isEmpty || name.contains("/") { throw ValidationError("--name must be a plain file name") }
        let overrides = try models.map(ModelOverride.init)
        if Set(overrides.map(\.name)).count < overrides.count { throw ValidationError("--model names a model twice") }
    }

    func run() throws {
        placement.logging.bootstrap()
        let c = try RLConfig.load(config, forRun: false)
        let overrides = try models.map(ModelOverride.init)
        for o in overrides { _ = try o.configured(c) }
        if kind == .score && c.helpfulnessModel == nil && c.safetyModel == nil && c.rules.isEmpty && c.judgePrinciple == nil {
            throw CLIError("\((config as NSString).lastPathComponent): a score stage needs reward models, a judge or rules in section \"reward\"")
        }
        let lines = try StageInput.load(items, kind: kind, runSeed: c.seed, chat: c.chat, system: c.system)
        var runner = StageRunner(kind: kind, name: name ?? kind.rawValue, config: c, configText: try String(contentsOfFile: config, encoding: .utf8),
                                 out: out, placement: placement, overrides: overrides)
        runner.configFolder = RLConfig.folder(of: config)
        let start = try placement.start()
        try start.claim(out)
        try runner.run(lines, itemsFile: items, start: start)
    }
}

/// What a stage output folder ran: a resumed stage must be the same one.
struct StageRecord: Codable, Equatable {
    var kind: StageKind
    var items: String
    var itemsDigest: String
    var config: String
    /// `--model` replacements, model name -> folder.
    var models: [String: String]?

    /// FNV-1a of the items file's bytes, in hex.
    static func digest(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("\(path): cannot read") }
        return String(StageInput.fnv1a(data), radix: 16)
    }

    static func read(_ path: String) throws -> StageRecord? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do { return try JSONDecoder().decode(StageRecord.self, from: data) } catch { throw CLIError("\(path): not a stage record: \(error)") }
    }

    func write(_ path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
