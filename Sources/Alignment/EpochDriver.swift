import Engine
import Formats
import Foundation
import Logging

/// Epochs of steps over a fixed data set, as `EpochDriver` runs them: SFT and DPO.
public protocol EpochRun: AnyObject {
    var trainer: Trainer { get }
    var stepsPerEpoch: Int { get }
    var totalSteps: Int { get }
    /// Batches trained on so far (a skipped step counts: a bad batch is passed over, not retried).
    var batchesDone: Int { get set }
    /// Trains on the next batch: its report, the figures for its metrics line, a progress text.
    func trainStep() throws -> (report: StepReport, figures: [String: Any], text: String)
    /// The held-out figures at an epoch's end and a line to show; nil without a held-out set.
    func evaluate() throws -> (figures: [String: Any], text: String)?
}

/// Where a training run writes and how: `charter sft`'s and `charter dpo`'s options, or a stage
/// of a longer recipe.
public struct TrainingJob: Sendable {
    /// The output folder: a model folder plus optimizer state, written after each epoch.
    public var out: String
    /// The model the run starts from (a path or a tiny: spec), recorded in the checkpoint.
    public var baseModel: String
    /// The data file, recorded in the checkpoint.
    public var data: String
    /// The settings a resumed run must share with the run it continues (JSON), and the options
    /// that set them, for the error that says so.
    public var settings: Data = Data("{}".utf8)
    public var settingsOptions = ""
    public var lora: LoRAConfig?
    /// How model.safetensors stores the weights (training stays float32).
    public var storage: SafetensorsFile.StorageType = .f32
    /// Without it the run is a final export that cannot be resumed.
    public var optimizerState = true
    /// Epoch checkpoints to keep: `out` holds the newest, OUT-epoch-K the K-th before it.
    public var keep = 1
    /// Seeds the adapters' initialisation.
    public var seed: UInt64 = 0

    public init(out: String, baseModel: String, data: String) { self.out = out; self.baseModel = baseModel; self.data = data }

    /// Where epoch `k`'s checkpoint is kept once a newer one holds `out`.
    public func epochFolder(_ k: Int) -> URL {
        let url = URL(fileURLWithPath: out).standardized
        return url.deletingLastPathComponent().appendingPathComponent("\(url.lastPathComponent)-epoch-\(k)")
    }
}

/// A training run from its job to its output folder: claims the folder, loads the model, builds
/// the run, resumes from the checkpoint in the folder, and trains, writing a metrics.jsonl line
/// per step and a checkpoint (with the held-out figures) per epoch.
public final class EpochDriver {
    public let job: TrainingJob
    public let run: EpochRun
    let model: LoadedModel
    let logger: Logger
    /// metrics.jsonl so far (kept whole: it is written into every checkpoint).
    var metrics: [String] = []
    /// The folder held a finished run.
    public private(set) var complete = false

    /// `load` opens the base model (the CLI finds the default model first); `makeRun` builds the
    /// run on the loaded model and the job's adapters, if any.
    public init(job: TrainingJob, start: RunStart, logger: Logger, load: (String) throws -> LoadedModel,
                makeRun: (LoadedModel, LoRAAdapters?) throws -> EpochRun) throws {
        if job.keep < 1 { throw DataError("keep must be at least 1, found \(job.keep)") }
        try start.claim(job.out)
        // A run folder that is empty or missing has nothing to resume: the run starts.
        let resume = start == .resume && !((try? FileManager.default.contentsOfDirectory(atPath: job.out)) ?? []).isEmpty
        if resume { try CheckpointManifest.verify(URL(fileURLWithPath: job.out)) }
        // A LoRA checkpoint holds merged weights; its run resumes from the base model it started from.
        let model = resume && job.lora == nil ? try ModelLoader.load(job.out) : try load(job.baseModel)
        let adapters = try job.lora.map { try LoRAAdapters(config: $0, model: model.config) }
        adapters?.initialize(seed: SplitMix64.derive(job.seed, 0x107A))
        run = try makeRun(model, adapters)
        if start == .overwrite { // the epochs an earlier run kept beside `out` belong to it
            for k in 1...max(run.totalSteps / max(run.stepsPerEpoch, 1), 1) { try? FileManager.default.removeItem(at: job.epochFolder(k)) }
        }
        self.job = job; self.model = model; self.logger = logger
        if resume { try restore() }
    }

