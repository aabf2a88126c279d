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
        var settings = SFTSettings()
        settings.epochs = epochs; settings.learningRate = lr; settings.batchSize = batchSize
        settings.microBatchSize = microBatchSize ?? batchSize; settings.weightDecay = weightDecay; settings.seed = seed
        try settings.validate() // before the folder is claimed (or, with --overwrite, emptied)
        var job = TrainingJob(out: out, baseModel: modelOptions.model, data: data)
        job.settings = try JSONEncoder().encode(settings)
        job.settingsOptions = "--epochs, --lr, --batch-size, --micro-batch-size, --weight-decay and --seed"
        job.lora = try loraOptions.config()
        job.storage = saveDtype.storage; job.optimizerState = !noOptimizerState; job.keep = keep; job.seed = seed
        let logger = Logger(label: "sft")
        let driver = try EpochDriver(job: job, start: try RunStart(resume: resume, overwrite: overwrite), logger: logger,
                                     load: { _ in try modelOptions.load() }) { model, adapters in
            let loaded = try ChatData.load(URL(fileURLWithPath: data), tokenizer: model.tokenizer, maxLength: min(maxLen, model.config.contextLength))
            if !loaded.truncatedAway.isEmpty {
                logger.warning("skipped \(loaded.truncatedAway.count) conversations with no assistant token within --max-len (lines \(loaded.truncatedAway.prefix(10).map(String.init).joined(separator: ", ")))")
            }
            let (train, heldOut) = SFTRun.split(loaded.examples.map(\.sequence), heldOutFraction: evalFraction, seed: seed)
            logger.info("\(train.count) training and \(heldOut.count) held-out conversations, \(Kernel.withBLAS)")
            return try SFTRun(weights: model.weights, lora: adapters, train: train, heldOut: heldOut, settings: settings)
        }
        try driver.execute(progress: ProgressBar(logger: logger))
    }
}

/// A one-line progress bar on stderr: bar, step, the caller's text, and time left. Without a
/// terminal it prints a line per 5% instead, through `logger` when given (a run's log file).
final class ProgressBar: RunProgress {
    var total = 0, start = 0
    var began = ContinuousClock.now
    let isTerminal = isatty(2) != 0
    let logger: Logger?
    var lastPrinted = -1
    /// The first update: the rate is measured from there on, so the wait before the first step
    /// (models loading, workers joining) does not stretch the estimate.
    var first: (step: Int, at: ContinuousClock.Instant)?

    init(logger: Logger? = nil) { self.logger = logger }

    func begin(total: Int, done: Int) { self.total = total; start = done; began = .now }

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
