/// Keys and values of one sequence for every layer, so decode steps only compute the new token.
public final class SequenceCache: @unchecked Sendable {
    public let capacity: Int        // most positions this sequence may hold
    public internal(set) var length = 0
    let layers: Int, kvHeads: Int, headDim: Int
    let storage: UnsafeMutableBufferPointer<Float> // (L, 2, K, capacity, D)

    public init(config: ModelConfig, capacity: Int) {
        self.capacity = capacity
        layers = config.layers; kvHeads = config.kvHeads; headDim = config.headDim
        storage = .allocate(capacity: layers * 2 * kvHeads * capacity * headDim)
    }

    deinit { storage.deallocate() }

    /// Keys of one layer and key/value head: (capacity, D).
    @inline(__always) func keys(layer: Int, head: Int) -> UnsafeMutablePointer<Float> {
        storage.baseAddress! + ((layer * 2) * kvHeads + head) * capacity * headDim
    }

    /// Values of one layer and key/value head: (capacity, D).
    @inline(__always) func values(layer: Int, head: Int) -> UnsafeMutablePointer<Float> {
        storage.baseAddress! + ((layer * 2 + 1) * kvHeads + head) * capacity * headDim
    }

    /// Forget everything: the buffer is reused for a new sequence.
    public func reset() { length = 0 }

    public var bytes: Int { storage.count * MemoryLayout<Float>.size }
}
