import Engine
import Formats
import Foundation
import Logging

/// What an SFT run is asked to do: `charter sft`'s options, or a stage of a longer recipe.
public struct SFTJob: Sendable {
    /// Chat JSONL to train on.
    public var data: String
    /// The output folder: a model folder plus optimizer state, written after each epoch.
    public var out: String
    /// The model the run starts from (a path or a tiny: spec), recorded in the checkpoint.
    public var baseModel: String
    public var settings = SFTSettings()
    public var lora: LoRAConfig?
    /// Longest sequence in tokens; longer conversations are cut at the end.
    public var maxLength = 512
    public var heldOutFraction = 0.05
    /// How model.safetensors stores the weights (training stays float32).
    public var storage: SafetensorsFile.StorageType = .f32
    /// Without it the run is a final export that cannot be resumed.
    public var optimizerState = true
    /// Epoch checkpoints to keep: `out` holds the newest, OUT-epoch-K the K-th before it.
    public var keep = 1

    public init(data: String, out: String, baseModel: String) { self.data = data; self.out = out; self.baseModel = baseModel }

    /// Where epoch `k`'s checkpoint is kept once a newer one holds `out`.
    public func epochFolder(_ k: Int) -> URL {
        let url = URL(fileURLWithPath: out).standardized
        return url.deletingLastPathComponent().appendingPathComponent("\(url.lastPathComponent)-epoch-\(k)")
    }
}

/// An SFT run from its job to its output folder: claims the folder, loads model and data, resumes
/// from the checkpoint in it, and trains, writing metrics.jsonl lines and a checkpoint per epoch.
public final class SFTDriver {
    public let job: SFTJob
    public let run: SFTRun
    let model: LoadedModel
    let logger: Logger
    /// metrics.jsonl so far (kept whole: it is written into every checkpoint).
    var metrics: [String] = []
    /// True when the folder held a finished run.
    public private(set) var complete = false

    /// `load` opens the base model (the CLI finds the default model first).
    public init(job: SFTJob, start: RunStart, logger: Logger, load: (String) throws -> LoadedModel) throws {
        try job.settings.validate()
        if job.keep < 1 { throw DataError("keep must be at least 1, found \(job.keep)") }
        try start.claim(job.out)
        if start == .overwrite { // the epochs an earlier run kept beside `out` belong to it
            for k in 1...max(job.settings.epochs, 1) { try? FileManager.default.removeItem(at: job.epochFolder(k)) }
        }
        // A run folder that is empty or missing has nothing to resume: the run starts.
        let resume = start == .resume && !((try? FileManager.default.contentsOfDirectory(atPath: job.out)) ?? []).isEmpty
        // A LoRA checkpoint holds merged weights; its run resumes from the base model it started from.
        let model = resume && job.lora == nil ? try ModelLoader.load(job.out) : try load(job.baseModel)
        let adapters = job.lora.map { LoRAAdapters(config: $0, model: model.config) }
        adapters?.initialize(seed: SplitMix64.derive(job.settings.seed, 0x107A))
        let loaded = try ChatData.load(URL(fileURLWithPath: job.data), tokenizer: model.tokenizer,
                                       maxLength: min(job.maxLength, model.config.contextLength))
        if !loaded.truncatedAway.isEmpty {
            logger.warning("skipped \(loaded.truncatedAway.count) conversations with no assistant token within \(job.maxLength) tokens (lines \(loaded.truncatedAway.prefix(10).map(String.init).joined(separator: ", ")))")
        }
        let (train, heldOut) = SFTRun.split(loaded.examples.map(\.sequence), heldOutFraction: job.heldOutFraction, seed: job.settings.seed)
        run = try SFTRun(weights: model.weights, lora: adapters, train: train, heldOut: heldOut, settings: job.settings)
        self.job = job; self.model = model; self.logger = logger
        if resume { try restore() }
        logger.info("\(train.count) training and \(heldOut.count) held-out conversations, \(run.totalSteps) steps, \(BLAS.summary)")
    }

