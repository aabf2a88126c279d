import Alignment
import ArgumentParser
import Engine
import Formats
import Foundation
import Logging

struct DPOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dpo", abstract: "Direct preference optimisation on preference pairs, soft labels included (an alternative to reward models + PPO).")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "JSONL: {\"prompt\", \"chosen\", \"rejected\", \"p_chosen\"?} per line; prompt and answers may be chat messages (TRL's layouts).") var pairs: String
    @Option(help: "Output folder: a Hugging Face model folder plus optimizer state, written after each epoch.") var out: String
    @Option(help: "The frozen model the policy is measured against (default: --model as it starts).") var reference: String?
    @Option(help: "The leash to the reference: smaller lets the policy move further.") var beta: Float = 0.1
    @Option(help: "Conservative DPO: the share of labels assumed flipped (0 to below 0.5).") var labelSmoothing: Float = 0
    @Option(help: "Passes over the training pairs.") var epochs = 1
    @Option(help: "Peak learning rate (warm-up, then cosine decay to a tenth).") var lr: Float = 5e-6
    @Option(help: "Pairs per optimizer step.") var batchSize = 8
    @Option(help: "Pairs per forward/backward pass; gradients accumulate up to --batch-size.") var microBatchSize: Int?
    @Option(help: "Longest sequence (prompt and answer) in tokens; longer ones are cut at the end.") var maxLen = 512
    @Option(help: "Share of pairs held out for loss, accuracy and margin, evaluated after every epoch.") var evalFraction = 0.1
    @Option(help: "Seed for the held-out split and the order of pairs.") var seed: UInt64 = 0
    @OptionGroup var loraOptions: LoRAOptions
    @Flag(help: "Continue the run whose checkpoint is in --out.") var resume = false
    @Flag(help: "Empty --out if it already holds a run, and start again.") var overwrite = false
    @Option(help: "Epoch checkpoints to keep: --out holds the newest, OUT-epoch-K the K-th before it.") var keep = 1
    @Option(help: .hidden) var stopAfterEpochs: Int? // tests: end as if killed after this epoch's checkpoint
    @OptionGroup var logging: LogOptions

    func validate() throws {
        if maxLen < 2 { throw ValidationError("--max-len must be at least 2, found \(maxLen)") }
        if !(0..<1).contains(evalFraction) { throw ValidationError("--eval-fraction must be in [0, 1), found \(evalFraction)") }
        if keep < 1 { throw ValidationError("--keep must be at least 1, found \(keep)") }
        if let m = microBatchSize, !(1...batchSize).contains(m) { throw ValidationError("--micro-batch-size must be in 1...--batch-size, found \(m)") }
    }

    func run() throws {
        logging.bootstrap()
        var settings = DPOSettings()
        settings.beta = beta; settings.labelSmoothing = labelSmoothing; settings.epochs = epochs; settings.learningRate = lr
        settings.batchSize = batchSize; settings.microBatchSize = microBatchSize ?? batchSize; settings.seed = seed
        try settings.validate() // before the folder is claimed (or, with --overwrite, emptied)
        var job = TrainingJob(out: out, baseModel: modelOptions.model, data: pairs)
        job.settings = try JSONEncoder().encode(settings)
        job.settingsOptions = "--beta, --label-smoothing, --epochs, --lr, --batch-size, --micro-batch-size and --seed"
        job.lora = try loraOptions.config()
        job.keep = keep; job.seed = seed
        let logger = Logger(label: "dpo")
        let driver = try EpochDriver(job: job, start: try RunStart(resume: resume, overwrite: overwrite), logger: logger,
                                     load: { _ in try modelOptions.load() }) { model, adapters in
            let loaded = try DPOPair.load(URL(fileURLWithPath: pairs), tokenizer: model.tokenizer, maxLength: min(maxLen, model.config.contextLength))
            if !loaded.truncatedAway.isEmpty {
                logger.warning("skipped \(loaded.truncatedAway.count) pairs with an answer cut away by --max-len (lines \(loaded.truncatedAway.prefix(10).map(String.init).joined(separator: ", ")))")
            }
            let (train, heldOut) = SFTRun.split(loaded.pairs, heldOutFraction: evalFraction, seed: seed)
            // A resumed full fine-tune loads its weights from --out: the reference is then --model as given.
            let ref = try reference.map { try ModelLoader.load($0).weights }
                ?? (resume && adapters == nil ? try modelOptions.load().weights : nil)
            logger.info("\(train.count) training and \(heldOut.count) held-out pairs, scoring them under the reference, \(Kernel.withBLAS)")
            return try DPORun(policy: model.weights, lora: adapters, reference: ref, train: train, heldOut: heldOut, settings: settings)
        }
        try driver.execute(progress: ProgressBar(logger: logger), stopAt: stopAfterEpochs.map { $0 * driver.run.stepsPerEpoch })
    }
}
