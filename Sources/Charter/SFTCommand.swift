import Alignment
import ArgumentParser
import Engine
import Formats
import Foundation
import Logging

struct SFTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sft", abstract: "Supervised fine-tuning on chat-format JSONL (loss on assistant tokens only).")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Chat JSONL: one {\"messages\": [{\"role\", \"content\"}, ...]} per line.") var data: String
    @Option(help: "Output folder: a Hugging Face model folder plus optimizer state, written after each epoch.") var out: String
    @Option(help: "Passes over the training set.") var epochs = 1
    @Option(help: "Peak learning rate (warm-up, then cosine decay to a tenth).") var lr: Float = 1e-4
    @Option(help: "Sequences per optimizer step.") var batchSize = 8
    @Option(help: "Sequences per forward/backward pass; gradients accumulate up to --batch-size.") var microBatchSize: Int?
    @Option(help: "Longest sequence in tokens; longer conversations are cut at the end.") var maxLen = 512
    @Option(help: "Share of examples held out for the eval loss.") var evalFraction = 0.05
    @Option(help: "Decoupled weight decay on the matrices.") var weightDecay: Float = 0
    @Option(help: "Seed for the held-out split and the order of examples.") var seed: UInt64 = 0
    @OptionGroup var loraOptions: LoRAOptions
    @Flag(help: "Continue the run whose checkpoint is in --out.") var resume = false
    @Flag(help: "Empty --out if it already holds a run, and start again.") var overwrite = false
    @Option(help: "How model.safetensors stores the weights: f32, bf16 or f16 (half the bytes; training stays float32).")
    var saveDtype: SaveDType = .f32
    @Flag(help: "Leave the optimizer state out of --out (a final export; the run cannot be resumed).") var noOptimizerState = false
    @Option(help: "Epoch checkpoints to keep: --out holds the newest, OUT-epoch-K the K-th before it.") var keep = 1
    @OptionGroup var logging: LogOptions

    enum SaveDType: String, ExpressibleByArgument, CaseIterable {
        case f32, bf16, f16
        var storage: SafetensorsFile.StorageType { [.f32: .f32, .bf16: .bf16, .f16: .f16][self]! }
    }

    func validate() throws {
        if maxLen < 2 { throw ValidationError("--max-len must be at least 2, found \(maxLen)") }
        if !(0..<1).contains(evalFraction) { throw ValidationError("--eval-fraction must be in [0, 1), found \(evalFraction)") }
        if keep < 1 { throw ValidationError("--keep must be at least 1, found \(keep)") }
    }

    func run() throws {
        logging.bootstrap()
        let logger = Logger(label: "sft")
        try RunStart(resume: resume, overwrite: overwrite).claim(out)
        if overwrite { // the epochs an earlier run kept beside --out belong to it
            for k in 1...max(epochs, 1) { try? FileManager.default.removeItem(at: Self.epochFolder(out, k)) }
        }
        let outURL = URL(fileURLWithPath: out)
        let lora = try loraOptions.config()
        // A LoRA checkpoint holds merged weights; its run resumes from the base model it started from.
        let model = resume && lora == nil ? try ModelLoader.load(out) : try modelOptions.load()
        let adapters = lora.map { LoRAAdapters(config: $0, model: model.config) }
        adapters?.initialize(seed: SplitMix64.derive(seed, 0x107A))
        var settings = SFTSettings()
        settings.epochs = epochs; settings.learningRate = lr; settings.batchSize = batchSize
        settings.microBatchSize = microBatchSize ?? batchSize; settings.weightDecay = weightDecay; settings.seed = seed

        let loaded = try ChatData.load(URL(fileURLWithPath: data), tokenizer: model.tokenizer, maxLength: min(maxLen, model.config.contextLength))
        if !loaded.truncatedAway.isEmpty {
            logger.warning("skipped \(loaded.truncatedAway.count) conversations with no assistant token within --max-len (lines \(loaded.truncatedAway.prefix(10).map(String.init).joined(separator: ", ")))")
        }
        let (train, heldOut) = SFTRun.split(loaded.examples.map(\.sequence), heldOutFraction: evalFraction, seed: seed)
        let run = try SFTRun(weights: model.weights, lora: adapters, train: train, heldOut: heldOut, settings: settings)
        var metrics: [String] = []
        if resume {
            let extra = try Checkpoint.restoreTraining(run.trainer, from: outURL)
            run.batchesDone = extra["batches_done"] as? Int ?? run.trainer.optimizer.step
            if let saved = extra["settings"] as? [String: Any], let savedSettings = try? JSONDecoder().decode(SFTSettings.self, from: JSONSerialization.data(withJSONObject: saved)),
               savedSettings != settings {
                throw CLIError("--resume: the options differ from the run in \(out); use the same --epochs, --lr, --batch-size, --micro-batch-size, --weight-decay and --seed")
            }
            if lora != nil, let base = extra["base_model"] as? String, base != modelOptions.model {
                throw CLIError("--resume: this LoRA run started from --model \(base)")
            }
            metrics = (try? String(contentsOf: outURL.appendingPathComponent("metrics.jsonl"), encoding: .utf8))?
                .split(separator: "\n").map(String.init) ?? []
            if run.batchesDone >= run.totalSteps {
                logger.info("the run in \(out) is complete (\(run.totalSteps) steps); nothing to do")
                return
            }
        }
        logger.info("\(train.count) training and \(heldOut.count) held-out conversations, \(run.totalSteps) steps, \(BLAS.summary)")
        let progress = ProgressBar(total: run.totalSteps, start: run.batchesDone, logger: logger)

        func checkpoint(_ epoch: Int) throws {
            let settingsJSON = try JSONSerialization.jsonObject(with: JSONEncoder().encode(settings))
            // The epoch now in --out moves aside when kept; the oldest kept ones beyond --keep go.
            let previous = epoch - 1
            let kept = keep > 1 && previous >= 1 ? Self.epochFolder(out, previous) : nil
            try Checkpoint.saveTraining(model, trainer: run.trainer, extra: ["settings": settingsJSON, "data": data, "epoch": epoch,
                                                                            "base_model": modelOptions.model, "batches_done": run.batchesDone],
                                        files: ["metrics.jsonl": Data((metrics.joined(separator: "\n") + "\n").utf8)],
                                        as: saveDtype.storage, optimizerState: !noOptimizerState, base: modelOptions.model,
                                        keepingOldAs: kept, to: outURL)
            if previous - (keep - 1) >= 1 { try? FileManager.default.removeItem(at: Self.epochFolder(out, previous - (keep - 1))) }
        }
        while run.batchesDone < run.totalSteps {
            let started = ContinuousClock.now
            let r = try run.step()
            let seconds = (ContinuousClock.now - started).seconds
            if r.skipped && run.trainer.optimizer.skippedSteps == 1 {
                logger.warning("batch \(run.batchesDone) gave a non-finite gradient norm; its step was skipped (grad_norm in metrics.jsonl shows each)")
            }
            metrics.append(Self.metricsLine(["step": run.batchesDone, "loss": r.loss.isFinite ? r.loss : "nan",
                                     "grad_norm": r.gradNorm.isFinite ? Double(r.gradNorm) : "nan", "skipped": r.skipped, "learning_rate": Double(r.learningRate),
                                     "tokens": r.tokens, "seconds": seconds]))
            let done = run.batchesDone
            progress.update(step: done, text: String(format: "loss %.4f  %.0f tok/s", r.loss, Double(r.tokens) / seconds))
            if done % run.stepsPerEpoch == 0 || done == run.totalSteps {
                let epoch = (done + run.stepsPerEpoch - 1) / run.stepsPerEpoch
                if let eval = try run.heldOutLoss() {
                    metrics.append(Self.metricsLine(["step": done, "epoch": epoch, "eval_loss": eval]))
                    progress.note(String(format: "epoch %d: held-out loss %.4f", epoch, eval))
                }
                try checkpoint(epoch)
            }
        }
        progress.finish()
        logger.info("saved \(out)")
    }

    /// Where epoch `k`'s checkpoint is kept once a newer one holds --out.
    static func epochFolder(_ out: String, _ k: Int) -> URL {
        let url = URL(fileURLWithPath: out).standardized
        return url.deletingLastPathComponent().appendingPathComponent("\(url.lastPathComponent)-epoch-\(k)")
    }

    /// A metrics line of a training run (`sft`, `rm train`), stamped with the time (UTC) it was written.
    static func metricsLine(_ object: [String: Any]) -> String {
        let stamped = object.merging(["time": ISO8601DateFormatter().string(from: Date())]) { a, _ in a }
        return String(decoding: try! JSONSerialization.data(withJSONObject: stamped, options: [.sortedKeys]), as: UTF8.self)
    }
}