    func restore() throws {
        let out = URL(fileURLWithPath: job.out)
        let extra = try Checkpoint.restoreTraining(run.trainer, from: out)
        run.batchesDone = extra["batches_done"] as? Int ?? run.trainer.optimizer.step
        if let saved = extra["settings"], let mine = try? JSONSerialization.jsonObject(with: job.settings),
           !NSDictionary(dictionary: saved as? [String: Any] ?? [:]).isEqual(to: mine as? [String: Any] ?? [:]) {
            throw DataError("--resume: the options differ from the run in \(job.out); use the same \(job.settingsOptions)")
        }
        if job.lora != nil, let base = extra["base_model"] as? String, base != job.baseModel {
            throw DataError("--resume: this LoRA run started from --model \(base)")
        }
        // Only now: a run with other options has another number of steps.
        guard (0...run.totalSteps).contains(run.batchesDone) else {
            throw DataError("\(out.path)/trainer_state.json: batches_done \(run.batchesDone) is outside 0...\(run.totalSteps); the checkpoint is damaged")
        }
        metrics = (try? String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8))?
            .split(separator: "\n").map(String.init) ?? []
        complete = run.batchesDone >= run.totalSteps
    }

    /// Trains the steps left, or those before `stopAt` (a test's interruption).
    public func execute(progress: RunProgress? = nil, stopAt: Int? = nil) throws {
        if complete {
            logger.info("the run in \(job.out) is complete (\(run.totalSteps) steps); nothing to do")
            return
        }
        progress?.begin(total: run.totalSteps, done: run.batchesDone)
        while run.batchesDone < min(run.totalSteps, stopAt ?? .max) {
            let started = ContinuousClock.now
            let (r, figures, text) = try run.trainStep()
            let seconds = (ContinuousClock.now - started).seconds
            if r.skipped && run.trainer.optimizer.skippedSteps == 1 {
                logger.warning("batch \(run.batchesDone) gave a non-finite gradient norm; its step was skipped (grad_norm in metrics.jsonl shows each)")
            }
            metrics.append(MetricsLine.stamped(figures.merging(["step": run.batchesDone, "grad_norm": r.gradNorm.isFinite ? Double(r.gradNorm) : "nan",
                                                                "skipped": r.skipped, "learning_rate": Double(r.learningRate),
                                                                "tokens": r.tokens, "seconds": seconds]) { a, _ in a }))
            let done = run.batchesDone
            progress?.update(step: done, text: text + String(format: "  %.0f tok/s", Double(r.tokens) / seconds))
            if done % run.stepsPerEpoch == 0 || done == run.totalSteps {
                let epoch = (done + run.stepsPerEpoch - 1) / run.stepsPerEpoch
                if let (figures, text) = try run.evaluate() {
                    metrics.append(MetricsLine.stamped(figures.merging(["step": done, "epoch": epoch]) { a, _ in a }))
                    progress?.note("epoch \(epoch): \(text)")
                }
                try checkpoint(epoch)
            }
        }
        progress?.finish()
        if run.batchesDone == run.totalSteps { logger.info("saved \(job.out)") }
    }

    func checkpoint(_ epoch: Int) throws {
        // The epoch now in `out` moves aside when kept; the oldest kept ones beyond `keep` go.
        let previous = epoch - 1
        let kept = job.keep > 1 && previous >= 1 ? job.epochFolder(previous) : nil
        try Checkpoint.saveTraining(model, trainer: run.trainer,
                                    extra: ["settings": try JSONSerialization.jsonObject(with: job.settings), "data": job.data, "epoch": epoch,
                                            "base_model": job.baseModel, "batches_done": run.batchesDone],
                                    files: ["metrics.jsonl": Data((metrics.joined(separator: "\n") + "\n").utf8),
                                            "\(TensorBoardEvents.folderName)/\(TensorBoardEvents.fileName)": TensorBoardEvents.contents(metrics)],
                                    as: job.storage, optimizerState: job.optimizerState, base: job.baseModel,
                                    keepingOldAs: kept, to: URL(fileURLWithPath: job.out))
        if previous - (job.keep - 1) >= 1 { try? FileManager.default.removeItem(at: job.epochFolder(previous - (job.keep - 1))) }
    }
}

/// A metrics line of a training run (`sft`, `dpo`, `rm train`), stamped with the time (UTC) it was written.
public enum MetricsLine {
    public static func stamped(_ object: [String: Any]) -> String {
        let stamped = object.merging(["time": ISO8601DateFormatter().string(from: Date())]) { a, _ in a }
        return String(decoding: try! JSONSerialization.data(withJSONObject: stamped, options: [.sortedKeys]), as: UTF8.self)
    }
}
