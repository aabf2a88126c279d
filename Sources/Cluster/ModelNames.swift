import Alignment
import Engine
import Foundation

/// The models of a run that have versions (PROTOCOL.md, "Model versions"). Version 0 of each is
/// what the configuration names, which every process loads; later versions travel as chunks.
public enum ModelName {
    public static let policy = "policy", reference = "reference", feedback = "feedback"
    public static let helpful = "reward.helpful", safety = "reward.safety"
    /// PPO's value head on the policy trunk: with it, workers score their samples' values.
    public static let valueHead = "policy.value_head"
    public static let all = [policy, reference, feedback, helpful, safety, valueHead]
}

extension RewardModel {
    /// The buffers a version of a reward model replaces: the trunk's weights, then the head's.
    public var versionedBuffers: [UnsafeMutableBufferPointer<Float>] { [weights.storage, head.storage] }
}

/// A model version's bytes are its buffers laid end to end (a reward model: trunk, then head).
extension Array where Element == UnsafeMutableBufferPointer<Float> {
    var byteCount: Int { reduce(0) { $0 + $1.count * MemoryLayout<Float>.stride } }

    /// Copies every buffer, in order, to the front of `destination` (the coordinator publishing).
    func gather(into destination: UnsafeMutableRawBufferPointer) {
        var offset = 0
        for b in self {
            let raw = UnsafeRawBufferPointer(b)
            UnsafeMutableRawBufferPointer(rebasing: destination[offset ..< offset + raw.count]).copyMemory(from: raw)
            offset += raw.count
        }
    }

    /// Fills the buffers, in order, from `source` (a worker switching to a version).
    func scatter(from source: UnsafeRawBufferPointer) {
        var offset = 0
        for b in self {
            let raw = UnsafeMutableRawBufferPointer(b)
            raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[offset ..< offset + raw.count]))
            offset += raw.count
        }
    }

    /// The bytes `range` of the buffers end to end (a worker serving a chunk it no longer has assembled).
    func bytes(in range: Range<Int>) -> Data {
        var out = Data(capacity: range.count), start = 0
        for b in self {
            let raw = UnsafeRawBufferPointer(b), end = start + raw.count
            let lo = Swift.max(range.lowerBound, start), hi = Swift.min(range.upperBound, end)
            if lo < hi { out.append(contentsOf: raw[(lo - start) ..< (hi - start)]) }
            start = end
        }
        return out
    }
}
