import Alignment
import ArgumentParser
import Engine
import Formats
import Foundation

struct RMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Reward models: train on preference pairs, score responses.", subcommands: [Train.self, Score.self])

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Bradley-Terry training of a trunk + scalar head initialised from a policy.")

        @OptionGroup var modelOptions: ModelOptions
        @Option(help: "JSONL: {\"prompt\", \"chosen\", \"rejected\", \"margin\"?, \"p_chosen\"?} per line.") var pairs: String
        @Option(help: "Output folder.") var out: String
        @Option(help: "Passes over the training pairs.") var epochs = 1
        @Option(help: "Peak learning rate.") var lr: Float = 1e-5
        @Option(help: "Pairs per step.") var batchSize = 8
        @Option(help: "Longest sequence in tokens.") var maxLen = 512
        @Option(help: "Share of pairs held out for accuracy and calibration.") var evalFraction = 0.1
        @Option(help: "Seed.") var seed: UInt64 = 0

        func run() throws {
            let rm = try RewardModel.initialize(from: modelOptions.load(), seed: seed)
            let all = try PreferencePair.load(URL(fileURLWithPath: pairs), rm: rm, maxLength: maxLen)
            let (train, heldOut) = SFTRun.split(all, heldOutFraction: evalFraction, seed: seed)
            let steps = (train.count + batchSize - 1) / batchSize * epochs
            let trainer = try RewardModelTrainer(rm: rm, schedule: LRSchedule(peak: lr, warmupSteps: steps / 20, totalSteps: steps))
            print("rm: \(train.count) training and \(heldOut.count) held-out pairs, \(steps) steps")
            let progress = ProgressBar(total: steps, start: 0)
            var rng = SplitMix64(seed: seed)
            var step = 0
            for _ in 0..<epochs {
                let order = train.indices.shuffled(using: &rng)
                for b in stride(from: 0, to: order.count, by: batchSize) {
                    let loss = try trainer.step(order[b ..< min(b + batchSize, order.count)].map { train[$0] })
                    step += 1
                    progress.update(step: step, text: String(format: "loss %.4f", loss))
                }
            }
            progress.finish()
            if !heldOut.isEmpty {
                let e = try trainer.evaluate(heldOut)
                print(String(format: "rm: held-out accuracy %.3f, loss %.4f, calibration error %.3f over %d pairs", e.accuracy, e.loss, e.calibrationError, e.pairs))
            }
            try rm.save(out)
            print("rm: saved \(out)")
        }
    }

    struct Score: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Score prompt + response pairs: one JSON line with \"score\" per input line.")

        @Option(help: "A reward model folder from `charter rm train`.") var rm: String
        @Option(help: "JSONL: {\"prompt\", \"response\"} per line; other fields are kept.") var data: String
        @Option(help: "Write the scored lines here instead of standard output.") var out: String?

        func run() throws {
            guard FileManager.default.fileExists(atPath: (rm as NSString).appendingPathComponent("score_head.safetensors")) else {
                throw CLIError("\(rm) is not a reward model (no score_head.safetensors); make one with `charter rm train`")
            }
            let model = try RewardModel.load(rm)
            let lines = try JSONLines.read(data)
            let sequences = try lines.map { line, o -> [Int32] in
                guard let prompt = o["prompt"] as? String, let response = o["response"] as? String else {
                    throw JSONLines.error(data, line, "needs string fields \"prompt\" and \"response\"")
                }
                return try model.tokens(prompt: prompt, response: response)
            }
            // Each input line comes back whole, with its score beside it.
            var text = ""
            for ((_, object), score) in zip(lines, try model.scores(sequences)) {
                var scored = object
                scored["score"] = Double(score)
                text += String(decoding: try JSONSerialization.data(withJSONObject: scored, options: [.sortedKeys]), as: UTF8.self) + "\n"
            }
            if let out { try Data(text.utf8).write(to: URL(fileURLWithPath: out)) } else { print(text, terminator: "") }
        }
    }
}
