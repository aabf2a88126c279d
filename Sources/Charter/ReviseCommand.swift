import Alignment
import ArgumentParser
import Formats
import Foundation
import Logging

extension RevisionSettings.SFTExamples: ExpressibleByArgument {}

/// Supervised self-revision (SL-CAI): answer red-team prompts, critique and revise under the
/// constitution's principles, and write the revisions as SFT data (docs/constitution.md). The model
/// work is a `revise` stage, so it runs in this process or on workers like any stage.
struct ReviseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revise", abstract: "Critique and revise answers under a constitution; write SFT data (docs/constitution.md).")

    @Option(help: "A run configuration (YAML) with a revise section; the options below override it.") var config: String?
    @Option(help: "Red-team prompts (JSONL: Charter's, TRL's conversational or Anthropic HH dialogues).") var prompts: String?
    @Option(help: "The constitution (YAML, or a published JSON layout); default constitutions/default.yaml.") var constitution: String?
    @Option(help: "Helpful prompts whose answers are mixed into sft.jsonl.") var helpful: String?
    @Option(help: "Helpful prompts answered per red-team prompt (default 0.5).") var helpfulRatio: Double?
    @Option(help: "Output folder: items.jsonl, revise.jsonl (the stage), revisions.jsonl, sft.jsonl, summary.json.") var out: String
    @Option(help: "Critique/revision rounds per prompt (default 1).") var revisions: Int?
    @Flag(help: "Revise without a critique first.") var direct = false
    @Option(help: "SFT conversations: all (one per usable revision, the default) or final (each prompt's last usable one).") var sft: RevisionSettings.SFTExamples?
    @Option(help: "The policy: a GGUF file, a Hugging Face folder or a tiny:... spec (default: the configuration's).") var model: String?
    @Option(help: "Sampling temperature (default: the configuration's rollout.temperature, 1).") var temperature: Float?
    @Option(help: "Token limit of each answer, critique and revision (default: rollout.max_new_tokens).") var maxNewTokens: Int?
    @Option(help: "Seed of the principles drawn and of every sample (default: run.seed).") var seed: Int?
    @OptionGroup var placement: StagePlacement

    func validate() throws {
        if let n = revisions, n < 1 { throw ValidationError("--revisions must be at least 1") }
        if let r = helpfulRatio, !(r >= 0) { throw ValidationError("--helpful-ratio must be 0 or more") }
        if let t = temperature, !(t >= 0) { throw ValidationError("--temperature must be 0 or more") }
        if let n = maxNewTokens, n < 1 { throw ValidationError("--max-new-tokens must be at least 1") }
        if let s = seed, s < 0 { throw ValidationError("--seed must be 0 or more") }
    }

    /// The configuration file's settings with the command line's on top.
    func settings() throws -> RLConfig {
        var c = try config.map { try RLConfig.load($0, forRun: false) } ?? RLConfig()
        if let model { c.policy = model }
        if let temperature { c.rollout.temperature = temperature }
        if let maxNewTokens { c.rollout.maxNewTokens = maxNewTokens }
        if let seed { c.seed = UInt64(seed) }
        c.revisePrompts = prompts ?? c.revisePrompts
        c.reviseHelpful = helpful ?? c.reviseHelpful
        c.constitution = constitution ?? c.constitution ?? "constitutions/default.yaml"
        if let revisions { c.revision.revisions = revisions }
        if direct { c.revision.direct = true }
        if let sft { c.revision.sft = sft }
        if let helpfulRatio { c.revision.helpfulRatio = helpfulRatio }
        guard c.chat else { throw CLIError("revise needs the chat template: the critique and revision requests are user turns (remove data.chat: false)") }
        return c
    }

    func run() throws {
        placement.logging.bootstrap()
        let c = try settings()
        guard let promptsPath = c.revisePrompts else { throw CLIError("revise needs red-team prompts: --prompts P.jsonl, or revise.prompts in --config") }
        let constitution = try Constitution.load(c.constitution!)
        let plan = try RevisionPlan(constitution: constitution, settings: c.revision, prompts: try PromptSet.load(promptsPath, system: c.system),
                                    helpful: try c.reviseHelpful.map { try PromptSet.load($0, system: c.system) } ?? [], runSeed: c.seed)
        try ModelLoader.checkExists(c.policy)
        let start = try placement.start()
        try start.claim(out)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        // The items are derived from the prompts, constitution and settings: written anew each time,
        // so the stage record's digest tells whether a resumed run is the same one.
        let itemsPath = "\(out)/items.jsonl"
        let itemLines = plan.entries.map(plan.itemLine)
        try writeJSONL(itemLines, to: itemsPath)
        let stageLines = zip(plan.entries, itemLines).map { StageInput.Line(item: $0.item, object: $1) }
        let logger = Logger(label: "revise")
        logger.info("\(plan.entries.filter { $0.part == .redTeam }.count) prompts x \(c.revision.revisions) rounds\(c.revision.direct ? " (direct)" : ""), \(plan.entries.filter { $0.part == .helpful }.count) helpful prompts, constitution \(constitution.name) v\(constitution.version)")
        let runner = StageRunner(kind: .revise, name: "revise", config: c, configText: StageRunner.workerConfig(c), out: out, placement: placement)
        try runner.run(stageLines, itemsFile: itemsPath, start: start)

        let results = Dictionary(try JSONLines.read("\(out)/revise.jsonl").map { ($0.object["id"] as? String ?? "", $0.object) }) { a, _ in a }
        let outcome = try RevisionOutcome(plan: plan, results: results)
        try writeJSONL(outcome.revisions, to: "\(out)/revisions.jsonl")
        try writeJSONL(outcome.sft, to: "\(out)/sft.jsonl")
        try JSONSerialization.data(withJSONObject: outcome.counts, options: [.sortedKeys, .prettyPrinted]).write(to: URL(fileURLWithPath: "\(out)/summary.json"))
        let n = outcome.counts
        let dropped = n.filter { $0.key.hasPrefix("dropped: ") }.sorted { $0.key < $1.key }.map { "\($0.key.dropFirst(9)) \($0.value)" }
        logger.info("\(n["kept", default: 0]) of \(n["rounds", default: 0]) revisions kept\(dropped.isEmpty ? "" : " (dropped: \(dropped.joined(separator: ", ")))"), \(n["errors", default: 0]) errors; \(outcome.sft.count) SFT conversations (\(n["helpful_kept", default: 0]) helpful) in \(out)/sft.jsonl")
    }
}
