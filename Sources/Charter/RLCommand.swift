import Alignment
import ArgumentParser
import Endpoint
import Engine
import Formats
import Foundation
import Logging
import Tokenizer

struct RLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rl", abstract: "Iterations of generate -> score -> PPO or rejection sampling, in this process.")

    @Option(help: "The run configuration (YAML: run, model, data, reward, algorithm, rollout).") var config: String
    @Flag(help: "Continue from the run folder's last iteration checkpoint, if there is one.") var resume = false
    @Flag(help: "Empty a run folder that already holds a run, and start again.") var overwrite = false
    @OptionGroup var logging: LogOptions

    func run() throws {
        logging.bootstrap()
        try Self.execute(config: config, start: try RunStart(resume: resume, overwrite: overwrite), logger: Logger(label: "rl")) { c, _, tok, _, _ in InProcessRollouts(settings: c.rolloutSettings(tokenizer: tok), runSeed: c.seed) }
    }

    /// The run of a configuration with a given rollout source: in this process (`rl`) or from
    /// workers (`coordinator`, `local`), with a progress bar and the note Ctrl-C leaves.
    static func execute(config: String, start: RunStart, logger: Logger, extra: ((IterationMetrics) -> [String: Any])? = nil,
                        source: RLDriver.Source) throws {
        let driver = try RLDriver(configPath: config, start: start, logger: logger, scorer: scorer, source: source)
        driver.extra = extra
        ClusterRun.stopChildrenOnSignals()
        ClusterRun.onInterrupt(say: driver.config.checkpointEvery > 0
            ? "interrupted; continue from the last checkpoint (\(driver.checkpointFolder.path)) with: \(Self.resumeCommand())"
            : "interrupted; this run writes no checkpoints (run.checkpoint_every: 0), so it cannot be continued")
        try driver.execute(progress: ProgressBar(logger: logger))
    }

    /// The run's reward, the endpoint judge included (RLDriver.ScorerMaker).
    static func scorer(_ c: RLConfig, _ tok: BPETokenizer, _ base: ModelWeights, rates: Bool, judgeCache: String) throws -> RewardScorer {
        try c.makeScorer(tokenizer: tok, base: base, rates: rates, judgeCache: judgeCache)
    }

    /// This process's command line with --resume (and without --overwrite): what continues the run.
    static func resumeCommand() -> String {
        let args = CommandLine.arguments.dropFirst().filter { $0 != "--overwrite" }
        return (["charter"] + args + (args.contains("--resume") ? [] : ["--resume"]))
            .map { $0.contains(where: { " '\"$".contains($0) }) ? "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" : $0 }
            .joined(separator: " ")
    }
}
