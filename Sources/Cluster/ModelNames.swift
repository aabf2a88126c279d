import Alignment
import Engine

/// The models of a run that have versions (PROTOCOL.md, "Model versions"). Version 0 of each is
/// what the configuration names, which every process loads; later versions travel as chunks.
public enum ModelName {
    public static let policy = "policy", reference = "reference", feedback = "feedback"
    public static let helpful = "reward.helpful", safety = "reward.safety"
    public static let all = [policy, reference, feedback, helpful, safety]
}

extension RewardModel {
    /// The buffers a version of a reward model replaces: the trunk's weights, then the head's.
    public var versionedBuffers: [UnsafeMutableBufferPointer<Float>] { [weights.storage, head.storage] }
}
