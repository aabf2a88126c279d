import Alignment
import Cluster
import Engine
import Formats
import Foundation

/// `--model NAME=FOLDER`: a stage computed with another version of one of the run's models than
/// the configuration names (a reward model just trained, say). In process the folder is loaded
/// instead; on the cluster the coordinator publishes it as that model's version 1, which reaches
/// every worker through the chunk broadcast (workers never read the folder).
struct ModelOverride {
    static let names = [ModelName.policy, ModelName.feedback, ModelName.helpful, ModelName.safety]
    let name: String, folder: String

    init(_ text: String) throws {
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[1].isEmpty else { throw CLIError("--model \(text): expected NAME=FOLDER") }
        guard Self.names.contains(parts[0]) else {
            throw CLIError("--model \(text): \(parts[0]) is not a model a stage can replace (\(Self.names.joined(separator: ", ")))")
        }
        name = parts[0]; folder = parts[1]
    }

    /// The configuration's path for this model; throws when a worker would have nothing to start from.
    func configured(_ c: RLConfig) throws -> String? {
        switch name {
        case ModelName.policy:
            if c.lora != nil { throw CLIError("--model policy: the configuration trains LoRA adapters, so workers take adapters, not a whole policy") }
            return c.policy
        case ModelName.feedback: return c.feedback // nil: the base policy judges
        case ModelName.helpful:
            guard let path = c.helpfulnessModel else { throw CLIError("--model \(name): the configuration names no helpfulness reward model (reward section) for workers to start from") }
            return path
        default:
            guard let path = c.safetyModel else { throw CLIError("--model \(name): the configuration names no safety reward model (reward section) for workers to start from") }
            return path
        }
    }

    /// The configuration with this model's path replaced: what an in-process stage loads.
    func apply(to c: inout RLConfig) throws {
        _ = try configured(c)
        switch name {
        case ModelName.policy: c.policy = folder
        case ModelName.feedback: c.feedback = folder
        case ModelName.helpful: c.helpfulnessModel = folder
        default: c.safetyModel = folder
        }
    }

    /// The folder's model, checked to have the shape of the configuration's (whose bytes each
    /// worker replaces with these): its buffers, and the object that owns them.
    func load(against c: RLConfig) throws -> (buffers: [UnsafeMutableBufferPointer<Float>], owner: AnyObject) {
        let original = try configured(c) ?? c.policy
        let (buffers, owner): ([UnsafeMutableBufferPointer<Float>], AnyObject)
        let expected: [Int]
        if name == ModelName.helpful || name == ModelName.safety {
            let rm = try RewardModel.load(folder)
            (buffers, owner) = (rm.versionedBuffers, rm)
            expected = try RewardModel.load(original).versionedBuffers.map(\.count)
        } else {
            let weights = try ModelLoader.load(folder).weights
            (buffers, owner) = ([weights.storage], weights)
            expected = [try ModelLoader.load(original).weights.storage.count]
        }
        guard buffers.map(\.count) == expected else {
            throw CLIError("--model \(name)=\(folder): its parameters (\(buffers.map(\.count))) do not match the configuration's \(name) \(original) (\(expected)); workers could not take it")
        }
        return (buffers, owner)
    }
}
