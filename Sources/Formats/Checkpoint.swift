import Engine
import Foundation
import Tokenizer

/// Model folders and training checkpoints on disk.
///
/// A model folder is what Hugging Face's `from_pretrained` reads: config.json,
/// generation_config.json, model.safetensors (float32, standard Llama names), tokenizer.json and
/// tokenizer_config.json. A training checkpoint adds optimizer.safetensors (AdamW's two moments,
/// flat, in the parameter layout) and trainer_state.json (step, schedule, settings, and the
/// caller's own state such as a data cursor). With LoRA, model.safetensors holds the merged weights
/// (so any tool loads the fine-tuned model) and adapter/ the adapters, as Hugging Face PEFT writes
/// them (`base` names the base model). They sit in a folder of their own because transformers,
/// finding adapter_config.json beside model.safetensors, would apply them to the merged weights
/// a second time. Resuming reloads
/// the unmerged base from where the run started. Folders are written beside their final name and
/// renamed into place, so a crash never leaves half a checkpoint under the final name; each holds
/// manifest.json (every file's size and CRC-32C), which a resumed run checks first.
public enum Checkpoint {
    public static func saveModel(_ model: LoadedModel, to folder: URL, as type: SafetensorsFile.StorageType = .f32) throws {
        try atomically(folder) { tmp in try writeModel(model, into: tmp, as: type) }
    }

    /// `files` are written beside the checkpoint (a metrics log, say), by name. `type`: how
    /// model.safetensors stores the weights; when it rounds them and the optimizer state is kept,
    /// the float32 weights a full fine-tune trains go into optimizer.safetensors too ("master"), so
    /// a resumed run continues from them exactly. Without `optimizerState` the folder is a model
    /// only, which cannot be resumed.
    public static func saveTraining(_ model: LoadedModel, trainer: Trainer, extra: [String: Any], files: [String: Data] = [:],
                                    as type: SafetensorsFile.StorageType = .f32, optimizerState: Bool = true, base: String = "",
                                    keepingOldAs old: URL? = nil, to folder: URL) throws {
        try atomically(folder, keepingOldAs: old) { tmp in
            if let lora = trainer.lora {
                try writeModel(LoadedModel(weights: lora.merged(with: model.weights), tokenizer: model.tokenizer, source: model.source, chatTemplate: model.chatTemplate), into: tmp, as: type)
                let adapter = tmp.appendingPathComponent("adapter")
                try FileManager.default.createDirectory(at: adapter, withIntermediateDirectories: true)
                try PEFTAdapters.write(lora, base: base, into: adapter)
            } else {
                try writeModel(model, into: tmp, as: type)
            }
            for (name, data) in files {
                let url = tmp.appendingPathComponent(name)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try data.write(to: url)
            }
            let adam = trainer.optimizer
            if optimizerState {
                var tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)] =
                    [("adam.m", [adam.m.count], UnsafeBufferPointer(adam.m)), ("adam.v", [adam.v.count], UnsafeBufferPointer(adam.v))]
                if type != .f32 && trainer.lora == nil { tensors.append(("master", [adam.m.count], UnsafeBufferPointer(trainer.weights.storage))) }
                try SafetensorsFile.encode(tensors).write(to: tmp.appendingPathComponent("optimizer.safetensors"))
            }
            let state: [String: Any] = [
                "optimizer_state": optimizerState,
                "step": adam.step, "parameters": adam.m.count,
                "schedule": try JSONSerialization.jsonObject(with: JSONEncoder().encode(trainer.schedule)),
                "adam": try JSONSerialization.jsonObject(with: JSONEncoder().encode(adam.settings)),
                "extra": extra,
                "lora": try trainer.lora.map { try JSONSerialization.jsonObject(with: JSONEncoder().encode($0.config)) } ?? NSNull(),
            ]
            try JSONSerialization.data(withJSONObject: state, options: [.prettyPrinted, .sortedKeys])
                .write(to: tmp.appendingPathComponent("trainer_state.json"))
        }
    }

    /// Restores the optimizer moments, the step and any adapters of a checkpoint into `trainer` (whose
    /// weights were loaded from the same folder, or for LoRA from the run's base model); returns the
    /// caller's `extra` state.
    public static func restoreTraining(_ trainer: Trainer, from folder: URL) throws -> [String: Any] {
        try CheckpointManifest.verify(folder)
        let stateURL = folder.appendingPathComponent("trainer_state.json")
        guard let data = try? Data(contentsOf: stateURL),
              let state = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let step = state["step"] as? Int, let count = state["parameters"] as? Int else {
            throw FormatError("\(stateURL.path): missing or not a trainer state (needs step and parameters)")
        }
        guard step >= 0 else { throw FormatError("\(stateURL.path): step \(step) is negative; the checkpoint is damaged") }
        guard count == trainer.optimizer.m.count else {
            throw FormatError("\(stateURL.path): saved for \(count) trained parameters, this run trains \(trainer.optimizer.m.count)")
        }
        if state["optimizer_state"] as? Bool == false {
            throw FormatError("\(folder.path) was saved without its optimizer state (--no-optimizer-state), so it cannot be resumed")
        }
        if let lora = trainer.lora {
            try PEFTAdapters.read(folder.appendingPathComponent("adapter"), into: lora)
        }
        let file = try SafetensorsFile(url: folder.appendingPathComponent("optimizer.safetensors"))
        for (name, buffer) in [("adam.m", trainer.optimizer.m), ("adam.v", trainer.optimizer.v)] {
            guard let t = file.tensors[name], t.count == buffer.count else {
                throw FormatError("optimizer.safetensors: \(name) is missing or has the wrong size")
            }
            file.read(t, into: buffer.baseAddress!)
        }
        if let master = file.tensors["master"] { // the float32 weights behind a rounded model.safetensors
            guard trainer.lora == nil, master.count == trainer.weights.storage.count else { throw FormatError("optimizer.safetensors: master has the wrong size") }
            file.read(master, into: trainer.weights.storage.baseAddress!)
        }
        trainer.optimizer.step = step
        return state["extra"] as? [String: Any] ?? [:]
    }

    static func writeModel(_ model: LoadedModel, into folder: URL, as type: SafetensorsFile.StorageType = .f32) throws {
        let t = model.tokenizer, c = model.config
        try HFModel.safetensors(model.weights, as: type).write(to: folder.appendingPathComponent("model.safetensors"))
        try HFModel.configJSON(c, bos: t.bos, eos: t.eos, dtype: type).write(to: folder.appendingPathComponent("config.json"))
        var generation: [String: Any] = ["_from_model_config": true]
        if let bos = t.bos { generation["bos_token_id"] = Int(bos) }
        if let eos = t.eos { generation["eos_token_id"] = Int(eos) }
        try JSONSerialization.data(withJSONObject: generation, options: [.prettyPrinted, .sortedKeys])
            .write(to: folder.appendingPathComponent("generation_config.json"))
        try HFTokenizer.tokenizerJSON(t).write(to: folder.appendingPathComponent("tokenizer.json"))
        try HFTokenizer.configJSON(t, contextLength: c.contextLength, chatTemplate: model.chatTemplate)
            .write(to: folder.appendingPathComponent("tokenizer_config.json"))
    }

    /// Writes a folder beside its final name and renames it into place; what was there before is
    /// removed, or renamed to `keepingOldAs`.
    public static func atomically(_ folder: URL, keepingOldAs kept: URL? = nil, _ write: (URL) throws -> Void) throws {
        let fm = FileManager.default
        let tmp = folder.deletingLastPathComponent().appendingPathComponent(".\(folder.lastPathComponent).partial-\(getpid())")
        try? fm.removeItem(at: tmp)
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        do { try write(tmp); try CheckpointManifest.write(in: tmp) } catch { try? fm.removeItem(at: tmp); throw error }
        if fm.fileExists(atPath: folder.path) {
            let old = folder.deletingLastPathComponent().appendingPathComponent(".\(folder.lastPathComponent).old-\(getpid())")
            try fm.moveItem(at: folder, to: old)
            try fm.moveItem(at: tmp, to: folder)
            if let kept { try? fm.removeItem(at: kept); try fm.moveItem(at: old, to: kept) } else { try? fm.removeItem(at: old) }
        } else {
            try fm.moveItem(at: tmp, to: folder)
        }
    }
}

