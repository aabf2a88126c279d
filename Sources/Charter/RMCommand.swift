import Alignment
import ArgumentParser
import Engine
import Formats
import Foundation
import Logging

struct RMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Reward models: train on preference pairs, score responses.", subcommands: [Train.self, Score.self])

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Bradley-Terry training of a trunk + scalar head initialised from a policy.")

        @OptionGroup var modelOptions: ModelOptions
        @Option(help: "JSONL: {\"prompt\", \"chosen\", \"rejected\", \"margin\"?, \"p_chosen\"?} per line; prompt and answers may be chat messages (TRL's layouts).") var pairs: String
        @Option(help: "Output folder.") var out: String
        @Option(help: "Passes over the training pairs.") var epochs = 1
        @Option(help: "Peak learning rate.") var lr: Float = 1e-5
        @Option(help: "Pairs per optimizer step.") var batchSize = 8
        @Option(help: "Pairs per forward/backward pass; gradients accumulate up to --batch-size.") var microBatchSize: Int?
        @Option(help: "Longest sequence in tokens.") var maxLen = 512
        @Option(help: "Share of pairs held out for accuracy and calibration, evaluated after every epoch.") var evalFraction = 0.1
        @Option(help: "Seed.") var seed: UInt64 = 0
        @Flag(help: "Continue the run whose last epoch's checkpoint is in --out.") var resume = false
        @Flag(help: "Empty --out if it already holds a run, and start again.") var overwrite = false
        @Option(help: .hidden) var stopAfterEpochs: Int? // tests: end as if killed after this epoch's checkpoint
        @OptionGroup var loraOptions: LoRAOptions
        @OptionGroup var logging: LogOptions

        func validate() throws {
            if epochs < 1 { throw ValidationError("--epochs must be at least 1, found \(epochs)") }
            if batchSize < 1 { throw ValidationError("--batch-size must be at least 1, found \(batchSize)") }
            if let m = microBatchSize, !(1...batchSize).contains(m) { throw ValidationError("--micro-batch-size must be in 1...--batch-size, found \(m)") }
            if !(0..<1).contains(evalFraction) { throw ValidationError("--eval-fraction must be in [0, 1), found \(evalFraction)") }
        }

        /// What a resumed run must share with the run it continues.
        var settings: [String: Any] {
            var lora: Any = NSNull()
            if let c = try? loraOptions.config() {
                lora = ["rank": c.rank, "alpha": Double(c.alpha), "targets": c.targets.map(\.rawValue), "base_model": modelOptions.model]
            }
            return ["lora": lora, "epochs": epochs, "lr": Double(lr), "batch_size": batchSize, "micro_batch_size": microBatchSize ?? batchSize, "max_len": maxLen,
             "eval_fraction": evalFraction, "seed": Int(seed), "pairs": (pairs as NSString).standardizingPath]
        }

        func run() throws {
            logging.bootstrap()
            let logger = Logger(label: "rm")
            let start = try RunStart(resume: resume, overwrite: overwrite)
            try start.claim(out)
            let outURL = URL(fileURLWithPath: out)
            let resuming = start == .resume && FileManager.default.fileExists(atPath: outURL.appendingPathComponent("trainer_state.json").path)
            if resuming { try CheckpointManifest.verify(outURL) }
            // A checkpoint is itself a reward model folder: resuming loads the trunk and head from it,
            // or with LoRA the head, the adapters and (from --model) the base they adapt.
            let lora = try loraOptions.config()
            let rm = !resuming ? try RewardModel.initialize(from: modelOptions.load(), seed: seed)
                : lora == nil ? try RewardModel.load(out)
                : try { let base = try modelOptions.load(); return try RewardModel(model: base, head: try RewardModel.head(of: out, width: base.config.width)) }()
            let adapters = try lora.map { try LoRAAdapters(config: $0, model: rm.model.config) }
            adapters?.initialize(seed: SplitMix64.derive(seed, 0x107A))
            let all = try PreferencePair.load(URL(fileURLWithPath: pairs), rm: rm, maxLength: maxLen)
            let (train, heldOut) = SFTRun.split(all, heldOutFraction: evalFraction, seed: seed)
            let stepsPerEpoch = (train.count + batchSize - 1) / batchSize, steps = stepsPerEpoch * epochs
            let trainer = try RewardModelTrainer(rm: rm, lora: adapters, schedule: LRSchedule(peak: lr, warmupSteps: steps / 20, totalSteps: steps))
            var epochsDone = 0, metrics: [String] = []
            if resuming {
                let extra = try Checkpoint.restoreTraining(trainer.trunk, from: outURL)
                try trainer.restoreHeadOptimizer(from: outURL.appendingPathComponent("head_optimizer.safetensors"))
                // Compared as JSON reads them back, so a number's type on the way does not matter.
                let current = try JSONSerialization.jsonObject(with: JSONSerialization.data(withJSONObject: settings)) as? NSDictionary
                guard let saved = extra["settings"] as? NSDictionary, saved == current else {
                    throw CLIError("--resume: the options differ from the run in \(out); use the same --pairs, --epochs, --lr, --batch-size, --micro-batch-size, --max-len, --eval-fraction, --seed and LoRA options (with LoRA, the same --model)")
                }
                epochsDone = extra["epochs_done"] as? Int ?? 0
                metrics = ((try? String(contentsOf: outURL.appendingPathComponent("metrics.jsonl"), encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
                if epochsDone >= epochs { return logger.info("the run in \(out) is complete (\(epochs) epochs); nothing to do") }
                logger.info("resuming after epoch \(epochsDone) of \(epochs)")
            }
            logger.info("\(train.count) training and \(heldOut.count) held-out pairs, \(steps) steps")
            let progress = ProgressBar(logger: logger)
            progress.begin(total: steps, done: epochsDone * stepsPerEpoch)
            var rng = SplitMix64(seed: seed)
            var step = 0
            for epoch in 0..<epochs {
                let order = train.indices.shuffled(using: &rng) // drawn for done epochs too, so a resumed run sees the same orders
                if epoch < epochsDone { step += stepsPerEpoch; continue }
                for b in stride(from: 0, to: order.count, by: batchSize) {
                    let r = try trainer.step(order[b ..< min(b + batchSize, order.count)].map { train[$0] }, microBatch: microBatchSize)
                    step += 1
                    metrics.append(MetricsLine.stamped(["step": step, "epoch": epoch + 1, "loss": r.loss.isFinite ? r.loss : "nan", "learning_rate": Double(r.learningRate)]))
                    progress.update(step: step, text: String(format: "loss %.4f", r.loss))
                }
                if !heldOut.isEmpty {
                    let e = try trainer.evaluate(heldOut)
                    metrics.append(MetricsLine.stamped(["step": step, "epoch": epoch + 1, "eval_loss": e.loss, "eval_accuracy": e.accuracy,
                                                "eval_calibration_error": e.calibrationError, "eval_pairs": e.pairs]))
                    progress.note(String(format: "epoch %d: held-out accuracy %.3f, loss %.4f, calibration error %.3f over %d pairs",
                                         epoch + 1, e.accuracy, e.loss, e.calibrationError, e.pairs))
                }
                // Each epoch ends in a checkpoint that is also the reward model so far.
                try Checkpoint.saveTraining(rm.model, trainer: trainer.trunk, extra: ["epochs_done": epoch + 1, "settings": settings],
                                            files: ["score_head.safetensors": try rm.headFile(), "head_optimizer.safetensors": try trainer.headOptimizerFile(),
                                                    "metrics.jsonl": Data((metrics.joined(separator: "\n") + "\n").utf8),
                                                    "\(TensorBoardEvents.folderName)/\(TensorBoardEvents.fileName)": TensorBoardEvents.contents(metrics)],
                                            base: modelOptions.model, to: outURL)
                if epoch + 1 == stopAfterEpochs { throw ExitCode(3) }
            }
            progress.finish()
            logger.info("saved \(out) (metrics in \(out)/metrics.jsonl)")
        }
    }

    struct Score: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Score prompt + response pairs: one JSON line with \"score\" per input line.")

        @Option(help: "A reward model folder from `charter rm train`.") var rm: String
        @Option(help: "JSONL: {\"prompt\", \"response\"} per line (strings or chat messages); other fields are kept.") var data: String
        @Option(help: "Write the scored lines here instead of standard output.") var out: String?

        func run() throws {
            guard FileManager.default.fileExists(atPath: (rm as NSString).appendingPathComponent("score_head.safetensors")) else {
                throw CLIError("\(rm) is not a reward model (no score_head.safetensors); make one with `charter rm train`")
            }
            let model = try RewardModel.load(rm)
            let lines = try JSONLines.read(data)
            let sequences = try lines.map { line, o -> [Int32] in
                func fail(_ s: String) -> DataError { JSONLines.error(data, line, s) }
                guard let prompt = o["prompt"], let response = o["response"] else { throw fail("needs \"prompt\" and \"response\"") }
                return try model.tokens(conversation: try PairFormat.prompt(prompt, fail), response: try PairFormat.answer(response, "response", fail))
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