    func restore() throws {
        let out = URL(fileURLWithPath: job.out)
        let extra = try Checkpoint.restoreTraining(run.trainer, from: out)
        run.batchesDone = extra["batches_done"] as? Int ?? run.trainer.optimizer.step
        if let saved = extra["settings"] as? [String: Any],
           let savedSettings = try? JSONDecoder().decode(SFTSettings.self, from: JSONSerialization.data(withJSONObject: saved)),
           savedSettings != job.settings {
            throw DataError("--resume: the options differ from the run in \(job.out); use the same --epochs, --lr, --batch-size, --micro-batch-size, --weight-decay and --seed")
        }
        if job.lora != nil, let base = extra["base_model"] as? String, base != job.baseModel {
            throw DataError("--resume: this LoRA run started from --model \(base)")
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
            let r = try run.step()
            let seconds = (ContinuousClock.now - started).seconds
            if r.skipped && run.trainer.optimizer.skippedSteps == 1 {
                logger.warning("batch \(run.batchesDone) gave a non-finite gradient norm; its step was skipped (grad_norm in metrics.jsonl shows each)")
            }
            metrics.append(MetricsLine.stamped(["step": run.batchesDone, "loss": r.loss.isFinite ? r.loss : "nan",
                                                "grad_norm": r.gradNorm.isFinite ? Double(r.gradNorm) : "nan", "skipped": r.skipped,
                                                "learning_rate": Double(r.learningRate), "tokens": r.tokens, "seconds": seconds]))
            let done = run.batchesDone
            progress?.update(step: done, text: String(format: "loss %.4f  %.0f tok/s", r.loss, Double(r.tokens) / seconds))
            if done % run.stepsPerEpoch == 0 || done == run.totalSteps {
                let epoch = (done + run.stepsPerEpoch - 1) / run.stepsPerEpoch
                if let eval = try run.heldOutLoss() {
                    metrics.append(MetricsLine.stamped(["step": done, "epoch": epoch, "eval_loss": eval]))
                    progress?.note(String(format: "epoch %d: held-out loss %.4f", epoch, eval))
                }
                try checkpoint(epoch)
            }
        }
        progress?.finish()
        if run.batchesDone == run.totalSteps { logger.info("saved \(job.out)") }
    }

    func checkpoint(_ epoch: Int) throws {
        let settingsJSON = try JSONSerialization.jsonObject(with: JSONEncoder().encode(job.settings))
        // The epoch now in `out` moves aside when kept; the oldest kept ones beyond `keep` go.
        let previous = epoch - 1
        let kept = job.keep > 1 && previous >= 1 ? job.epochFolder(previous) : nil
        try Checkpoint.saveTraining(model, trainer: run.trainer, extra: ["settings": settingsJSON, "data": job.data, "epoch": epoch,
                                                                        "base_model": job.baseModel, "batches_done": run.batchesDone],
                                    files: ["metrics.jsonl": Data((metrics.joined(separator: "\n") + "\n").utf8)],
                                    as: job.storage, optimizerState: job.optimizerState, base: job.baseModel,
                                    keepingOldAs: kept, to: URL(fileURLWithPath: job.out))
        if previous - (job.keep - 1) >= 1 { try? FileManager.default.removeItem(at: job.epochFolder(previous - (job.keep - 1))) }
    }
}

/// A metrics line of a training run (`sft`, `rm train`), stamped with the time (UTC) it was written.
public enum MetricsLine {
    public static func stamped(_ object: [String: Any]) -> String {
        let stamped = object.merging(["time": ISO8601DateFormatter().string(from: Date())]) { a, _ in a }
        return String(decoding: try! JSONSerialization.data(withJSONObject: stamped, options: [.sortedKeys]), as: UTF8.self)
    }
}