/// A one-line progress bar on stderr: bar, step, the caller's text, and time left. Without a
/// terminal it prints a line per 5% instead, through `logger` when given (a run's log file).
final class ProgressBar {
    let total: Int, start: Int
    let began = ContinuousClock.now
    let isTerminal = isatty(2) != 0
    let logger: Logger?
    var lastPrinted = -1
    /// The first update: the rate is measured from there on, so the wait before the first step
    /// (models loading, workers joining) does not stretch the estimate.
    var first: (step: Int, at: ContinuousClock.Instant)?

    init(total: Int, start: Int, logger: Logger? = nil) { self.total = total; self.start = start; self.logger = logger }

    func update(step: Int, text: String) {
        let now = ContinuousClock.now
        let since = first ?? (start, began)
        if first == nil { first = (step, now) }
        let rate = Double(step - since.step) / max((now - since.at).seconds, 1e-9)
        let left = rate > 0 ? Double(total - step) / rate : 0
        let width = 24, filled = total > 0 ? width * step / total : width
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = "[\(bar)] \(step)/\(total)  \(text)  ETA \(Self.duration(left))"
        if isTerminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
        } else if step == total || step - lastPrinted >= max(1, total / 20) {
            if let logger { logger.info("\(line)") } else { FileHandle.standardError.write(Data("\(line)\n".utf8)) }
            lastPrinted = step
        }
    }

    /// A line between updates (an epoch's evaluation, say), through the logger when there is one.
    func note(_ text: String) {
        if isTerminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        if let logger { logger.info("\(text)") } else { FileHandle.standardError.write(Data((text + "\n").utf8)) }
    }

    func finish() { if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) } }

    static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? "\(t / 3600)h\(t % 3600 / 60)m" : t >= 60 ? "\(t / 60)m\(t % 60)s" : "\(t)s"
    }
}
