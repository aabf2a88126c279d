import Engine
import Foundation
import Formats

/// The state of an RL run at an iteration boundary, so a resumed run continues exactly where the
/// uninterrupted one would have been: every trained buffer with its AdamW moments and step (policy
/// or its LoRA adapters, critic trunk, value head), the KL controller, the learner's shuffling RNG,
/// the iteration, policy version and data cursor. Sample seeds derive from (run seed, iteration,
/// prompt, index), so nothing about generation needs saving. A folder of two files, written
/// atomically: state.safetensors (the buffers) and state.json (the rest, and the configuration
/// text the run was started with; resuming under a different configuration is refused).
public enum RLCheckpoint {
    struct State: Codable {
        var iteration: Int, policyVersion: Int, cursor: Int
        var beta: Float?
        var rng: UInt64
        var steps: [String: Int]
        var configuration: String
    }

    public static func exists(in folder: URL) -> Bool {
        FileManager.default.fileExists(atPath: folder.appendingPathComponent("state.json").path)
    }

    public static func save(_ run: RLRun, configuration: String, to folder: URL) throws {
        let buffers = trainedBuffers(run.learner)
        let state = State(iteration: run.iteration, policyVersion: run.policyVersion, cursor: run.cursor,
                          beta: run.learner.state.beta, rng: run.learner.state.rng,
                          steps: Dictionary(uniqueKeysWithValues: run.learner.trained.map { ($0.name, $0.optimizer.step) }),
                          configuration: configuration)
        try Checkpoint.atomically(folder) { tmp in
            try SafetensorsFile.encode(buffers.map { ($0.name, [$0.values.count], UnsafeBufferPointer($0.values)) })
                .write(to: tmp.appendingPathComponent("state.safetensors"))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(state).write(to: tmp.appendingPathComponent("state.json"))
        }
    }

    /// Puts the saved state into a run built from the same configuration.
    /// `iterations`: the run's length, which the checkpoint's iteration may not exceed.
    public static func restore(_ run: RLRun, configuration: String, iterations: Int, from folder: URL) throws {
        try CheckpointManifest.verify(folder)
        let stateURL = folder.appendingPathComponent("state.json")
        let state: State
        do { state = try JSONDecoder().decode(State.self, from: Data(contentsOf: stateURL)) } catch {
            throw DataError("\(stateURL.path): not a readable run checkpoint (\(error.localizedDescription))")
        }
        guard state.configuration == configuration else {
            throw DataError("\(stateURL.path): the checkpoint was made with a different configuration; resume with the same file (it is saved in the run folder as config.yaml)")
        }
        // Numbers a damaged or hand-edited file could hold that the run cannot continue from.
        for (name, value, top) in [("iteration", state.iteration, iterations), ("policyVersion", state.policyVersion, Int.max), ("cursor", state.cursor, Int.max)]
            where !(0...top).contains(value) {
            throw DataError("\(stateURL.path): \(name) \(value) is outside 0...\(top == Int.max ? "" : String(top)); the checkpoint is damaged")
        }
        if let beta = state.beta, !(beta.isFinite && beta >= 0) { throw DataError("\(stateURL.path): beta \(beta) is not a number >= 0; the checkpoint is damaged") }
        if let (name, step) = state.steps.first(where: { $0.value < 0 }) { throw DataError("\(stateURL.path): step \(step) of \(name) is negative; the checkpoint is damaged") }
        let file = try SafetensorsFile(url: folder.appendingPathComponent("state.safetensors"))
        for (name, values) in trainedBuffers(run.learner) {
            guard let t = file.tensors[name], t.count == values.count else {
                throw DataError("\(folder.path)/state.safetensors: \(name) is missing or has the wrong size")
            }
            file.read(t, into: values.baseAddress!)
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw DataError("\(folder.path)/state.safetensors: \(name)[\(bad)] is \(values[bad]); the checkpoint is damaged")
            }
        }
        for t in run.learner.trained {
            guard let step = state.steps[t.name] else { throw DataError("\(stateURL.path): no optimizer step for \(t.name)") }
            t.optimizer.step = step
        }
        run.learner.restore(LearnerState(beta: state.beta, rng: state.rng))
        run.iteration = state.iteration
        run.policyVersion = state.policyVersion
        run.cursor = state.cursor
    }

    /// The learner's parameters and their AdamW moments, by name.
    static func trainedBuffers(_ learner: RLLearner) -> [(name: String, values: UnsafeMutableBufferPointer<Float>)] {
        learner.trained.flatMap { t in [(t.name, t.values), ("\(t.name).adam.m", t.optimizer.m), ("\(t.name).adam.v", t.optimizer.v)] }
    }
}
