import Alignment
import ArgumentParser
import Foundation

/// The Constitutional AI recipe in rounds, from a constitution to an aligned policy (docs/train.md):
/// the configuration's `recipe` names the stages; each writes RUN/round-K/STAGE/ and a done marker,
/// so `--resume` continues at the first unfinished stage, and inside it where that stage resumes.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Run the recipe: self-revision, AI labels, reward models, RL or DPO, evaluation, in rounds (docs/train.md).")

    @Option(help: "The run configuration (YAML) with a recipe section.") var config: String
    @OptionGroup var placement: StagePlacement

    func run() throws {
        placement.logging.bootstrap()
        let c = try RLConfig.load(config, forRun: false)
        let train = try TrainRun(configPath: config, config: c, placement: placement)
        try train.execute(start: try placement.start())
    }
}