/// Loads a model from a GGUF file or a Hugging Face folder, whichever `path` is, or makes the small
/// random model a "tiny:..." spec names (see `TinyModel`).
public enum ModelLoader {
    /// Fails as `load` would when nothing is at `path`, without reading it: a cheap check before a
    /// command writes anything.
    public static func checkExists(_ path: String) throws {
        let path = try DefaultModel.locate(path)
        if !TinyModel.isSpec(path) && !FileManager.default.fileExists(atPath: path) { throw FormatError("model \(path) not found") }
    }

    public static func load(_ path: String) throws -> LoadedModel {
        if TinyModel.isSpec(path) { return try TinyModel.make(spec: path) }
        let path = try DefaultModel.locate(path)
        try checkExists(path)
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        let url = URL(fileURLWithPath: path)
        let model = isDirectory.boolValue ? try loadFolder(url) : try GGUFModel.load(url)
        // Token ids index the embedding: a tokenizer with more tokens than it has rows would read past it.
        guard model.tokenizer.vocabSize <= model.config.vocab else {
            throw FormatError("model \(path): the tokenizer has \(model.tokenizer.vocabSize) tokens, the embedding only \(model.config.vocab) rows")
        }
        return model
    }

    static func loadFolder(_ url: URL) throws -> LoadedModel {
        var template: String? = nil
        if let c = try? Data(contentsOf: url.appendingPathComponent("tokenizer_config.json")),
           let config = (try? JSONSerialization.jsonObject(with: c)) as? [String: Any] {
            template = config["chat_template"] as? String
        }
        return LoadedModel(weights: try HFModel.loadWeights(url), tokenizer: try HFTokenizer.load(url), source: url, chatTemplate: template)
    }
}
